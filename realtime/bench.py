"""Benchmark: the walkthrough's loop, our engine, the threaded pipeline and OWL-ViT, in one run.

    python -m realtime.bench --layout cpu --repeats 10 --json out/bench-cpu.json
    python -m realtime.bench --layout gpu --json out/bench-h100.json        # on a CUDA machine

Everything is timed on the same frame, prompts and window layout, and every
ratio is computed within the run.  Without ``--model`` a ViT-B/32-sized CLIP
(``transformers.CLIPConfig()`` defaults, 224 px) with random weights is built
once into a cache directory, and OWL-ViT is built from ``OwlViTConfig()``
defaults (B/32, 768 px): random weights, the real architectures' timings.

Rows (see docs/benchmarks.md):

- walkthrough loop: for each prompt, for each window, the model's processor on
  the crop (cut on the CPU) and a full ``CLIPModel`` forward with the text,
  batch of one; ``--walkthrough-windows N`` times N of the windows and
  extrapolates to the whole frame (flagged as such);
- engine <method>: each stage with a device synchronisation around it, then
  ``Detector.detect`` end to end with no extra synchronisation;
- pipeline: the app's capture and inference threads (realtime.live.capture.Capture,
  realtime.live.worker.Worker) on a generated 720p video file: frames/s and
  capture-to-result latency;
- OWL-ViT eager: processor, forward with the text, post-processing, per frame;
  OWL-ViT graph (CUDA only): the image path replayed from a CUDA graph with the
  text embeddings cached, on an already preprocessed image - its best case.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import torch

from .engine.boxes import Boxes
from .config import ConfigError, DetectorConfig, ModelConfig
from .engine.detector import POST, VERIFY, Detector, window_px  # noqa: F401 (POST: stage name)
from .engine.segment import at_least
from .engine.verify import BoxVerifier
from .engine.frames import crop_windows, normalise, resize
from .engine.methods import ScoreMaps, unit_scores
from .engine.model import ClipModel, ModelLoadError, load_model
from .engine.tiles import TileGrid, grid_for_frame

LAYOUTS = {
    "gpu": dict(frame=(1280, 720), tile_px=80, window_tiles=4, stride_tiles=1),   # 78 windows
    "cpu": dict(frame=(1280, 720), tile_px=160, window_tiles=2, stride_tiles=1),  # 21 windows
}
DEFAULT_PROMPTS = ("a red circle", "a blue square", "a green triangle")
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "realtime-bench"
RANDOM_CLIP_DIR = "clip-vit-b32-random-v1"
PIPELINE_QUEUE = 4   # frames waiting for inference in file mode (the app's QUEUE_FRAMES)
TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)

UPLOAD, CROPS, VISION, REFINE, SCORING = (
    "upload+resize+normalise", "crops", "vision batch", "refine (dense pass)", "scoring")


# --------------------------------------------------------------------------- result rows


@dataclass
class Row:
    """One line of the table: a whole frame (ratios apply) or one stage of it."""

    name: str
    group: str
    median_ms: float | None = None
    p95_ms: float | None = None
    fps: float | None = None             # frames per second this row stands for
    stage: bool = False                  # part of a frame: no ratios
    note: str = ""
    samples_ms: list[float] = field(default_factory=list)
    speedup_vs_walkthrough: float | None = None
    ratio_vs_owl_eager: float | None = None

    @classmethod
    def timed(cls, name: str, group: str, samples_ms: Sequence[float], stage: bool = False,
              note: str = "", scale: float = 1.0) -> "Row":
        samples = [float(s) * scale for s in samples_ms]
        median = float(np.median(samples))
        return cls(name, group, median, float(np.percentile(samples, 95)),
                   None if stage else 1000.0 / median, stage, note, samples)

    @property
    def frame_ms(self) -> float | None:
        """Time per frame used for ratios (from frames/s, so the pipeline row fits)."""
        return None if self.stage or not self.fps else 1000.0 / self.fps


def add_ratios(rows: list[Row]) -> None:
    """Speed-up against the walkthrough's loop and ratio to OWL-ViT eager, >1 = faster."""
    base = {r.group: r.frame_ms for r in rows if r.name in ("walkthrough loop", "OWL-ViT eager")}
    walk, owl = base.get("walkthrough"), base.get("owl")
    for row in rows:
        if row.frame_ms:
            row.speedup_vs_walkthrough = walk / row.frame_ms if walk else None
            row.ratio_vs_owl_eager = owl / row.frame_ms if owl else None


# --------------------------------------------------------------------------- timing helpers


def device_sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


class StageClock:
    """Times named stages of a frame, synchronising the device before and after each."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.samples: dict[str, list[float]] = defaultdict(list)

    def __call__(self, stage: str, fn: Callable, *args):
        self.sync()
        start = time.perf_counter()
        out = fn(*args)
        self.sync()
        self.samples[stage].append((time.perf_counter() - start) * 1000.0)
        return out

    def totals(self) -> list[float]:
        """Per-frame sum over the stages."""
        return [float(sum(parts)) for parts in zip(*self.samples.values())]


def time_calls(fn: Callable[[], object], repeats: int, sync: Callable[[], None]) -> list[float]:
    samples = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1000.0)
    return samples


def progress(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- models


def build_random_clip(directory: Path, seed: int = 0, text: dict | None = None,
                      vision: dict | None = None) -> Path:
    """Save a random CLIP (``CLIPConfig()`` defaults: ViT-B/32, 224 px) and an offline
    processor into `directory`, once; `text` / `vision` override tower sizes (tests)."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from tools.clip_factory import write_tokenizer

    directory = Path(directory)
    if (directory / "config.json").exists():
        return directory
    staging = directory.with_name(f"{directory.name}.tmp{os.getpid()}")
    max_tokens = int((text or {}).get("max_position_embeddings", 77))
    tokenizer = write_tokenizer(staging, model_max_length=max_tokens)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = CLIPConfig(text_config={**ids, **(text or {})}, vision_config=dict(vision or {}))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        CLIPModel(config).eval().save_pretrained(staging)
    px = config.vision_config.image_size
    images = CLIPImageProcessor(size={"shortest_edge": px}, crop_size={"height": px, "width": px})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(staging)
    try:
        staging.rename(directory)
    except OSError:  # another run finished first
        pass
    return directory


def load_clip(args) -> tuple[ClipModel, str]:
    if args.model:
        name, description = args.model, args.model
    else:
        directory = Path(args.cache_dir) / RANDOM_CLIP_DIR
        if not (directory / "config.json").exists():
            progress(f"building a random ViT-B/32 CLIP into {directory} (once)")
        name = str(build_random_clip(directory))
        description = "random weights, CLIPConfig() defaults (ViT-B/32, 224 px)"
    model = load_model(ModelConfig(name=name, device=args.device, dtype=args.dtype))
    return model, description


def build_owl(size: str, device: torch.device, dtype: torch.dtype):
    """OWL-ViT with random weights (``OwlViTConfig()`` defaults, or tiny) and its processor."""
    from transformers import (OwlViTConfig, OwlViTForObjectDetection, OwlViTImageProcessor,
                              OwlViTProcessor)

    from tools.clip_factory import write_tokenizer

    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = write_tokenizer(scratch, model_max_length=16)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    if size == "tiny":
        config = OwlViTConfig(text_config={**TINY_TOWER, **ids}, projection_dim=32,
                              vision_config=dict(TINY_TOWER, image_size=64, patch_size=16))
    else:
        config = OwlViTConfig(text_config=ids)
    px = config.vision_config.image_size
    images = OwlViTImageProcessor(size={"height": px, "width": px},
                                  crop_size={"height": px, "width": px})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = OwlViTForObjectDetection(config)
    model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return model, OwlViTProcessor(image_processor=images, tokenizer=tokenizer)


# --------------------------------------------------------------------------- the frame


def scene_frames(width: int, height: int, count: int, seed: int = 0) -> list[np.ndarray]:
    """BGR frames of a moving shape scene (noise if realtime.scenes is unavailable)."""
    try:
        from .scenes import MovingScene
    except ImportError:
        rng = np.random.default_rng(seed)
        return [rng.integers(0, 256, (height, width, 3), np.uint8) for _ in range(count)]
    scene = MovingScene(width, height, 3, seed)
    return [scene.frame(i).frame for i in range(count)]


def scene_boxes(width: int, height: int, seed: int = 0) -> np.ndarray:
    """(3, 4) boxes of the shapes in frame 0 of `scene_frames`' scene."""
    from .scenes import MovingScene

    return np.asarray(MovingScene(width, height, 3, seed).frame(0).boxes, np.float32)


def write_video(frames: Sequence[np.ndarray], path: Path, fps: float = 30.0) -> Path:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter cannot write {path} (mp4v)")
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


# --------------------------------------------------------------------------- the walkthrough


def walkthrough_frame(model: ClipModel, frame_bgr: np.ndarray, boxes: np.ndarray,
                      prompts: Sequence[str]) -> list[float]:
    """The walkthrough's loop on one frame: one processor call and one full CLIPModel
    forward (image + text, batch of one) per prompt per window; one score read each."""
    from PIL import Image

    rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
    scores = []
    with torch.no_grad():
        for prompt in prompts:
            for x1, y1, x2, y2 in boxes:
                crop = Image.fromarray(rgb[y1:y2, x1:x2])
                inputs = model.processor(text=[prompt], images=crop, return_tensors="pt",
                                         padding=True)
                inputs = {k: v.to(model.device) for k, v in inputs.items()}
                scores.append(model.hf_model(**inputs).logits_per_image.item())
    return scores


def bench_walkthrough(model: ClipModel, frame: np.ndarray, grid: TileGrid,
                      prompts: Sequence[str], windows: int, repeats: int) -> list[Row]:
    boxes = grid.window_boxes()
    total = len(boxes)
    count = total if windows <= 0 else min(windows, total)
    subset = boxes[np.linspace(0, total - 1, count).round().astype(int)]
    progress(f"walkthrough loop: {len(prompts)} prompts x {count}/{total} windows, "
             f"{repeats} repeat(s)")
    walkthrough_frame(model, frame, subset[:1], prompts[:1])  # warm-up call
    sync = device_sync(model.device)
    samples = time_calls(lambda: walkthrough_frame(model, frame, subset, prompts), repeats, sync)
    note = (f"{len(prompts) * total} forwards/frame"
            + ("" if count == total else f"; timed {count}/{total} windows, extrapolated"))
    return [Row.timed("walkthrough loop", "walkthrough", samples, note=note,
                      scale=total / count)]


# --------------------------------------------------------------------------- our engine


def _post_and_verify(detector: Detector, maps: ScoreMaps, pixels: torch.Tensor,
                     clock: StageClock) -> tuple[np.ndarray, dict | None]:
    """The detector's own post-processing, fit and verify stages, each timed; the
    similarity maps and how many boxes the verify stage cropped and kept."""
    counts = {}

    def counting(name, fn, *args):
        out = clock(name, fn, *args)
        if name == VERIFY:
            counts.update(candidates=len(args[1].boxes), kept=len(out.boxes))
        return out

    detector.stage = counting
    try:
        detections = detector._boxes(maps, pixels, 0, 0.0, time.perf_counter())
    finally:
        detector.stage = lambda name, fn, *args: fn(*args)
    if not detector.config.verifies:
        return detections.similarity_maps, None
    return detections.similarity_maps, counts or {"candidates": 0, "kept": 0}


def staged_windows(detector: Detector, frame: np.ndarray, clock: StageClock):
    """WindowsMethod, stage by stage (same calls as methods.WindowsMethod.__call__)."""
    model, method, spec = detector.model, detector.method, detector.model.spec

    def prepare():
        pixels = detector.upload(frame)
        plan = method.plan(*pixels.shape[-2:])
        image = normalise(resize(pixels, plan.resized_h, plan.resized_w, spec), spec)
        return pixels, plan, image.to(model.dtype)

    def score(embeddings):
        sims, probs = unit_scores(embeddings, detector._text, len(detector.labels),
                                  model.logit_scale)
        sim_map = plan.tile_means(sims)
        return ScoreMaps(plan.grid, sim_map, sim_map, plan.tile_maxima(probs), fine=fine)

    pixels, plan, image = clock(UPLOAD, prepare)
    crops = clock(CROPS, crop_windows, image, plan.rows_idx, plan.cols_idx)
    embeddings = clock(VISION, model.encode_images, crops)
    fine = None
    if method._fine is not None and method.use_fine:
        fine = clock(REFINE, method._fine, pixels, detector._text, len(detector.labels))
    maps = clock(SCORING, score, embeddings)
    return _post_and_verify(detector, maps, pixels, clock)


def _prepare_dense(detector: Detector, frame: np.ndarray, input_size: Callable):
    spec = detector.model.spec
    pixels = detector.upload(frame)
    in_h, in_w = input_size(*pixels.shape[-2:])
    return pixels, normalise(resize(pixels, in_h, in_w, spec), spec)


def staged_dense(detector: Detector, frame: np.ndarray, clock: StageClock):
    """DenseMethod (MaskCLIP), stage by stage; it has no crops."""
    model = detector.model
    patch = model.spec.patch_px

    def score(patches):
        sims, probs = unit_scores(patches, detector._text, len(detector.labels),
                                  model.logit_scale)
        rows, cols = image.shape[-2] // patch, image.shape[-1] // patch
        sim_map = sims.T.reshape(-1, rows, cols)
        return ScoreMaps(TileGrid(width, height, rows, cols), sim_map, sim_map,
                         probs.T.reshape(-1, rows, cols))

    pixels, image = clock(UPLOAD, _prepare_dense, detector, frame, detector.method.input_size)
    height, width = pixels.shape[-2:]
    patches = clock(VISION, model.patch_embeddings, image, detector.config.dense_variant)
    maps = clock(SCORING, score, patches)
    return _post_and_verify(detector, maps, pixels, clock)


def staged_occlusion(detector: Detector, frame: np.ndarray, clock: StageClock):
    """OcclusionMethod, stage by stage; its "crops" are the masked copies of the frame."""
    model, method = detector.model, detector.method

    def masked(image):
        grid, keep = method._cell_masks(height, width, *image.shape[-2:])
        return grid, torch.cat([image, image * keep])

    def score(embeddings):
        sims, probs = unit_scores(embeddings, detector._text, len(detector.labels),
                                  model.logit_scale)
        drop = (sims[:1] - sims[1:]).T.reshape(-1, grid.rows, grid.cols)
        whole = lambda v: v[0].view(-1, 1, 1).expand_as(drop)
        return ScoreMaps(grid, drop, whole(sims), whole(probs))

    pixels, image = clock(UPLOAD, _prepare_dense, detector, frame, method._dense.input_size)
    height, width = pixels.shape[-2:]
    grid, batch = clock(CROPS, masked, image)
    embeddings = clock(VISION, model.encode_images, batch, True)
    maps = clock(SCORING, score, embeddings)
    return _post_and_verify(detector, maps, pixels, clock)


# Each returns the similarity maps (checked against Detector.detect) and the verify
# stage's box counts (None where the method does not verify).
STAGED = {"windows": staged_windows, "dense": staged_dense, "occlusion": staged_occlusion}


def detector_config(method: str, layout: dict, fit_mode: str = "crops") -> DetectorConfig:
    # refine on, not auto: every stage is timed whatever a random model's patch-map
    # check would say (the fit has its own row), and no check runs before timing.
    return DetectorConfig(method=method, tile_px=layout["tile_px"],
                          window_tiles=layout["window_tiles"],
                          stride_tiles=layout["stride_tiles"], fit_mode=fit_mode, refine=True)


def bench_engine(detector: Detector, frame: np.ndarray, repeats: int, warmup: int
                 ) -> tuple[list[Row], dict]:
    method = detector.config.method
    staged, sync = STAGED[method], device_sync(detector.model.device)
    progress(f"engine {method}: {warmup} warm-up + {repeats} staged + {repeats} end-to-end")
    with torch.inference_mode():
        for _ in range(warmup):
            staged(detector, frame, StageClock(sync))
            detector.detect(frame)
        clock = StageClock(sync)
        for _ in range(repeats):
            staged_sim, counts = staged(detector, frame, clock)
    end_to_end = time_calls(lambda: detector.detect(frame), repeats, sync)
    group = f"engine {method}"
    rows = [Row.timed(f"{group}: Detector.detect", group, end_to_end, note="end to end")]
    rows += [Row.timed(f"{group}: {stage}", group, s, stage=True,
                       note=f"{counts['candidates']} box crops" if stage == VERIFY else "")
             for stage, s in clock.samples.items()]
    rows.append(Row.timed(f"{group}: sum of stages", group, clock.totals(), stage=True,
                          note="synchronised around each stage"))
    detected = detector.detect(frame).similarity_maps
    atol = 1e-4 if detector.model.dtype == torch.float32 else 2e-2
    check = {"stages_match_detect": bool(np.allclose(staged_sim, detected, atol=atol))}
    if counts is not None:
        check["verify"] = counts
    return rows, check


def bench_verify(detector: Detector, frame: np.ndarray, boxes: np.ndarray, repeats: int
                 ) -> list[Row]:
    """The fit and verify stages on given boxes: with random weights the gate passes
    no candidate, so Detector.detect's own stages are empty and cost nothing."""
    count = len(boxes)
    found = _candidates(boxes)
    sync = device_sync(detector.model.device)
    rows = []
    with torch.inference_mode():
        pixels = detector.upload(frame)
        grid = detector.method.plan(*pixels.shape[-2:]).grid
        floor = np.zeros(len(detector.labels), np.float32)
        per_box = 2 if detector.verifier.context > 0 else 1     # own crop, context crop
        stages = [("verify stage alone", lambda: detector.verifier(
            pixels, found, detector._text, len(detector.labels), 0.0), count * per_box)]
        if per_box == 2:    # the ways without a context crop (segmentation, the zoom)
            own = BoxVerifier(detector.model, detector.verifier.margin, 0.0)
            stages.append(("verify stage alone, own crops only", lambda: own(
                pixels, found, detector._text, len(detector.labels), 0.0), count))
        if detector.config.fits:
            regions = window_regions(boxes, window_px(grid), pixels.shape[-1], pixels.shape[-2])
            stages.insert(0, (f"fit stage alone ({type(detector.fitter).__name__})",
                              lambda: detector.fitter(
                pixels, regions, window_px(grid), floor, detector._text, len(detector.labels),
                0.0, 0.0), None))
            stages.insert(0, ("segment stage alone (GrabCut, host)", lambda: detector.segmenter(
                frame, regions, window_px(grid), detector.config.merge_iou), 0))
        for name, call, crops in stages:
            call()
            samples = time_calls(call, repeats, sync)
            crops = crops if crops is not None else detector.fitter.crops_last_frame
            row = Row.timed(f"{name}, {crops} box crops", "verify", samples,
                            note=f"the scene's {count} shapes as candidates; adds to the frame")
            row.fps = None   # an add-on cost per frame, not a frame: no frames/s, no ratios
            rows.append(row)
    return rows


def window_regions(boxes: np.ndarray, window: float, frame_w: int, frame_h: int) -> Boxes:
    """Each shape as the coarse stage hands it to the fit: a region at least a window
    wide around it (what the crop fit's cost ignores and the zoom fit's grows with)."""
    return _candidates(at_least(boxes.astype(float), window, frame_w, frame_h))


def _candidates(boxes: np.ndarray) -> Boxes:
    """Boxes of the first prompt, certain: with random weights no gate would pass them."""
    return Boxes.from_items([(box, 1.0, 1.0, 0) for box in boxes])


# --------------------------------------------------------------------------- the pipeline


@dataclass
class PipelineResult:
    frames: int
    fps: float
    latency_ms: list[float]      # captured (decoded) -> detections ready, queue wait included
    service_ms: list[float]      # Detector.detect inside the worker
    dropped: int = 0             # live mode: frames replaced before the worker took them


def run_pipeline(detector: Detector, video: Path, live: bool = False, skip: int = 2
                 ) -> PipelineResult:
    """The app's threads without a window: Capture -> buffer -> Worker -> results.

    File mode (the app's default for files): every frame, in order, through a
    bounded queue with back-pressure, as fast as it goes - the latency then
    includes the wait in the queue.  Live mode: the file is played at its own
    frame rate into a latest-frame-wins slot, as a camera would deliver it.
    """
    from .buffers import BoundedQueue, LatestSlot
    from .live.capture import Capture, CaptureEnd
    from .live.source import open_reader, parse_source
    from .live.worker import Result, Worker, WorkerError

    stop = threading.Event()
    inbox = LatestSlot() if live else BoundedQueue(PIPELINE_QUEUE)
    outbox = BoundedQueue(max(PIPELINE_QUEUE, 16))
    capture = Capture(open_reader(parse_source(str(video))), [inbox], stop, pace=live)
    worker = Worker(detector, inbox, outbox, stop).start()
    capture.start()
    results: list[Result] = []
    try:
        while True:
            item = outbox.get(timeout_s=600.0)
            if item is None or isinstance(item, WorkerError):
                raise RuntimeError(f"pipeline failed: {item.message if item else 'timed out'}")
            if isinstance(item, CaptureEnd):
                break
            results.append(item)
    finally:
        stop.set()
        capture.join(5.0)
        worker.join(5.0)
    kept = results[min(skip, max(0, len(results) - 2)):]
    span = kept[-1].finished_at - kept[0].finished_at if len(kept) > 1 else 0.0
    return PipelineResult(len(results), (len(kept) - 1) / span if span > 0 else 0.0,
                          [r.latency_ms for r in kept],
                          [r.detections.inference_ms for r in kept],
                          getattr(inbox, "replaced", 0))


def bench_pipeline(detector: Detector, frames: Sequence[np.ndarray], live: bool = False
                   ) -> tuple[list[Row], dict]:
    height, width = frames[0].shape[:2]
    mode = "live" if live else "file"
    progress(f"pipeline ({mode}): {len(frames)} frames {width}x{height}, capture thread + "
             f"worker thread ({detector.config.method})")
    with tempfile.TemporaryDirectory() as scratch:
        video = write_video(frames, Path(scratch) / "bench.mp4")
        result = run_pipeline(detector, video, live)
    row = Row.timed("pipeline: capture-to-result latency", "pipeline", result.latency_ms,
                    note=f"{mode} mode, {detector.config.method}, {result.frames} frames; "
                         "median/p95 = latency")
    row.fps = result.fps
    service = Row.timed("pipeline: detect inside the worker", "pipeline", result.service_ms,
                        stage=True)
    info = dict(mode=mode, frames=result.frames, dropped=result.dropped, size=[width, height],
                codec="mp4v", queue=("latest slot" if live else f"bounded {PIPELINE_QUEUE}"),
                method=detector.config.method,
                harness="realtime.live.capture.Capture + realtime.live.worker.Worker")
    return [row, service], info


# --------------------------------------------------------------------------- OWL-ViT


def owl_eager_frame(model, processor, frame_bgr: np.ndarray, prompts: Sequence[str],
                    clock: StageClock):
    """OWL-ViT the usual way: processor on the frame and the texts, forward, post-process."""
    from PIL import Image

    device, dtype = model.device, model.dtype
    height, width = frame_bgr.shape[:2]

    def prepare():
        image = Image.fromarray(cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB))
        inputs = processor(text=[list(prompts)], images=image, return_tensors="pt")
        inputs = {k: v.to(device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        return inputs

    inputs = clock("processor", prepare)
    outputs = clock("forward", lambda: model(**inputs))
    return clock("post-processing", processor.post_process_grounded_object_detection,
                 outputs, 0.1, [(height, width)])


def owl_image_path(model, text_embeds: torch.Tensor, query_mask: torch.Tensor):
    """OWL-ViT's per-frame work once the text embeddings are cached: logits and boxes."""
    def forward(pixel_values: torch.Tensor):
        feature_map, _ = model.image_embedder(pixel_values=pixel_values)
        b, h, w, d = feature_map.shape
        features = feature_map.reshape(b, h * w, d)
        logits, _ = model.class_predictor(features, text_embeds, query_mask)
        return logits, model.box_predictor(features, feature_map)
    return forward


def capture_graph(fn: Callable, static_in: torch.Tensor):
    """A CUDA graph of fn(static_in), after warm-up on a side stream."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(static_in)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = fn(static_in)
    return graph, static_out


def bench_owl(size: str, frame: np.ndarray, prompts: Sequence[str], device: torch.device,
              dtype: torch.dtype, repeats: int, warmup: int) -> tuple[list[Row], dict]:
    progress(f"OWL-ViT ({size}): building")
    model, processor = build_owl(size, device, dtype)
    sync = device_sync(device)
    progress(f"OWL-ViT eager: {warmup} warm-up + {repeats} repeats")
    with torch.inference_mode():
        for _ in range(warmup):
            owl_eager_frame(model, processor, frame, prompts, StageClock(sync))
        clock = StageClock(sync)
        for _ in range(repeats):
            owl_eager_frame(model, processor, frame, prompts, clock)
    px = model.config.vision_config.image_size
    rows = [Row.timed("OWL-ViT eager", "owl", clock.totals(),
                      note=f"{px}x{px}, processor + forward with text + post-process")]
    rows += [Row.timed(f"OWL-ViT eager: {stage}", "owl", s, stage=True)
             for stage, s in clock.samples.items()]
    rows.append(bench_owl_graph(model, processor, frame, prompts, repeats, warmup))
    info = dict(config="tiny" if size == "tiny" else "OwlViTConfig() defaults (ViT-B/32)",
                image_px=px, processor=type(processor.image_processor).__name__,
                attn_implementation=model.config._attn_implementation)
    return rows, info


def bench_owl_graph(model, processor, frame: np.ndarray, prompts: Sequence[str],
                    repeats: int, warmup: int) -> Row:
    name = "OWL-ViT graph"
    if model.device.type != "cuda":
        return Row(name, "owl", note=f"n/a on {model.device.type.upper()} (CUDA graphs)")
    from PIL import Image

    image = Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    inputs = processor(text=[list(prompts)], images=image, return_tensors="pt")
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    pixels = inputs["pixel_values"].to(model.dtype)
    try:
        with torch.inference_mode():
            out = model(**{**inputs, "pixel_values": pixels})
            query_mask = inputs["input_ids"].view(1, len(prompts), -1)[..., 0] > 0
            forward = owl_image_path(model, out.text_embeds, query_mask)
            static_in = pixels.clone()
            graph, _ = capture_graph(forward, static_in)
            for _ in range(warmup):
                graph.replay()

            def replay():
                static_in.copy_(pixels)
                graph.replay()
            samples = time_calls(replay, repeats, device_sync(model.device))
    except Exception as exc:  # report, never abort the whole run
        return Row(name, "owl", note=f"capture failed: {type(exc).__name__}: {exc}"[:160])
    return Row.timed(name, "owl", samples,
                     note="image path replayed, text cached, input already on the device")


# --------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (f"{cpu_model()} ({os.cpu_count()} logical CPUs, "
            f"torch threads {torch.get_num_threads()})")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_meta(argv: Sequence[str], model: ClipModel, description: str) -> dict:
    import transformers

    return dict(
        date=_dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        command=shlex.join(["python", "-m", "realtime.bench", *argv]),
        device=str(model.device), device_name=device_name(model.device),
        dtype=str(model.dtype).removeprefix("torch."),
        torch=torch.__version__, transformers=transformers.__version__,
        opencv=cv2.__version__, numpy=np.__version__, python=platform.python_version(),
        cuda=torch.version.cuda, torch_threads=torch.get_num_threads(),
        git_commit=git_commit(),
        model=description,
        clip_processor=type(getattr(model.processor, "image_processor", model.processor)).__name__,
        attn_implementation=model.hf_model.config._attn_implementation,
        cuda_graphs=model._graphs is not None,
    )


def layout_info(layout: dict, grid: TileGrid, model: ClipModel) -> dict:
    width, height = layout["frame"]
    return dict(preset=layout.get("preset"), frame=[width, height], tile_px=layout["tile_px"],
                window_tiles=layout["window_tiles"], stride_tiles=layout["stride_tiles"],
                tiles=[grid.cols, grid.rows], windows=grid.num_windows,
                window_input_px=model.spec.image_px)


def is_vit_b32(model: ClipModel) -> bool:
    vision = model.hf_model.config.vision_config
    return (vision.image_size, vision.patch_size, vision.hidden_size,
            vision.num_hidden_layers) == (224, 32, 768, 12)


def evaluate_targets(layout: dict, prompts: Sequence[str], rows: list[Row], b32: bool,
                     owl_b32: bool) -> list[dict]:
    """The issue's targets, only where the run matches what they are stated for:
    a preset layout, 3 prompts, ViT-B/32-sized models (OWL-ViT B/32 for its ratios)."""
    if len(prompts) != 3 or layout.get("preset") not in LAYOUTS or not b32:
        return []
    row = {r.name: r for r in rows}.get
    windows, dense = row("engine windows: Detector.detect"), row("engine dense: Detector.detect")
    pipeline, owl_graph = row("pipeline: capture-to-result latency"), row("OWL-ViT graph")
    goals = []
    if layout["preset"] == "cpu":
        goals.append(("engine windows vs walkthrough loop (x)", 4.0,
                      windows and windows.speedup_vs_walkthrough))
    else:
        goals += [("pipeline frames/s", 250.0, pipeline and pipeline.fps),
                  ("engine windows vs walkthrough loop (x)", 500.0,
                   windows and windows.speedup_vs_walkthrough),
                  ("engine windows vs OWL-ViT eager (x)", 2.0,
                   owl_b32 and windows and windows.ratio_vs_owl_eager)]
        if owl_b32 and dense and owl_graph and owl_graph.median_ms:
            goals.append(("engine dense vs OWL-ViT graph (x)", 1.0,
                          owl_graph.median_ms / dense.median_ms))
    return [dict(target=name, goal=goal, measured=round(float(value), 2),
                 met=bool(value >= goal)) for name, goal, value in goals if value]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "" if value is None else f"{value:{spec}}{suffix}"


def format_table(rows: list[Row]) -> str:
    lines = [f"{'':46} {'median ms':>10} {'p95 ms':>10} {'frames/s':>9} "
             f"{'vs walkthrough':>15} {'vs OWL eager':>13}  note"]
    for row in rows:
        name = ("    " + row.name.split(": ", 1)[-1]) if row.stage else row.name
        median = _fmt(row.median_ms, ".2f") if row.median_ms is not None else "n/a"
        lines.append(f"{name[:46]:46} {median:>10} {_fmt(row.p95_ms, '.2f'):>10} "
                     f"{_fmt(row.fps, '.2f'):>9} "
                     f"{_fmt(row.speedup_vs_walkthrough, '.1f', 'x'):>15} "
                     f"{_fmt(row.ratio_vs_owl_eager, '.2f', 'x'):>13}  {row.note}")
    return "\n".join(lines)


def format_header(meta: dict, layout: dict, prompts: Sequence[str]) -> str:
    width, height = layout["frame"]
    cols, rows = layout["tiles"]
    return (f"{meta['device_name']} | {meta['device']} {meta['dtype']} | torch "
            f"{meta['torch']} transformers {meta['transformers']}\n"
            f"layout {layout['preset'] or 'custom'}: {width}x{height}, tile {layout['tile_px']} px "
            f"({cols}x{rows} tiles), window {layout['window_tiles']}, stride "
            f"{layout['stride_tiles']} -> {layout['windows']} windows of "
            f"{layout['window_input_px']} px; {len(prompts)} prompts")


# --------------------------------------------------------------------------- command line


def parse_frame(text: str) -> tuple[int, int]:
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH, e.g. 1280x720 (got {text!r})") from None
    if width < 1 or height < 1:
        raise argparse.ArgumentTypeError(f"frame size must be positive (got {text!r})")
    return width, height


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m realtime.bench", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default="", help="CLIP directory or hub id; empty = random "
                   "ViT-B/32 from CLIPConfig() defaults, built once into --cache-dir")
    p.add_argument("--cache-dir", default=str(DEFAULT_CACHE))
    p.add_argument("--layout", choices=("auto", *LAYOUTS), default="auto",
                   help="gpu: tile 80, window 4 (78 windows); cpu: tile 160, window 2 (21); "
                   "auto: gpu on CUDA, else cpu")
    p.add_argument("--frame", type=parse_frame, help="WxH, overrides the layout's 1280x720")
    p.add_argument("--tile-px", type=int)
    p.add_argument("--window-tiles", type=int)
    p.add_argument("--stride-tiles", type=int)
    p.add_argument("--prompts", nargs="+", default=list(DEFAULT_PROMPTS))
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"))
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (torch.set_num_threads); 0 = torch's default")
    p.add_argument("--methods", default="windows,dense",
                   help="engine methods to time, comma-separated (windows, dense, occlusion)")
    p.add_argument("--occlusion", action="store_true", help="also time the occlusion method")
    p.add_argument("--fit-mode", choices=("crops", "zoom"), default="crops",
                   help="the windows' box fit (detector.fit_mode)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--walkthrough-windows", type=int, default=0,
                   help="time only N windows of the walkthrough's loop and extrapolate; 0 = all")
    p.add_argument("--walkthrough-repeats", type=int, default=3)
    p.add_argument("--video-frames", type=int, default=120)
    p.add_argument("--pipeline-mode", choices=("file", "live"), default="file",
                   help="file: every frame, bounded queue; live: played at 30 fps, latest "
                   "frame wins")
    p.add_argument("--owl", choices=("b32", "tiny"), default="b32",
                   help="OWL-ViT size: b32 = OwlViTConfig() defaults; tiny = smoke tests")
    p.add_argument("--owl-repeats", type=int, default=5)
    p.add_argument("--skip", default="", help="comma-separated parts to leave out: "
                   "walkthrough, pipeline, owl")
    p.add_argument("--json", default="out/bench.json", help="where to write the JSON report")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m] + (["occlusion"] * args.occlusion)
    args.methods = list(dict.fromkeys(methods))
    args.skip = {s for s in args.skip.split(",") if s}
    unknown = (set(args.methods) - set(STAGED)) | (args.skip - {"walkthrough", "pipeline", "owl"})
    if unknown:
        p.error(f"unknown method or part: {', '.join(sorted(unknown))}")
    if min(args.repeats, args.walkthrough_repeats, args.owl_repeats, args.video_frames) < 1:
        p.error("repeats and --video-frames must be at least 1")
    return args


def resolve_layout(args, device: torch.device) -> dict:
    preset = args.layout if args.layout != "auto" else ("gpu" if device.type == "cuda" else "cpu")
    layout = dict(LAYOUTS[preset], preset=preset)
    overrides = dict(frame=args.frame, tile_px=args.tile_px, window_tiles=args.window_tiles,
                     stride_tiles=args.stride_tiles)
    for key, value in overrides.items():
        if value is not None and value != layout[key]:
            layout[key], layout["preset"] = value, None
    return layout


def run(args: argparse.Namespace, argv: Sequence[str]) -> dict:
    model, description = load_clip(args)
    layout = resolve_layout(args, model.device)
    width, height = layout["frame"]
    frames = scene_frames(width, height, 1 if "pipeline" in args.skip else args.video_frames)
    frame, prompts = frames[0], list(args.prompts)
    detectors = {m: Detector(prompts, detector_config(m, layout, args.fit_mode), model)
                 for m in args.methods}
    grid = grid_for_frame(width, height, detector_config("windows", layout))
    rows, checks, extra = [], {}, {}
    if "walkthrough" not in args.skip:
        rows += bench_walkthrough(model, frame, grid, prompts, args.walkthrough_windows,
                                  args.walkthrough_repeats)
    for method, detector in detectors.items():
        method_rows, checks[method] = bench_engine(detector, frame, args.repeats, args.warmup)
        rows += method_rows
    verifying = [d for d in detectors.values() if d.config.verifies]
    if verifying:
        rows += bench_verify(verifying[0], frame, scene_boxes(width, height), args.repeats)
    if "pipeline" not in args.skip:
        pipeline_rows, extra["pipeline"] = bench_pipeline(
            detectors.get("windows") or next(iter(detectors.values())), frames,
            args.pipeline_mode == "live")
        rows += pipeline_rows
    if "owl" not in args.skip:
        owl_rows, extra["owl"] = bench_owl(args.owl, frame, prompts, model.device, model.dtype,
                                           args.owl_repeats, min(args.warmup, 2))
        rows += owl_rows
    add_ratios(rows)
    info = layout_info(layout, grid, model)
    return dict(meta=run_meta(argv, model, description), layout=info, prompts=prompts,
                settings=dict(repeats=args.repeats, warmup=args.warmup,
                              walkthrough_windows=args.walkthrough_windows,
                              walkthrough_repeats=args.walkthrough_repeats,
                              owl_repeats=args.owl_repeats, methods=args.methods,
                              video_frames=args.video_frames, pipeline_mode=args.pipeline_mode,
                              owl=args.owl, skip=sorted(args.skip)),
                rows=[asdict(r) for r in rows], checks=checks, **extra,
                targets=evaluate_targets(layout, prompts, rows, is_vit_b32(model),
                                         args.owl == "b32"))


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    quiet_transformers()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        report = run(args, argv)
    except (ModelLoadError, ConfigError) as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    rows = [Row(**r) for r in report["rows"]]
    print(format_header(report["meta"], report["layout"], report["prompts"]))
    print(format_table(rows))
    for target in report["targets"]:
        print(f"target {target['target']}: {target['measured']} (goal >= {target['goal']}) "
              f"{'met' if target['met'] else 'NOT met'}")
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        progress(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
