"""How window regions get their boxes on this model: measured once, when it loads.

A window region says that a prompt is in a part of the frame, not how far it
extends; four ways find its box.  The refine pass outlines it with the
model's patch map: tight boxes on a model whose patch tokens localise (the
bundled shapes model was trained for it), wrong ones on a model whose do not
(public CLIPs were trained on whole images only).  Segmentation
(realtime.engine.segment) cuts the box out of the frame's pixels and needs
nothing of the model; the crop fit and the zoom (realtime.engine.fit) need
nothing of the patch tokens, and which of them fits better differs between
models too.  Which way a model should use is not
guessed from its name or its patch size but measured: a few generated scenes
of coloured shapes with known boxes (realtime.scenes, fixed seed) are run
through the detector's own settings each way, with their captions and one
absent caption (another shape of a present colour), and the way whose boxes
score the best panoptic quality is used: the IoU summed over boxes matched
one to one to a true object of their prompt at IoU > 0.5, divided by
matched + (false boxes + missed objects) / 2 (Kirillov et al.'s PQ, the
usual single figure for "right, not missed, nothing false").  A tie goes to
the earlier of PREFERENCE (segmentation: the cheapest, and blind to the
patch tokens).  The rule has no constant to tune.

The verdict is kept per loaded model and settings, and on disk (a JSON file
per model files, settings and device) where the front ends ask for it: on a
2-core CPU a random ViT-B/32 took 14 s for the patch map and the crop fit
(more for a model that finds the scenes' shapes and fits them, and the zoom
adds its crops), so only a model's first run pays.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import functools
import hashlib
import json
import os
from pathlib import Path
import weakref

import numpy as np

from .boxes import iou_matrix

PATCH_MAP, SEGMENT, CROPS, ZOOM = "patch map", "segment", "crops", "zoom"
PREFERENCE = (SEGMENT, CROPS, ZOOM, PATCH_MAP)     # a tie goes to the earlier (cheaper) way
# Changing what the check measures makes old cached verdicts stale.
CHECK_VERSION = 4
SHAPES_PER_SCENE = (1, 2, 3, 2, 2, 3)
CHECK_SCENES = len(SHAPES_PER_SCENE)   # enough: the kinds differ by 0.2-0.4 IoU (docs/method.md)
SCENE_W, SCENE_H, SCENE_SEED = 640, 480, 1234

_memo: "weakref.WeakKeyDictionary[object, dict[str, BoxCheck]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class BoxCheck:
    """Each way's panoptic quality against the generated scenes' truth."""

    quality: tuple[tuple[str, float], ...]     # (way, panoptic quality), in the order measured
    scenes: int
    cached: bool = False

    @property
    def choice(self) -> str:
        """The way window regions get their boxes: the best, ties by PREFERENCE."""
        return max(self.quality, key=lambda item: (item[1], -PREFERENCE.index(item[0])))[0]

    def of(self, way: str) -> float:
        return dict(self.quality)[way]

    def line(self) -> str:
        way = {PATCH_MAP: "outlined by the patch map", SEGMENT: "cut out by segmentation",
               CROPS: "fitted by crops", ZOOM: "fitted by the zoom"}[self.choice]
        figures = ", ".join(f"{name} {value:.2f}" for name, value in self.quality)
        where = ", cached" if self.cached else ""
        return (f"box check: boxes {way} (panoptic quality on {self.scenes} generated scenes: "
                f"{figures}{where})")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/realtime-clip/box-check (~/.cache when unset)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "realtime-clip" / "box-check"


def check_boxes(detector, ways: tuple[str, ...], cache_dir: Path | None = None) -> BoxCheck:
    """The detector's verdict among `ways`: from this process's memo, the cache dir,
    or measured."""
    key = cache_key(detector.model, detector.config)
    memo = _memo.setdefault(detector.model, {})
    if key in memo:
        return memo[key]
    found = _read(cache_dir, key) if cache_dir is not None else None
    if found is None or [w for w, _ in found.quality] != list(ways):
        found = measure(detector, ways)
        if cache_dir is not None:
            _write(cache_dir, key, found)
    memo[key] = found
    return found


def measure(detector, ways: tuple[str, ...]) -> BoxCheck:
    """Run the check scenes through `detector` each way (Detector.use_way).  It
    leaves the last scene's prompts set and the way as it was."""
    tallies = {way: np.zeros(4) for way in ways}    # IoU sum, matched, false, missed
    saved = detector.way
    try:
        for scene, prompts in zip(check_scenes(), check_prompts()):
            detector.set_prompts(prompts)
            for way in ways:
                detector.use_way(way)
                tallies[way] += match(detector(scene.frame), scene.boxes, scene.labels)
    finally:
        detector.use_way(saved)
    return BoxCheck(tuple((way, round(panoptic_quality(t), 4)) for way, t in tallies.items()),
                    len(check_scenes()))


def match(found, boxes: np.ndarray, labels) -> np.ndarray:
    """(IoU sum, matched, false boxes, missed objects): per prompt, boxes matched
    one to one to true objects at IoU > 0.5, best pairs first."""
    out = np.zeros(4)
    for label in set(labels) | {found.labels[i] for i in found.label_ids}:
        truth = np.array([b for b, l in zip(boxes, labels) if l == label], float).reshape(-1, 4)
        mine = found.for_label(label).boxes.astype(float)
        ious = (iou_matrix(truth, mine) if len(truth) and len(mine)
                else np.zeros((len(truth), len(mine))))
        matched = 0
        while ious.size and ious.max() > 0.5:
            i, j = np.unravel_index(int(ious.argmax()), ious.shape)
            out[0] += ious[i, j]
            matched += 1
            ious[i, :], ious[:, j] = 0.0, 0.0
        out[1:] += (matched, len(mine) - matched, len(truth) - matched)
    return out


def panoptic_quality(tally: np.ndarray) -> float:
    iou_sum, matched, false, missed = tally
    denominator = matched + (false + missed) / 2
    return float(iou_sum / denominator) if denominator else 0.0


@functools.lru_cache(maxsize=1)
def check_scenes() -> tuple:
    """The generated scenes: 1-3 shapes of 15-40 % of the short side (SHAPES_PER_SCENE),
    the fourth with two of one caption, on the scenes' background styles."""
    from ..scenes import random_scene

    rng = np.random.default_rng(SCENE_SEED)
    return tuple(random_scene(rng, SCENE_W, SCENE_H, n, size_range=(0.15, 0.4),
                              duplicate=i == 3)
                 for i, n in enumerate(SHAPES_PER_SCENE))


@functools.lru_cache(maxsize=1)
def check_prompts() -> tuple[tuple[str, ...], ...]:
    """Each scene's captions and one absent caption: another shape in the colour of
    its first shape, the hard case for a prompt that is not there."""
    from ..scenes import SHAPES, caption

    out = []
    for scene in check_scenes():
        first = scene.shapes[0]
        absent = next(caption(kind, first.color) for kind in SHAPES
                      if caption(kind, first.color) not in scene.labels)
        out.append((*scene.prompts, absent))
    return tuple(out)


@functools.lru_cache(maxsize=1)
def engine_digest() -> str:
    """A digest of the engine's source: a verdict measured by other code is stale."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(model, config) -> str:
    """A digest of what the verdict depends on: the model (its files, where it is a
    local directory), its device and dtype, the detector settings and the engine's
    code (engine_digest)."""
    name = str(getattr(model, "name", type(model).__name__))
    files = []
    local = Path(name).expanduser()
    if local.is_dir():
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                       for p in local.iterdir() if p.is_file())
    blob = json.dumps([CHECK_VERSION, engine_digest(), name, files, str(model.device.type),
                       str(model.dtype), dataclasses.asdict(config)], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _read(cache_dir: Path, key: str) -> BoxCheck | None:
    try:
        data = json.loads((Path(cache_dir) / f"{key}.json").read_text())
        quality = tuple((str(way), float(value)) for way, value in data["quality"])
        if not quality or any(way not in PREFERENCE for way, _ in quality):
            return None
        return BoxCheck(quality, int(data["scenes"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None     # no verdict yet, or an unreadable one: measure again


def _write(cache_dir: Path, key: str, check: BoxCheck) -> None:
    data = {"quality": [list(item) for item in check.quality], "scenes": check.scenes}
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        temp = Path(cache_dir) / f".{key}.{os.getpid()}.tmp"
        temp.write_text(json.dumps(data))
        temp.replace(Path(cache_dir) / f"{key}.json")    # whole, even with two runs at once
    except OSError:
        pass            # a read-only home: the check runs again next time, nothing is lost
