"""Localisation methods: a frame on the device in, per-prompt score maps out.

Each method turns a (1, 3, H, W) RGB frame and the cached text embeddings
(the prompts first, then the background prompts) into :class:`ScoreMaps`
over a :class:`TileGrid` of the frame.  The maps then go through the same
map-to-boxes step, whatever made them.

- windows:   the walkthrough's sliding windows, all encoded in one batch.
- dense:     one pass over the whole frame, one embedding per patch (MaskCLIP).
- occlusion: the drop in similarity when each cell of the frame is masked.
- classify:  whole-frame zero-shot classification, no maps to speak of.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..config import DetectorConfig
from .frames import (aspect_input_size, centre_crop_square, crop_windows, normalise, resize)
from .model import ClipModel, check_memory, element_bytes, image_bytes
from .tiles import TileGrid, grid_for_frame, resized_tile_px


@dataclass(frozen=True)
class Encoded:
    """What a method's vision pass made of one frame, before any prompt is known.

    `arrays` maps a name ("windows", "patches", "fine", ...) to (N, D) unit-norm
    embeddings; with the frame size and the detector config they are all that
    scoring needs, so they can be stored (archive index) and scored later
    against prompts that did not exist when the frame was seen.
    """

    frame_w: int
    frame_h: int
    arrays: dict[str, torch.Tensor]


@dataclass(frozen=True)
class ScoreMaps:
    """Per-prompt maps over a grid of the frame, each (prompts, rows, cols).

    `relevance` is what gets normalised and thresholded into regions;
    `similarity` the raw cosine similarity a region reports; `probability`
    the gate's probability (prompt against other prompts and background).
    For windows and dense, relevance is the similarity itself.
    """

    grid: TileGrid
    relevance: torch.Tensor
    similarity: torch.Tensor
    probability: torch.Tensor
    frame_scores: torch.Tensor | None = None
    fine: "ScoreMaps | None" = None   # windows with refine: the dense patch maps


def unit_scores(embeddings: torch.Tensor, text: torch.Tensor, num_prompts: int,
                logit_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) cosine similarities to the prompts and their gate probabilities.

    The probability is CLIP's own softmax, at the model's own temperature, over
    the prompts plus the background prompts: quantities every CLIP checkpoint
    is calibrated for, unlike a fixed similarity cut-off.
    """
    similarities = embeddings @ text.T
    probabilities = torch.softmax(logit_scale * similarities, dim=1)
    return similarities[:, :num_prompts], probabilities[:, :num_prompts]


class Method:
    """A localisation method: `embed` (the vision pass, prompt-free) then `score`.

    `LAYOUT_KEYS` name the config fields that shape what `embed` returns:
    embeddings made under another value of any of them cannot be scored.
    """

    LAYOUT_KEYS: tuple[str, ...] = ()

    def layout(self) -> dict:
        """What `embed`'s arrays depend on besides the model (stored beside them)."""
        return {"method": self.config.method,
                **{key: getattr(self.config, key) for key in self.LAYOUT_KEYS}}

    def __call__(self, pixels: torch.Tensor, text: torch.Tensor, num_prompts: int) -> ScoreMaps:
        return self.score(self.embed(pixels), text, num_prompts)

    def embed(self, pixels: torch.Tensor) -> Encoded:
        raise NotImplementedError

    def score(self, encoded: Encoded, text: torch.Tensor, num_prompts: int) -> ScoreMaps:
        raise NotImplementedError


class WindowsMethod(Method):
    """Sliding windows of k x k tiles, cut from one resized frame, encoded in one batch."""

    LAYOUT_KEYS = ("tile_px", "tiles_per_side", "window_tiles", "stride_tiles", "refine",
                   "refine_input_px")

    def __init__(self, model: ClipModel, config: DetectorConfig) -> None:
        self.model, self.config = model, config
        self._plans: dict[tuple[int, int], _WindowPlan] = {}
        self._fine = None
        self.use_fine = True    # off where the detector fits boxes by crops instead
        if config.refine:
            short = config.refine_input_px
            # MaskCLIP's value path: the variant the bundled model was trained for
            # and the one its outlines were measured with (docs/method.md).
            self._fine = DenseMethod(model, dataclasses.replace(config, dense_variant="maskclip"),
                                     2 * model.spec.image_px if short == "auto" else short)

    def layout(self) -> dict:
        # whether patch maps are stored, not the setting: refine auto resolves at load
        return {**super().layout(), "refine": self._fine is not None and self.use_fine}

    def check_frame_size(self, frame_h: int, frame_w: int) -> None:
        """ConfigError when frames of this size do not fit the layout or the memory budget."""
        self.plan(frame_h, frame_w)
        if self._fine is not None:
            self._fine.check_frame_size(frame_h, frame_w)

    def plan(self, frame_h: int, frame_w: int) -> "_WindowPlan":
        key = (frame_h, frame_w)
        if key not in self._plans:
            grid = grid_for_frame(frame_w, frame_h, self.config)
            _check_window_memory(self.model, grid)
            self._plans = {key: _WindowPlan.build(grid, self.model.spec.image_px,
                                                  self.model.device)}
        return self._plans[key]

    def embed(self, pixels: torch.Tensor) -> Encoded:
        frame_h, frame_w = pixels.shape[-2:]
        plan = self.plan(frame_h, frame_w)
        spec = self.model.spec
        image = normalise(resize(pixels, plan.resized_h, plan.resized_w, spec), spec)
        # Cast before the gather: the crops (k^2 / stride^2 times the frame) are
        # copied in the model's dtype, half the bytes in bf16.
        crops = crop_windows(image.to(self.model.dtype), plan.rows_idx, plan.cols_idx)
        arrays = {"windows": self.model.encode_images(crops)}
        if self._fine is not None and self.use_fine:
            arrays["fine"] = self._fine.embed(pixels).arrays["patches"]
        return Encoded(frame_w, frame_h, arrays)

    def score(self, encoded: Encoded, text: torch.Tensor, num_prompts: int) -> ScoreMaps:
        plan = self.plan(encoded.frame_h, encoded.frame_w)
        sims, probs = unit_scores(encoded.arrays["windows"], text, num_prompts,
                                  self.model.logit_scale)
        sim_map = plan.tile_means(sims)
        fine = None
        if self._fine is not None and "fine" in encoded.arrays:
            patches = Encoded(encoded.frame_w, encoded.frame_h,
                              {"patches": encoded.arrays["fine"]})
            fine = self._fine.score(patches, text, num_prompts)
        return ScoreMaps(plan.grid, sim_map, sim_map, plan.tile_maxima(probs), fine=fine)


def _check_window_memory(model: ClipModel, grid: TileGrid) -> None:
    """The plan's window-tile coverage (host and device), the resized frame (float32,
    normalised, cast) and all window crops are in memory at once; the encoder then
    splits its batches to the budget."""
    item, side = element_bytes(model), model.spec.image_px
    tile = resized_tile_px(side, grid.window_tiles)
    coverage = 2 * 4 * grid.num_windows * grid.rows * grid.cols
    frame = 3 * grid.rows * tile * grid.cols * tile * (8 + item)
    crops = grid.num_windows * 3 * side * side * item
    check_memory(model, coverage + frame + crops, "detector.tile_px",
                 f"cutting {grid.num_windows} windows from a {grid.frame_w}x{grid.frame_h} "
                 "frame", "a larger --tile-px or --stride-tiles, or --method dense, fits it")


def _check_occlusion_memory(model: ClipModel, grid: TileGrid, in_h: int, in_w: int) -> None:
    """One mask and one masked copy of the whole input per cell are made at once."""
    cells = grid.rows * grid.cols
    need = cells * in_h * in_w * 4 + (cells + 1) * 3 * in_h * in_w * (8 + element_bytes(model))
    check_memory(model, need, "detector.occlusion_cells",
                 f"masking {cells} cells ({grid.cols}x{grid.rows}) of a {in_w}x{in_h} input "
                 f"for a {grid.frame_w}x{grid.frame_h} frame",
                 "occlusion suits frames near square; fewer --occlusion-cells, a smaller "
                 "--dense-input-px, or --method dense or windows fits it")


@dataclass(frozen=True)
class _WindowPlan:
    grid: TileGrid
    resized_h: int
    resized_w: int
    rows_idx: torch.Tensor     # (N, S) resized-pixel rows of each window crop
    cols_idx: torch.Tensor
    coverage: torch.Tensor     # (N, rows * cols) window-covers-tile
    counts: torch.Tensor       # (rows * cols,) windows per tile
    pair_windows: torch.Tensor  # (P,) window of each (window, covered tile) pair
    pair_tiles: torch.Tensor    # (P,) tile of each pair

    @classmethod
    def build(cls, grid: TileGrid, input_px: int, device: torch.device) -> "_WindowPlan":
        tile = resized_tile_px(input_px, grid.window_tiles)
        offset = (grid.window_tiles * tile - input_px) // 2   # centre crop when k*tile > S
        span = torch.arange(input_px)
        origins = torch.as_tensor(grid.window_origins)
        rows_idx = origins[:, :1] * tile + offset + span
        cols_idx = origins[:, 1:] * tile + offset + span
        coverage = torch.as_tensor(grid.coverage)
        pair_windows, pair_tiles = coverage.nonzero(as_tuple=True)
        return cls(grid, grid.rows * tile, grid.cols * tile, rows_idx.to(device),
                   cols_idx.to(device), coverage.to(device), coverage.sum(0).to(device),
                   pair_windows.to(device), pair_tiles.to(device))

    def tile_means(self, values: torch.Tensor) -> torch.Tensor:
        """(N, K) per-window values -> (K, rows, cols) mean over covering windows.

        The walkthrough's scores / runs, as one matrix product.
        """
        means = (values.T @ self.coverage) / self.counts
        return means.view(-1, self.grid.rows, self.grid.cols)

    def tile_maxima(self, values: torch.Tensor) -> torch.Tensor:
        """(N, K) per-window values -> (K, rows, cols) max over covering windows.

        The gate reads the best window touching a region: an object well
        inside the frame is fully seen by few of the windows over it, and a
        mean would dilute that evidence with the windows that cut it.
        """
        out = values.new_zeros(values.shape[1], self.grid.rows * self.grid.cols)
        src = values.T[:, self.pair_windows]
        index = self.pair_tiles.expand_as(src)
        out.scatter_reduce_(1, index, src, reduce="amax", include_self=False)
        return out.view(-1, self.grid.rows, self.grid.cols)


class DenseMethod(Method):
    """One vision pass over the whole frame; every patch token scored (MaskCLIP)."""

    LAYOUT_KEYS = ("dense_input_px", "dense_variant")

    def __init__(self, model: ClipModel, config: DetectorConfig,
                 input_px: int | None = None) -> None:
        self.model, self.config = model, config
        short = config.dense_input_px if input_px is None else input_px
        self.input_px = model.spec.image_px if short == "auto" else short
        self._key = "detector.dense_input_px" if input_px is None else "detector.refine_input_px"

    def check_frame_size(self, frame_h: int, frame_w: int) -> None:
        """ConfigError when one pass over a frame of this size exceeds the memory budget."""
        self.input_size(frame_h, frame_w)

    def input_size(self, frame_h: int, frame_w: int) -> tuple[int, int]:
        """The model input for a frame; ConfigError when one pass exceeds the budget."""
        in_h, in_w = aspect_input_size(frame_h, frame_w, self.input_px, self.model.spec.patch_px)
        check_memory(self.model, image_bytes(self.model, in_h, in_w), self._key,
                     f"one {in_w}x{in_h} pass over a {frame_w}x{frame_h} frame",
                     f"a smaller --{self._key.split('.')[1].replace('_', '-')} fits it")
        return in_h, in_w

    def embed(self, pixels: torch.Tensor) -> Encoded:
        frame_h, frame_w = pixels.shape[-2:]
        spec = self.model.spec
        in_h, in_w = self.input_size(frame_h, frame_w)
        image = normalise(resize(pixels, in_h, in_w, spec), spec)
        patches = self.model.patch_embeddings(image, self.config.dense_variant)
        return Encoded(frame_w, frame_h, {"patches": patches})

    def score(self, encoded: Encoded, text: torch.Tensor, num_prompts: int) -> ScoreMaps:
        frame_w, frame_h, spec = encoded.frame_w, encoded.frame_h, self.model.spec
        in_h, in_w = self.input_size(frame_h, frame_w)
        sims, probs = unit_scores(encoded.arrays["patches"], text, num_prompts,
                                  self.model.logit_scale)
        rows, cols = in_h // spec.patch_px, in_w // spec.patch_px
        grid = TileGrid(frame_w, frame_h, rows, cols)
        sim_map = sims.T.reshape(-1, rows, cols)
        return ScoreMaps(grid, sim_map, sim_map, probs.T.reshape(-1, rows, cols))


class OcclusionMethod(Method):
    """Mask each cell of the frame in turn (all copies in one batch) and measure
    how much each prompt's similarity drops: the cells it depends on."""

    LAYOUT_KEYS = ("dense_input_px", "occlusion_cells")

    def __init__(self, model: ClipModel, config: DetectorConfig) -> None:
        self.model, self.config = model, config
        self._dense = DenseMethod(model, config)   # same input size rule
        self._masks: dict[tuple, tuple[TileGrid, torch.Tensor]] = {}

    def check_frame_size(self, frame_h: int, frame_w: int) -> None:
        """ConfigError when the masked copies of such a frame exceed the memory budget."""
        self._cell_masks(frame_h, frame_w, *self._dense.input_size(frame_h, frame_w))

    def _cell_masks(self, frame_h: int, frame_w: int, in_h: int, in_w: int):
        key = (frame_h, frame_w, in_h, in_w)
        if key not in self._masks:
            cells = self.config.occlusion_cells
            tile = min(frame_h, frame_w) / cells
            grid = TileGrid(frame_w, frame_h, max(1, round(frame_h / tile)),
                            max(1, round(frame_w / tile)))
            _check_occlusion_memory(self.model, grid, in_h, in_w)
            keep = torch.ones(grid.rows * grid.cols, 1, in_h, in_w)
            ys = (grid.y_edges * in_h / frame_h).round().astype(int)
            xs = (grid.x_edges * in_w / frame_w).round().astype(int)
            for i in range(grid.rows * grid.cols):
                r, c = divmod(i, grid.cols)
                keep[i, :, ys[r]:ys[r + 1], xs[c]:xs[c + 1]] = 0.0
            self._masks = {key: (grid, keep.to(self.model.device))}
        return self._masks[key]

    def embed(self, pixels: torch.Tensor) -> Encoded:
        frame_h, frame_w = pixels.shape[-2:]
        spec = self.model.spec
        in_h, in_w = self._dense.input_size(frame_h, frame_w)
        image = normalise(resize(pixels, in_h, in_w, spec), spec)
        _, keep = self._cell_masks(frame_h, frame_w, in_h, in_w)
        # Zero after normalisation is the dataset mean colour: a neutral mask.
        batch = torch.cat([image, image * keep])
        masked = self.model.encode_images(batch, any_size=True)
        return Encoded(frame_w, frame_h, {"masked": masked})

    def score(self, encoded: Encoded, text: torch.Tensor, num_prompts: int) -> ScoreMaps:
        in_h, in_w = self._dense.input_size(encoded.frame_h, encoded.frame_w)
        grid, _ = self._cell_masks(encoded.frame_h, encoded.frame_w, in_h, in_w)
        sims, probs = unit_scores(encoded.arrays["masked"], text, num_prompts,
                                  self.model.logit_scale)
        drop = (sims[:1] - sims[1:]).T.reshape(-1, grid.rows, grid.cols)
        whole = lambda v: v[0].view(-1, 1, 1).expand_as(drop)
        return ScoreMaps(grid, drop, whole(sims), whole(probs))


class ClassifyMethod(Method):
    """Whole-frame zero-shot classification: softmax over the prompts only."""

    def __init__(self, model: ClipModel, config: DetectorConfig) -> None:
        self.model, self.config = model, config

    def embed(self, pixels: torch.Tensor) -> Encoded:
        spec = self.model.spec
        image = normalise(centre_crop_square(pixels, spec.image_px, spec), spec)
        embedding = self.model.encode_images(image)
        return Encoded(pixels.shape[-1], pixels.shape[-2], {"frame": embedding})

    def score(self, encoded: Encoded, text: torch.Tensor, num_prompts: int) -> ScoreMaps:
        sims = (encoded.arrays["frame"] @ text[:num_prompts].T)[0]
        scores = torch.softmax(self.model.logit_scale * sims, dim=0)
        grid = TileGrid(encoded.frame_w, encoded.frame_h, 1, 1)
        cell = lambda v: v.view(-1, 1, 1)
        return ScoreMaps(grid, cell(sims), cell(sims), cell(scores), frame_scores=scores)


METHOD_CLASSES = {"windows": WindowsMethod, "dense": DenseMethod,
                  "occlusion": OcclusionMethod, "classify": ClassifyMethod}


def make_method(model: ClipModel, config: DetectorConfig):
    return METHOD_CLASSES[config.method](model, config)
