"""Box fitting: each coarse window region's box found again from crops around it.

A window region says *that* a prompt is in a part of the frame, not *how
far* it extends: every window holding the object scores high, so the region
is about a window wide whatever the object's size.  CLIP models trained only
on whole images (every public checkpoint) have patch tokens that localise
poorly, so the patch map cannot be trusted to outline it either.  What every
such model does reliably is score a crop: a crop that holds the whole object
scores about as high as a larger one, and the score falls once the crop is
smaller than the object and cuts it.  So, per candidate:

1. centre: one crop of 1.2 windows around the region's centre, encoded whole
   and with a growing share of it hidden from each side in turn; hiding costs
   nothing until the mask reaches the object, so each side's fall point is an
   edge, found for each side on its own, and the middle of opposite edges is
   the centre (the edges land inside the object, alike on opposite sides);
2. size: square crops of decreasing size around that centre; the object's
   side is where the score has fallen a set share of the way from its best
   to the frame's background level (interpolated between two crop sizes),
   a little enlarged, since a crop cut slightly inside the object still
   scores nearly as high;
3. gate: the best probability among the crops that hold the object (the
   prompt against the other prompts and the background prompts) must reach
   the gate, as the verify stage asks: the candidate is verified on crops
   that frame it, and reports that probability.

Each step is one batch of crops for all candidates of the frame.  Only the
relative shape of the score curve is used (no similarity level, no
temperature), so the rule holds for any checkpoint.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from .boxes import Boxes, merge_overlapping, merge_same, regions
from .methods import unit_scores
from .model import ClipModel
from .tiles import TileGrid

# Chosen on the tuning model models/contrastive-112-p16 only (docs/method.md);
# the held-out models never informed them.
TRIM_CROP = 1.2        # centre step: the crop's side, share of the window side
TRIMS = (0.0, 0.16, 0.32, 0.48, 0.64)   # centre step: shares of the crop hidden from each side
TRIM_FALL = 0.2        # centre step: an edge is where the similarity has fallen this share
SIZES = (1.0, 0.71, 0.5, 0.35, 0.25)   # size step: crop sides, shares of the window side
FALL = 0.35            # the object's edge: the similarity has fallen this share of the way
GROW = 1.15            # a crop cut to a little inside the object still scores nearly as high


class _Fitter:
    """What both fitters share: the call, the crops' encoding and the frame's crop count."""

    def __init__(self, model: ClipModel, crops) -> None:
        self.model, self.crops = model, crops   # crops(pixels, squares) -> (N, 3, S, S)
        self.crops_last_frame = 0

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor, found: Boxes, window_px: float,
                 floor: np.ndarray, text: torch.Tensor, num_prompts: int, gate: float,
                 merge_iou: float) -> Boxes:
        """Every candidate region's box found again; `floor` holds each prompt's
        background similarity level in this frame."""
        self.crops_last_frame = 0
        if len(found.boxes) == 0:
            return found
        return self._fit(pixels, found, window_px, floor, text, num_prompts, gate, merge_iou)

    def _encode(self, pixels: torch.Tensor, squares: np.ndarray, text: torch.Tensor,
                num_prompts: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(similarities, probabilities) of each square crop against every prompt."""
        return self._encode_crops(self.crops(pixels, squares), text, num_prompts)

    def _encode_crops(self, crops: torch.Tensor, text: torch.Tensor, num_prompts: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        self.crops_last_frame += len(crops)
        embeddings = self.model.encode_images(crops, bucket=True)
        return unit_scores(embeddings, text, num_prompts, self.model.logit_scale)


class BoxFitter(_Fitter):
    """Fits every candidate's box with two batches of crops (centre, then size)."""

    def _fit(self, pixels, found, window_px, floor, text, num_prompts, gate, merge_iou):
        centres = (found.boxes[:, :2] + found.boxes[:, 2:]) / 2
        labels = found.label_ids
        centres = self._centres(pixels, centres, window_px, labels, floor, text, num_prompts)
        sides, probs, sims = self._sizes(pixels, centres, window_px, labels, floor, text,
                                         num_prompts)
        boxes = np.concatenate([centres - sides[:, None] / 2, centres + sides[:, None] / 2], 1)
        frame_h, frame_w = pixels.shape[-2:]
        boxes = np.clip(boxes, 0, [frame_w, frame_h, frame_w, frame_h]).astype(np.float32)
        keep = probs >= gate
        return merge_same(Boxes(boxes[keep], probs[keep], sims[keep], labels[keep]), merge_iou)

    def _scores(self, pixels, squares: np.ndarray, labels: np.ndarray, text, num_prompts):
        """(probability, similarity) of each crop for its own candidate's prompt."""
        sims, probs = self._encode(pixels, squares, text, num_prompts)
        rows = torch.arange(len(labels), device=sims.device)
        cols = torch.as_tensor(labels, device=sims.device)
        both = torch.stack([probs[rows, cols], sims[rows, cols]]).float().cpu().numpy()
        return both[0], both[1]

    def _centres(self, pixels, centres, window_px, labels, floor, text, num_prompts
                 ) -> np.ndarray:
        side = TRIM_CROP * window_px
        crops = self.crops(pixels, squares(centres, side))
        masks = trim_masks(crops.shape[-1], crops.device, crops.dtype)
        hidden = (crops[:, None] * masks[None]).reshape(-1, *crops.shape[1:])
        sims, _ = self._encode_crops(hidden, text, num_prompts)
        rows = torch.arange(len(hidden), device=sims.device) // len(masks)
        own = sims[torch.arange(len(hidden), device=sims.device),
                   torch.as_tensor(labels, device=sims.device)[rows]].float().cpu().numpy()
        edges = trim_edges(own.reshape(len(centres), len(masks)), floor[labels])
        return centres + side / 2 * (edges[:, :2] - edges[:, 2:])

    def _sizes(self, pixels, centres, window_px, labels, floor, text, num_prompts):
        sides = np.asarray(SIZES) * window_px
        points = np.repeat(centres, len(sides), axis=0)
        probs, sims = self._scores(pixels, squares(points, np.tile(sides, len(centres))),
                                   np.repeat(labels, len(sides)), text, num_prompts)
        probs, sims = probs.reshape(-1, len(sides)), sims.reshape(-1, len(sides))
        out_side, out_prob, out_sim = [], [], []
        for p, s, label in zip(probs, sims, labels):
            side, holding = object_side(sides, s, float(floor[label]))
            out_side.append(side * GROW)
            out_prob.append(p[holding].max())
            out_sim.append(s[holding].max())
        return np.array(out_side), np.array(out_prob, np.float32), np.array(out_sim, np.float32)


# Zoom (fit_mode zoom), chosen on the tuning model contrastive-112-p16 only (docs/method.md).
ZOOM_TILES = 6          # fine tiles per coarse window side: a fine tile is 1/6 window
ZOOM_WINDOW_TILES = 3   # a fine window is 3 fine tiles: half the coarse window
ZOOM_CONTEXT_TILES = 3  # fine tiles of context around each candidate region (less: worse)
ZOOM_THRESHOLD = 0.75   # cut on the region's normalised fine map


class ZoomFitter(_Fitter):
    """Coarse to fine: the walkthrough's windows again, at half the window size and
    a sixth of its stride, only around each candidate region.

    The fine windows inside each candidate's region (grown by ZOOM_CONTEXT_TILES)
    are encoded in one batch; per prompt, each fine tile gets the mean score of
    the windows that covered it, normalised over that prompt's areas, cut at
    ZOOM_THRESHOLD; each connected part whose best covering window reaches the
    gate is a box.  The context matters: the normalisation needs background
    around the object, and a coarse region may sit off its object.
    """

    def _fit(self, pixels, found, window_px, floor, text, num_prompts, gate, merge_iou):
        # `floor` is not needed: each prompt's areas are normalised on their own.
        grid, windows = _fine_layout(pixels.shape[-1], pixels.shape[-2], window_px / ZOOM_TILES)
        inside = _windows_inside(windows, found.boxes, ZOOM_CONTEXT_TILES * window_px / ZOOM_TILES)
        chosen = np.flatnonzero(inside.any(0))
        if len(chosen) == 0:
            return found
        sims, probs = self._scores(pixels, windows[chosen], text, num_prompts)
        cover = grid.coverage[chosen]
        out = []
        for label in np.unique(found.label_ids):
            mine = inside[found.label_ids == label].any(0)[chosen]
            items = _fine_boxes(grid, cover[mine], sims[mine, label], probs[mine, label], gate)
            out += [(b, p, s, label) for b, p, s in merge_overlapping(items, merge_iou)]
        return Boxes.from_items(out)

    def _scores(self, pixels, windows: np.ndarray, text, num_prompts):
        """(W, prompts) similarities and probabilities, in one copy to the host."""
        centres = (windows[:, :2] + windows[:, 2:]) / 2
        side = np.minimum(windows[:, 2] - windows[:, 0], windows[:, 3] - windows[:, 1])
        sims, probs = self._encode(pixels, squares(centres, side), text, num_prompts)
        both = torch.stack([sims, probs]).float().cpu().numpy()
        return both[0], both[1]


@functools.lru_cache(maxsize=8)
def _fine_layout(frame_w: int, frame_h: int, tile_px: float) -> tuple[TileGrid, np.ndarray]:
    """The zoom's fine grid and its windows' pixel boxes; cached, so they and the
    grid's coverage are built once per frame size, not once per frame."""
    k = ZOOM_WINDOW_TILES
    grid = TileGrid(frame_w, frame_h, max(k, round(frame_h / tile_px)),
                    max(k, round(frame_w / tile_px)), k, 1)
    windows = grid.window_boxes().astype(float)
    windows.flags.writeable = False     # shared between calls
    return grid, windows


def _windows_inside(windows: np.ndarray, boxes: np.ndarray, pad_px: float) -> np.ndarray:
    """(boxes, windows) whether each window lies inside each box grown by pad_px."""
    areas = boxes.astype(float) + np.array([-pad_px, -pad_px, pad_px, pad_px]) + [-2, -2, 2, 2]
    return ((windows[None, :, 0] >= areas[:, None, 0]) & (windows[None, :, 1] >= areas[:, None, 1])
            & (windows[None, :, 2] <= areas[:, None, 2]) & (windows[None, :, 3] <= areas[:, None, 3]))


def _fine_boxes(grid: TileGrid, cover: np.ndarray, sims: np.ndarray, probs: np.ndarray,
                gate: float) -> list[tuple[np.ndarray, float, float]]:
    """One prompt's boxes from its chosen fine windows: (W, tiles) coverage, (W,) scores."""
    counts = cover.sum(0)
    covered = counts > 0
    means = (sims @ cover)[covered] / counts[covered]
    shifted = np.clip(means - means.mean(), 0.0, None)      # the walkthrough's normalisation
    if shifted.max() - shifted.min() <= 1e-12:
        return []
    norm = np.zeros(len(counts))
    norm[covered] = (shifted - shifted.min()) / (shifted.max() - shifted.min())
    best_prob = np.where(cover > 0, probs[:, None], 0.0).max(0)
    best_sim = np.where(cover > 0, sims[:, None], -1.0).max(0)
    items = []
    for region in regions((norm >= ZOOM_THRESHOLD).reshape(grid.rows, grid.cols)):
        flat = region.ravel()
        probability = float(best_prob[flat].max())
        if probability < gate:
            continue
        rows, cols = np.nonzero(region)
        box = grid.tile_box(rows.min(), cols.min(), rows.max(), cols.max())
        items.append((np.array(box, np.float32), probability, float(best_sim[flat].max())))
    return items


def object_side(sides: np.ndarray, sims: np.ndarray, floor: float) -> tuple[float, np.ndarray]:
    """The object's side from the similarities of concentric crops (largest first),
    and which crops hold it.

    Going down in size, the object's side is where the similarity has fallen
    FALL of the way from the best crop's to `floor`, interpolated in log-size
    between the two crops around that point; no fall: the smallest crop.
    """
    at = fall_index(sims, floor, FALL)
    steps = np.arange(len(sides))
    return float(np.exp(np.interp(at, steps, np.log(sides)))), steps <= at


def fall_index(sims: np.ndarray, floor: float, fall: float) -> float:
    """Going on from the best of `sims`, the (fractional) index where they have
    fallen `fall` of the way from the best to `floor`; no fall: the last index."""
    best = sims.max()
    level = best - fall * max(best - floor, 1e-6)
    for i in range(int(np.argmax(sims)) + 1, len(sims)):
        if sims[i] < level:
            return i - 1 + float((sims[i - 1] - level) / max(sims[i - 1] - sims[i], 1e-9))
    return float(len(sims) - 1)


def trim_masks(size_px: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1 + 4 (T - 1), 1, S, S): the whole crop, then TRIMS[1:] of it hidden from the
    left, the top, the right and the bottom.  Hidden is zero after normalising:
    the dataset's mean colour, as outside the frame."""
    return _trim_masks(size_px, TRIMS, device, dtype)


@functools.lru_cache(maxsize=8)
def _trim_masks(size_px: int, trims: tuple[float, ...], device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    # cached on the device: built and uploaded once, not once per frame
    hidden = [np.ones((size_px, size_px), np.float32)]
    for side in range(4):                       # left, top, right, bottom
        for share in trims[1:]:
            mask = np.ones((size_px, size_px), np.float32)
            view = np.rot90(mask, side)         # hide the first columns of the rotated view
            view[:, :round(share * size_px)] = 0.0
            hidden.append(mask)
    return torch.from_numpy(np.stack(hidden)[:, None]).to(device, dtype)


def trim_edges(sims: np.ndarray, floor: np.ndarray) -> np.ndarray:
    """(N, 1 + 4 (T - 1)) similarities of the trimmed crops (trim_masks' order) ->
    (N, 4) left, top, right and bottom edges, as shares of the crop hidden from that
    side when the similarity has fallen TRIM_FALL of the way to `floor`.

    Hiding the crop from one side costs nothing until the mask reaches the object,
    then the similarity falls: each side's fall point finds that side's edge on its
    own, so the centre does not depend on the crop being centred.  CLIP still
    knows a half-hidden shape, so the edges land inside the object, but alike on
    opposite sides: their middle is the object's centre, not its extent.
    """
    count = len(TRIMS) - 1
    out = np.empty((len(sims), 4))
    for n, (row, level) in enumerate(zip(sims, floor)):
        for side in range(4):
            curve = np.concatenate([row[:1], row[1 + side * count:1 + (side + 1) * count]])
            out[n, side] = np.interp(fall_index(curve, float(level), TRIM_FALL),
                                     np.arange(len(TRIMS)), TRIMS)
    return out


def squares(centres: np.ndarray, side) -> np.ndarray:
    """(N, 4) integer squares of `side` (one or per centre) around (N, 2) centres."""
    half = np.broadcast_to(np.asarray(side, float), (len(centres),)) / 2
    x0, y0 = np.round(centres[:, 0] - half), np.round(centres[:, 1] - half)
    size = np.maximum(np.round(2 * half), 1)
    return np.stack([x0, y0, x0 + size, y0 + size], 1).astype(np.int64)
