"""Configuration: frozen dataclasses, validated in one place.

Every knob of the product lives in one of six sections - ``model``,
``detector``, ``track`` (IDs and steadiness on video), ``app``, ``serve`` (the
browser view) and ``archive`` (the index and search commands) - each a frozen
dataclass.  Each field carries its
help text and its allowed values in ``metadata``; ``_validate`` reads them, so
a bad value from a YAML file, from the command line or from Python code fails
the same way: one :class:`ConfigError` line that names the key and says what
is allowed.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

DEFAULT_MODEL = "openai/clip-vit-base-patch32"

# What a region may be instead of the user's prompt, in the absence gate: a
# region is only claimed by a prompt that beats all of these.  Scene words
# absorb empty regions; the few generic kinds ("an object", "an animal", "a
# person") absorb things nobody asked for, so a prompt must name the thing
# more specifically than they do.  None is tied to a checkpoint or a dataset.
DEFAULT_BACKGROUND_PROMPTS = (
    "background",
    "a plain background",
    "a textured surface",
    "an empty scene",
    "a blurry photo",
    "a wall",
    "the floor",
    "an object",
    "an animal",
    "a person",
)

METHODS = ("windows", "dense", "occlusion", "classify")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


def _opt(default: Any, help: str, *, lo: float | None = None, hi: float | None = None,
         choices: tuple | None = None, nonempty: bool = False, auto: bool = False) -> Any:
    """A dataclass field with its help text and allowed range attached.

    `auto` lets the field also hold the string "auto": a value derived at run
    time (from the frame or the model) rather than a fixed number.
    """
    meta = {"help": help, "lo": lo, "hi": hi, "choices": choices, "nonempty": nonempty,
            "auto": auto}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    name: str = _opt(DEFAULT_MODEL, "Hugging Face model id or a local directory holding a "
                     "saved CLIPModel and its processor", nonempty=True)
    device: str = _opt("auto", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps",
                       nonempty=True)
    dtype: str = _opt("auto", "auto (bf16/fp16 on CUDA; on a CPU bf16 if it has "
                      "AVX512-BF16 or AMX, else fp32), float32, float16 or bfloat16",
                      choices=("auto", "float32", "float16", "bfloat16"))
    max_batch: int = _opt(0, "most images encoded in one batch; 0 = all windows of a frame "
                          "in one batch", lo=0)
    cuda_graphs: bool = _opt(True, "replay the vision tower from a CUDA graph for fixed "
                             "batch shapes (CUDA only)")
    memory_budget_mb: int | str = _opt("auto", "most memory one frame's work may take "
                                       "(batches are split to fit; a layout that cannot fit "
                                       "is refused); auto = a quarter of the device's memory "
                                       "(RAM on a CPU)", lo=16, auto=True)

    def __post_init__(self) -> None:
        _validate(self, "model")


@dataclass(frozen=True)
class DetectorConfig:
    method: str = _opt("windows", "how score maps are made: windows (sliding windows, "
                       "accurate), dense (one pass, patch tokens, fastest), occlusion "
                       "(masking), classify (whole-frame ranking, no boxes)", choices=METHODS)
    tile_px: int | str = _opt("auto", "tile size in source pixels; auto = derived from the "
                              "frame so that its short side holds `tiles_per_side` tiles",
                              lo=4, hi=4096, auto=True)
    tiles_per_side: int = _opt(6, "tiles along the frame's short side when tile_px is 0",
                               lo=1, hi=64)
    window_tiles: int = _opt(3, "window size in tiles (a window is k x k tiles)", lo=1, hi=64)
    stride_tiles: int = _opt(1, "window stride in tiles", lo=1, hi=64)
    threshold: float = _opt(0.5, "cut on the normalised score map (the walkthrough's 0.5)",
                            lo=0.0, hi=1.0)
    gate: float = _opt(0.5, "least probability, against the other prompts and the "
                       "background prompts, for a region to be reported", lo=0.0, hi=1.0)
    min_area_tiles: int = _opt(1, "regions smaller than this many tiles are dropped", lo=1)
    merge_iou: float = _opt(0.5, "boxes of one prompt overlapping more than this are merged",
                            lo=0.0, hi=1.0)
    score_mode: str = _opt("probability", "what `score` holds: probability (the gate's "
                           "probability) or linear (similarity mapped linearly through "
                           "similarity_range)", choices=("probability", "linear"))
    similarity_range: tuple[float, ...] = _opt((0.15, 0.40), "cosine similarities mapped to "
                                               "0 and 1 when score_mode is linear")
    templates: tuple[str, ...] = _opt(("{}",), "prompt templates averaged per prompt, each "
                                      "with one {} (e.g. 'a photo of {}.')", nonempty=True)
    background_prompts: tuple[str, ...] = _opt(DEFAULT_BACKGROUND_PROMPTS, "prompts that "
                                               "stand for 'nothing of interest' in the gate")
    dense_input_px: int | str = _opt("auto", "dense/occlusion: short side of the model input "
                                     "in pixels; auto = the model's own input size", lo=16,
                                     hi=4096, auto=True)
    dense_variant: str = _opt("sclip", "dense: the training-free last block that makes "
                              "patch tokens local: maskclip (value path), clearclip (q-q "
                              "attention, no residual/MLP), sclip (q-q + k-k attention), naclip "
                              "(k-k attention + Gaussian neighbourhood); see docs/method.md (the refine pass "
                              "always uses maskclip)",
                              choices=("maskclip", "clearclip", "sclip", "naclip"))
    refine: bool | str = _opt("auto", "windows: outline each window region with a dense "
                              "patch map (one extra pass at refine_input_px), so a box fits "
                              "the object rather than the window; auto = only if the box "
                              "check at load finds the patch map's boxes the best on "
                              "generated scenes (docs/method.md), else fit_mode's way",
                              auto=True)
    refine_input_px: int | str = _opt("auto", "windows with refine: short side of the patch "
                                      "map's input in pixels; auto = twice the model's input "
                                      "size", lo=16, hi=4096, auto=True)
    verify: bool | str = _opt("auto", "classify a square crop around each candidate box and "
                              "keep it only if its own prompt passes the gate there (one extra "
                              "batch of crops); auto = on for every method with boxes", auto=True)
    fit: bool | str = _opt("auto", "windows: where the patch map does not outline boxes "
                           "(refine off, or auto and the box check at load finds another way "
                           "better), find each region's box again the fit_mode way; dense: "
                           "cut each patch-map box out of the frame again by segmentation "
                           "(fit_mode auto or segment); off: the windows' or the patch map's "
                           "own boxes; auto = on for windows and dense", auto=True)
    fit_mode: str = _opt("auto", "fit: how a region's box is found again; segment = cut "
                         "out of the frame's pixels around the region (GrabCut, no crops; the "
                         "verify stage then gates each part); crops = one crop hidden from each "
                         "side in turn for the centre, concentric crops for the size (22 per "
                         "candidate); zoom = the walkthrough's windows at half the window size "
                         "and a sixth of its stride, only around each candidate (about 53 crops "
                         "per candidate); auto = the best of the three on this model, measured "
                         "with the patch map by the box check at load (docs/method.md)",
                         choices=("auto", "segment", "crops", "zoom"))
    verify_margin: float = _opt(0.1, "verify: context added around a box on each side, as a "
                                "share of its long side", lo=0.0, hi=1.0)
    verify_context: float | str = _opt("auto", "verify: a second crop per box with this share "
                                       "of its long side added on each side; the box must "
                                       "pass the gate on both (background that looks like "
                                       "the prompt up close rarely does in context); 0 = its "
                                       "own crop only; auto = 0.5 for windows fitted by crops or "
                                       "outlined, 0 for segmentation, the zoom, dense and occlusion "
                                       "(docs/method.md)", lo=0.0, hi=2.0,
                                       auto=True)
    occlusion_cells: int = _opt(5, "occlusion: masking cells along the frame's short side",
                                lo=2, hi=32)

    @property
    def fits(self) -> bool:
        """Whether window regions get their boxes again (segmented or fitted by crops)."""
        return self.method == "windows" and self.fit in ("auto", True)

    @property
    def segments_dense(self) -> bool:
        """Whether dense's patch-map boxes are cut out again by segmentation."""
        return (self.method == "dense" and self.fit in ("auto", True)
                and self.fit_mode in ("auto", "segment"))

    @property
    def context_margin(self) -> float:
        """verify_context with auto resolved for the method."""
        if self.verify_context == "auto":
            return 0.5 if self.method == "windows" else 0.0
        return float(self.verify_context)

    @property
    def verifies(self) -> bool:
        """Whether boxes are verified: `verify`, with auto resolved for the method."""
        return self.method != "classify" and self.verify in ("auto", True)

    def __post_init__(self) -> None:
        _validate(self, "detector")
        if len(self.similarity_range) != 2 or not (
                self.similarity_range[0] < self.similarity_range[1]):
            raise ConfigError("detector.similarity_range: must be two numbers [low, high] with "
                              f"low < high (got {list(self.similarity_range)})")
        for template in self.templates:
            if template.count("{}") != 1:
                raise ConfigError("detector.templates: each template must contain exactly one "
                                  f"'{{}}' (got {template!r})")


@dataclass(frozen=True)
class TrackConfig:
    """Tracking between the detector and the outputs (realtime.track; docs/method.md).

    Common trackers' names for the same ideas: min_hits is supervision/ByteTrack's
    minimum_consecutive_frames, hold_s is lost_track_buffer (in seconds, not frames),
    keep_score is ByteTrack's low-score threshold (the detector's gate starts tracks).
    """

    enabled: bool | str = _opt("auto", "give boxes stable IDs, show an object only after "
                               "min_hits frames, keep it through short misses, smooth boxes "
                               "and scores, move boxes between inference frames; auto = on "
                               "for video, streams, cameras and the demo, off for images and "
                               "folders of images", auto=True)
    min_hits: int = _opt(2, "inference frames in a row a new object must be detected on "
                         "before it is shown (minimum_consecutive_frames)", lo=1, hi=30)
    hold_s: float = _opt(0.3, "seconds a shown object stays shown (coasting along its "
                         "velocity) while the detector misses it (lost_track_buffer)",
                         lo=0.0, hi=10.0)
    keep_score: float = _opt(0.5, "least score that keeps an existing track alive; starting "
                             "one needs detector.gate; lower than the gate, the detector reports "
                             "boxes down to it while tracking (ByteTrack's low-score "
                             "association)", lo=0.0, hi=1.0)
    smoothing: float = _opt(0.7, "box and score smoothing: 0 = the newest box, towards 1 "
                            "steadier but slower to follow changes of size", lo=0.0, hi=0.95)
    match_iou: float = _opt(0.1, "least IoU between a track's predicted box and a box of the "
                            "same prompt for them to be the same object", lo=0.01, hi=1.0)
    gate_sizes: float = _opt(1.0, "a box of the same prompt that overlaps no track is still a "
                             "track's object when its centre is within this many object sizes "
                             "(mean side) of the track's predicted centre, plus a share of the "
                             "distance the track's velocity moved it (docs/method.md)",
                             lo=0.0, hi=10.0)
    gate_sizes_per_s: float = _opt(10.0, "and, for a track matched once (no velocity yet), this "
                                   "many more object sizes per second since then: how fast a new "
                                   "object may move and still be followed from its second frame",
                                   lo=0.0, hi=100.0)

    def __post_init__(self) -> None:
        _validate(self, "track")

    def active(self, source_kind: str) -> bool:
        """Whether tracking runs on a source of this kind (camera, stream, video, ...)."""
        if self.enabled == "auto":
            return source_kind not in ("image", "folder")
        return bool(self.enabled)


@dataclass(frozen=True)
class AppConfig:
    source: str = _opt("0", "webcam index, video/image/folder path, or stream URL")
    prompts: tuple[str, ...] = _opt((), "texts to look for")
    headless: bool = _opt(False, "no window (for servers and batch jobs)")
    output: str = _opt("", "annotated video to write: .mp4 (or .mov, .m4v), .mkv, or .avi "
                       "(MJPG: what reached the disk still plays after a crash, SIGKILL or "
                       "power cut); empty = none")
    detections: str = _opt("", "JSON Lines file, one line per processed frame; empty = none")
    max_frames: int = _opt(0, "stop after this many frames; 0 = no limit", lo=0)
    realtime: bool = _opt(False, "play a file at its own frame rate, dropping inference frames "
                          "like a camera")
    fullscreen: bool = _opt(False, "fullscreen window (kiosks)")
    heatmap: bool = _opt(False, "start with the score-map overlay on")
    hud: bool = _opt(True, "draw the fps / latency / device line")
    max_reconnects: int = _opt(0, "live sources: give up after this many reopen attempts in "
                               "a row (a reopen counts as failed unless the source then stays "
                               "up for 5 s); 0 = keep trying", lo=0)
    reconnect_delay_max_s: float = _opt(4.0, "live sources: longest wait between two reopen "
                                        "attempts (waits double from 0.25 s up to this)",
                                        lo=0.0, hi=60.0)
    prompts_file: str = _opt("", "file with one prompt a line (# starts a comment); its "
                             "prompts are added to the others")
    demo: bool = _opt(False, "play the generated moving-shapes scene instead of a source, with "
                      "models/shapes-clip and the scene's captions unless a model or prompts "
                      "are given")
    snapshot_dir: str = _opt(".", "where the s key writes PNG snapshots")

    def __post_init__(self) -> None:
        _validate(self, "app")


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


def parse_address(text: str) -> tuple[str, int]:
    """"8080", "0.0.0.0:8080", "[::1]:8080" -> (host, port); host 127.0.0.1 when not given."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""   # a bare IPv6 address must be written in brackets
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"serve.address: must be [HOST:]PORT with PORT 0..65535 (0: any "
                          f"free port), an IPv6 HOST in brackets (got {text!r})")
    return host, int(port)


@dataclass(frozen=True)
class ServeConfig:
    address: str = _opt("", "[HOST:]PORT of the browser view (live stream, prompts, REST); "
                        "empty = off; HOST defaults to 127.0.0.1, any other needs a token")
    token: str = _opt("", "token the browser view requires; empty = none on a loopback "
                      "address, one generated and printed for any other")
    allowed_hosts: tuple[str, ...] = _opt((), "names the browser view answers to besides its "
                                          "address, localhost and loopback (e.g. kiosk.local): "
                                          "the Host check against DNS rebinding")
    max_viewers: int = _opt(8, "most MJPEG streams (and most websockets) at once; more get "
                            "503", lo=1, hi=256)
    max_fps: float = _opt(15.0, "most frames per second a stream sends (a viewer may ask for "
                          "fewer with ?fps=)", lo=0.5, hi=60.0)
    jpeg_quality: int = _opt(80, "JPEG quality of the stream and snapshots", lo=10, hi=100)

    def __post_init__(self) -> None:
        _validate(self, "serve")
        if self.address:
            parse_address(self.address)
        if self.token and (len(self.token) < 8 or not self.token.isascii()
                           or not self.token.isprintable() or " " in self.token):
            raise ConfigError("serve.token: must be at least 8 printable ASCII characters "
                              "without spaces")

    @property
    def host(self) -> str:
        return parse_address(self.address)[0]

    @property
    def port(self) -> int:
        return parse_address(self.address)[1]

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS or self.host.startswith("127.")


@dataclass(frozen=True)
class ArchiveConfig:
    """`main.py index` and `main.py search` (see docs/archive.md)."""

    sample_fps: float = _opt(2.0, "frames indexed per second of video (every frame when the "
                             "video has fewer)", lo=0.001, hi=1000.0)
    chunk_s: float = _opt(600.0, "seconds of video per unit of work (one Parquet file, one "
                          "manifest row, one retry)", lo=1.0)
    max_attempts: int = _opt(3, "tries per chunk before it is recorded as an error", lo=1,
                             hi=100)
    ray: str = _opt("", "empty = in this process; local = start a Ray on this machine; auto "
                    "or ADDRESS = join a Ray cluster")
    workers: int = _opt(0, "Ray: model-holding actors; 0 = one per GPU, or one per "
                        "worker_cpus CPUs on a CPU cluster", lo=0)
    worker_cpus: int = _opt(1, "Ray: CPUs (torch threads) per actor on a CPU cluster", lo=1)
    top: int = _opt(20, "segments kept per prompt, best first; 0 = all", lo=0)
    max_gap_s: float = _opt(0.0, "matching samples at most this far apart form one segment; "
                            "0 = consecutive samples only", lo=0.0)
    confirm: bool = _opt(True, "keep a segment only when the detector finds its prompt at the "
                         "segment's best frame (methods with boxes)")

    def __post_init__(self) -> None:
        _validate(self, "archive")


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    app: AppConfig = field(default_factory=AppConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)


SECTIONS: dict[str, type] = {"model": ModelConfig, "detector": DetectorConfig,
                             "track": TrackConfig, "app": AppConfig,
                             "serve": ServeConfig, "archive": ArchiveConfig}


def _validate(obj: Any, section: str) -> None:
    """Check every field of `obj` against its type and metadata; coerce lists to tuples."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        key = f"{section}.{f.name}"
        value, hint = getattr(obj, f.name), hints[f.name]
        if f.metadata.get("auto"):
            if value == "auto":
                continue
            # the other alternative of an `int | str` or `bool | str` auto field
            hint = next(arg for arg in typing.get_args(hint) if arg is not str)
        value = _coerce(key, value, hint)
        _check_range(key, value, f.metadata)
        object.__setattr__(obj, f.name, value)


def _coerce(key: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is tuple:
        (item_type, _) = typing.get_args(hint)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: must be a list of {item_type.__name__} (got {value!r})")
        return tuple(_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            alternatives = ", false or auto" if _or_auto(key) else " or false"
            raise ConfigError(f"{key}: must be true{alternatives} (got {value!r})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer{_or_auto(key)} (got {value!r})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{key}: must be a number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string (got {value!r})")
        return value
    raise TypeError(f"{key}: unsupported field type {hint!r}")  # a programming error


def _or_auto(key: str) -> str:
    section, _, name = key.partition(".")
    fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])} if section in SECTIONS else {}
    return " or auto" if name in fields and fields[name].metadata.get("auto") else ""


def _check_range(key: str, value: Any, meta: Mapping[str, Any]) -> None:
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)} (got {value!r})")
    if meta.get("nonempty") and len(value) == 0:
        raise ConfigError(f"{key}: must not be empty")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        allowed = (f"{lo}..{hi}" if lo is not None and hi is not None
                   else f">= {lo}" if lo is not None else f"<= {hi}")
        raise ConfigError(f"{key}: must be {allowed} (got {value!r})")


def _section_from_dict(name: str, values: Mapping[str, Any], base: Any) -> Any:
    known = {f.name for f in dataclasses.fields(base)}
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            hint = f"; did you mean {name}.{close[0]}?" if close else ""
            raise ConfigError(f"{name}.{key}: unknown key (allowed: {', '.join(sorted(known))})"
                              f"{hint}")
    return dataclasses.replace(base, **dict(values))


def config_from_dict(data: Mapping[str, Any], base: Config | None = None) -> Config:
    """Build a validated :class:`Config` from nested mappings (YAML, CLI overrides)."""
    base = base or Config()
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: must be a mapping of sections {', '.join(SECTIONS)} "
                          f"(got {type(data).__name__})")
    sections = {}
    for name, values in data.items():
        if name not in SECTIONS:
            raise ConfigError(f"{name}: unknown section (allowed: {', '.join(SECTIONS)})")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{name}: must be a mapping of keys (got {values!r})")
        sections[name] = _section_from_dict(name, values, getattr(base, name))
    return dataclasses.replace(base, **sections)


def load_config(path: str | Path, base: Config | None = None) -> Config:
    """Read a YAML preset into a validated :class:`Config`."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--config {path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"--config {path}: not a UTF-8 text file (byte {exc.start} is "
                          f"0x{exc.object[exc.start]:02x}); a preset is YAML text") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{line}") from None
    return config_from_dict(data, base)


def field_range(cls: type, name: str) -> tuple[Any, Any]:
    """(lo, hi) allowed for a field (None where unbounded), for checks outside the config."""
    meta = next(f.metadata for f in dataclasses.fields(cls) if f.name == name)
    return meta.get("lo"), meta.get("hi")


def field_help(section: str, name: str) -> str:
    """The help text attached to a field, for --help."""
    for f in dataclasses.fields(SECTIONS[section]):
        if f.name == name:
            return f.metadata["help"]
    raise KeyError(f"{section}.{name}")

