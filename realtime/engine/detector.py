"""The detector: a BGR frame and a set of prompts in, :class:`Detections` out.

Usable on its own, with no window or thread::

    from realtime import Detector
    detector = Detector(prompts=["a red mug"], model="openai/clip-vit-base-patch32")
    detections = detector(frame_bgr)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
import time
from typing import Sequence

import numpy as np
import torch

from .boxes import Boxes, FineMap, linear_scores, maps_to_boxes
from ..config import ConfigError, DetectorConfig, ModelConfig
from ..detections import Detections
from .frames import FrameUploader
from .methods import ClassifyMethod, Encoded, ScoreMaps, make_method
from .model import ClipModel, load_model
from .prompts import PromptBank, clean_prompts
from .fit import BoxFitter, ZoomFitter
from .boxcheck import CROPS, PATCH_MAP, SEGMENT, ZOOM, BoxCheck, check_boxes
from .segment import BoxSegmenter
from .verify import BoxVerifier


class Detector:
    """Zero-shot detection with CLIP: one frame at a time, any number of prompts."""

    def __init__(self, prompts: Sequence[str] | str = (), config: DetectorConfig | None = None,
                 model: ClipModel | ModelConfig | str | None = None,
                 check_cache_dir: Path | None = None) -> None:
        """`check_cache_dir` keeps the box check's verdict on disk between runs
        (realtime.engine.boxcheck.default_cache_dir() is the front ends' choice);
        None: measured once per loaded model and settings in this process."""
        self.config = config or DetectorConfig()
        self.model = _as_model(model)
        self.bank = PromptBank(self.model, self.config.templates,
                               self.config.background_prompts)
        self.method = make_method(self.model, self.config)
        self.upload = FrameUploader(self.model.device)
        self.verifier = BoxVerifier(self.model, self.config.verify_margin,
                                    self.config.context_margin)
        self.segmenter = BoxSegmenter()
        self.fitters = {CROPS: BoxFitter(self.model, self.verifier.crops),
                        ZOOM: ZoomFitter(self.model, self.verifier.crops)}
        self.fitter = self.fitters.get(self.config.fit_mode, self.fitters[CROPS])
        # How each post-processing stage is called: directly; the benchmark times them.
        self.stage = lambda name, fn, *args: fn(*args)
        self.labels: tuple[str, ...] = ()
        self._text = torch.empty(0)
        self.box_check: BoxCheck | None = None
        self.use_way(self._decide_way(check_cache_dir))
        if prompts:
            self.set_prompts(prompts)

    def _ways(self) -> tuple[str, ...]:
        """The ways window regions may get their boxes under these settings."""
        config = self.config
        if not config.fits or config.refine is True:
            return (PATCH_MAP,)     # outlined where a patch map is computed, else as they are
        fits = (SEGMENT, CROPS, ZOOM) if config.fit_mode == "auto" else (config.fit_mode,)
        return ((PATCH_MAP,) if config.refine == "auto" else ()) + fits

    def _decide_way(self, cache_dir: Path | None) -> str:
        """The way itself where there is one; else what the box check measures best."""
        ways = self._ways()
        if len(ways) == 1:
            return ways[0]
        self.use_way(ways[0])
        try:
            self.box_check = check_boxes(self, ways, cache_dir)
        except ConfigError:     # over the memory budget: check_frame_size names the key
            return ways[0]
        finally:
            self.labels, self._text = (), torch.empty(0)    # the check's scene prompts
        return self.box_check.choice

    def use_way(self, way: str) -> None:
        """Outline window regions with the patch map (PATCH_MAP), segment them
        (SEGMENT) or fit them (CROPS, ZOOM); the refine pass is computed only while it
        outlines."""
        self.way = way
        self.outlines = way == PATCH_MAP
        if way in self.fitters:
            self.fitter = self.fitters[way]
        # auto: the zoom's boxes are looser, and twice their side reaches into the
        # neighbours (tuning model: recall@0.5 0.64 with one crop, 0.43 with both);
        # segmentation leaves no box on plain background, so the context crop only
        # loses boxes beside other objects (tuning model, in-process: 0.90 -> 0.92)
        auto = self.config.verify_context == "auto"
        self.verifier.context = (0.0 if auto and way in (ZOOM, SEGMENT)
                                 else self.config.context_margin)
        if hasattr(self.method, "use_fine"):
            self.method.use_fine = self.outlines

    def set_prompts(self, prompts: Sequence[str] | str) -> tuple[str, ...]:
        """Change what to look for (a string is one prompt); only prompts not seen
        before are encoded.

        Returns a warning line for each prompt longer than the model's token
        limit (the model reads its first tokens).
        """
        labels = clean_prompts(prompts)
        self._text = self.bank.with_background(labels)
        self.labels = labels     # after the encoding: a failure leaves the old set in use
        return self.bank.warnings(labels)

    def set_threshold(self, threshold: float) -> None:
        """Change the cut on the normalised maps (validated like any config value)."""
        self.config = dataclasses.replace(self.config, threshold=threshold)

    def check_frame_size(self, width: int, height: int) -> None:
        """ConfigError (naming the key) when frames of this size do not fit the method's
        layout or the memory budget; call it before the first frame arrives."""
        check = getattr(self.method, "check_frame_size", None)
        if check is not None:
            check(height, width)

    def __call__(self, frame_bgr: np.ndarray, frame_index: int = 0,
                 timestamp_s: float = 0.0) -> Detections:
        return self.detect(frame_bgr, frame_index, timestamp_s)

    @torch.inference_mode()
    def detect(self, frame_bgr: np.ndarray, frame_index: int = 0,
               timestamp_s: float = 0.0) -> Detections:
        self._check_prompts()
        start = time.perf_counter()
        pixels = self.upload(frame_bgr)
        maps = self.method(pixels, self._text, len(self.labels))
        return self._boxes(maps, pixels, frame_index, timestamp_s, start, frame_bgr)

    @torch.inference_mode()
    def encode(self, frame_bgr: np.ndarray) -> Encoded:
        """The prompt-free part of detection: the method's vision pass over the frame.

        Its arrays can be stored and scored later, against any prompts, with
        :meth:`detect_encoded` (what the archive index does).
        """
        return self.method.embed(self.upload(frame_bgr))

    def layout(self) -> dict:
        """What :meth:`encode`'s arrays depend on: the model, its input and the method's
        layout settings.  Stored embeddings are only comparable under an equal layout."""
        spec = self.model.spec
        return {"model": self.model.name, "image_px": spec.image_px, "patch_px": spec.patch_px,
                **self.method.layout()}

    @torch.inference_mode()
    def detect_encoded(self, encoded: Encoded, frame_index: int = 0,
                       timestamp_s: float = 0.0) -> Detections:
        """Detections from an :meth:`encode` result: the same maps and boxes as
        :meth:`detect`, without the stages that need the frame's pixels (verify)."""
        self._check_prompts()
        start = time.perf_counter()
        encoded = Encoded(encoded.frame_w, encoded.frame_h,
                          {k: torch.as_tensor(v, device=self.model.device).float()
                           for k, v in encoded.arrays.items()})
        maps = self.method.score(encoded, self._text, len(self.labels))
        return self._boxes(maps, None, frame_index, timestamp_s, start)

    def _check_prompts(self) -> None:
        if not self.labels:
            raise RuntimeError("no prompts set: call set_prompts() first")

    def _boxes(self, maps: ScoreMaps, pixels: torch.Tensor | None, frame_index: int,
               timestamp_s: float, start: float, frame_bgr: np.ndarray | None = None
               ) -> Detections:
        relevance, similarity, probability, frame_scores, fine = self.stage(
            POST, _to_host, maps)
        found = None
        if maps.frame_scores is None:
            found = self.stage(POST, self._regions, relevance, similarity, probability,
                               maps.grid, fine, pixels is not None)
            segments = (found.fitted and self.way == SEGMENT) or self.config.segments_dense
            if segments and frame_bgr is not None:
                found = self.stage(SEGMENT_STAGE, self.segmenter, frame_bgr, found.boxes,
                                   self._object_px(maps.grid, frame_bgr), self.config.merge_iou)
            elif found.fitted and pixels is not None:
                found = self.stage(FIT, self.fitter, pixels, found.boxes, window_px(maps.grid),
                                   np.median(similarity.reshape(len(similarity), -1), axis=1),
                                   self._text, len(self.labels), self.config.gate,
                                   self.config.merge_iou)
            else:
                found = found.boxes
            if self.config.verifies and pixels is not None:
                found = self.stage(VERIFY, self.verifier, pixels, found, self._text,
                                   len(self.labels), self.config.gate)
        return self._detections(found, similarity, probability, frame_scores, frame_index,
                                timestamp_s, (time.perf_counter() - start) * 1000.0)

    def _object_px(self, grid, frame_bgr: np.ndarray) -> float:
        """The side a region's object may have, to segment it whole: a window's (every
        window that scored the prompt held the object); for dense, whose patch-map box
        may cover only part of it, half the frame's short side (the default windows')."""
        if self.config.method == "dense":
            return min(frame_bgr.shape[:2]) / 2
        return window_px(grid)

    def _regions(self, relevance, similarity, probability, grid, fine, has_pixels: bool):
        """Each prompt's window regions, outlined by the patch map where it outlines
        (use_way), else marked to get their boxes again (segmented or fitted)."""
        fits = self.config.fits and has_pixels and not (self.outlines and fine is not None)
        boxes = maps_to_boxes(relevance, similarity, probability, grid, self.config,
                              fine=None if fits else fine)
        return _Regions(boxes, fits)

    def _detections(self, found, similarity, probability, frame_scores, frame_index,
                    timestamp_s, inference_ms) -> Detections:
        extra = dict(labels=self.labels, frame_index=frame_index, timestamp_s=timestamp_s,
                     score_maps=probability, similarity_maps=similarity,
                     frame_scores=frame_scores, inference_ms=inference_ms)
        if found is None:
            return Detections(**extra)
        scores = found.probabilities
        if self.config.score_mode == "linear":
            scores = linear_scores(found.similarities, *self.config.similarity_range)
        return Detections(boxes=found.boxes, scores=scores, similarities=found.similarities,
                          label_ids=found.label_ids, **extra)

    @torch.inference_mode()
    def classify(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Whole-frame zero-shot classification: (prompts,) softmax probabilities."""
        maps = ClassifyMethod(self.model, self.config)(self.upload(frame_bgr), self._text,
                                                       len(self.labels))
        return maps.frame_scores.float().cpu().numpy()


def _as_model(model: ClipModel | ModelConfig | str | None) -> ClipModel:
    """A loaded model as is (anything with ClipModel's interface); otherwise load one."""
    if model is None:
        return load_model(ModelConfig())
    if isinstance(model, str):
        return load_model(ModelConfig(name=model))
    if isinstance(model, ModelConfig):
        return load_model(model)
    return model


POST, FIT, VERIFY = "post-processing", "fit (box crops)", "verify (box crops)"
SEGMENT_STAGE = "segment (GrabCut, host)"


@dataclass(frozen=True)
class _Regions:
    boxes: Boxes
    fitted: bool      # still to get its boxes again (segmentation, crop fit or zoom)


def window_px(grid) -> float:
    """A window's side in frame pixels (tiles are stretched by under half a tile)."""
    k = grid.window_tiles
    return float(min(grid.x_edges[k] - grid.x_edges[0], grid.y_edges[k] - grid.y_edges[0]))


def _to_host(maps: ScoreMaps):
    """All maps to numpy with a single device-to-host copy (one synchronisation)."""
    parts = [maps.relevance, maps.similarity, maps.probability]
    if maps.frame_scores is not None:
        parts.append(maps.frame_scores)
    if maps.fine is not None:
        parts.append(maps.fine.relevance)
    flat = torch.cat([p.float().reshape(-1) for p in parts]).cpu().numpy()
    ends = np.cumsum([p.numel() for p in parts])[:-1]
    pieces = [piece.reshape(p.shape) for piece, p in zip(np.split(flat, ends), parts)]
    relevance, similarity, probability = pieces[:3]
    frame_scores = pieces[3] if maps.frame_scores is not None else None
    fine = FineMap(pieces[-1], maps.fine.grid) if maps.fine is not None else None
    return relevance, similarity, probability, frame_scores, fine
