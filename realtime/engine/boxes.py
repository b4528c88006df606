"""Score maps to boxes: normalise, threshold, gate, connected components, merge.

Per prompt this follows the walkthrough - subtract the map's mean, clip at 0,
min-max to 0..1, keep cells >= threshold - and then goes further: every
connected region becomes its own box (several instances per prompt), and a
region is only reported when its probability against the other prompts and
the background prompts reaches the gate (an absent prompt yields nothing,
although the normalised map always has a maximum).

A window region is as large as a window even around a small object (every
window that contains the object scores high, so the mean over covering
windows spreads over a window's width).  With a fine map (the dense patch
map of the same frame) each gated region is outlined by the fine cells
above the threshold inside it; the windows still decide whether and where
a prompt is, the patches only say how far it extends.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..config import DetectorConfig
from .tiles import TileGrid


@dataclass(frozen=True)
class FineMap:
    relevance: np.ndarray     # (prompts, rows, cols) on `grid`, finer than the windows' tiles
    grid: TileGrid


@dataclass(frozen=True)
class Boxes:
    boxes: np.ndarray         # (N, 4) float32 x1, y1, x2, y2 in frame pixels
    probabilities: np.ndarray  # (N,) gate probability of the region
    similarities: np.ndarray  # (N,) raw cosine similarity of the region
    label_ids: np.ndarray     # (N,) int64

    @classmethod
    def from_items(cls, found: list) -> "Boxes":
        """From (box, probability, similarity, label_id) tuples; empty arrays if none."""
        if not found:
            return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32),
                       np.zeros(0, np.float32), np.zeros(0, np.int64))
        boxes, probs, sims, ids = zip(*found)
        return cls(np.stack(boxes).astype(np.float32), np.array(probs, np.float32),
                   np.array(sims, np.float32), np.array(ids, np.int64))


def normalise_map(score_map: np.ndarray) -> np.ndarray:
    """The walkthrough's normalisation: subtract the mean, clip at 0, min-max to 0..1."""
    shifted = np.clip(score_map - score_map.mean(), 0.0, None)
    low, high = shifted.min(), shifted.max()
    if high - low <= 1e-12:
        return np.zeros_like(score_map, dtype=np.float32)
    return ((shifted - low) / (high - low)).astype(np.float32)


def regions(mask: np.ndarray) -> list[np.ndarray]:
    """Boolean masks of the 4-connected regions of `mask`."""
    count, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=4)
    return [labels == i for i in range(1, count)]


def maps_to_boxes(relevance_maps: np.ndarray, similarity_maps: np.ndarray,
                  probability_maps: np.ndarray, grid: TileGrid, config: DetectorConfig,
                  threshold: float | None = None, fine: FineMap | None = None) -> Boxes:
    """Boxes for every prompt from its (rows, cols) maps.

    Regions come from the normalised relevance map; each reports the highest
    probability and similarity inside it.  With `fine`, each region's box is
    outlined by the fine map (see :func:`outline`).
    """
    threshold = config.threshold if threshold is None else threshold
    found: list[tuple[np.ndarray, float, float, int]] = []
    for label_id, (rel_map, sim_map, prob_map) in enumerate(
            zip(relevance_maps, similarity_maps, probability_maps)):
        per_label = []
        fine_mask = None if fine is None else normalise_map(fine.relevance[label_id]) >= threshold
        for region in regions(normalise_map(rel_map) >= threshold):
            if region.sum() < config.min_area_tiles:
                continue
            probability = float(prob_map[region].max())
            if probability < config.gate:
                continue
            rows, cols = np.nonzero(region)
            box = np.array(grid.tile_box(rows.min(), cols.min(), rows.max(), cols.max()),
                           np.float32)
            similarity = float(sim_map[region].max())
            outlined = [box] if fine is None else outline(box, fine_mask, fine.grid)
            per_label += [(b, probability, similarity) for b in outlined]
        found += [(b, p, s, label_id) for b, p, s in merge_overlapping(per_label,
                                                                       config.merge_iou)]
    return Boxes.from_items(found)


def outline(box: np.ndarray, fine_mask: np.ndarray, fine_grid: TileGrid,
            min_share: float = 0.25) -> list[np.ndarray]:
    """The boxes of the fine regions inside `box`, clipped to it; `[box]` if none.

    Fine regions smaller than `min_share` of the largest one inside the box
    are specks of noise, not instances.  Several remaining regions are several
    instances that one window region had merged.
    """
    x_mid = (fine_grid.x_edges[:-1] + fine_grid.x_edges[1:]) / 2
    y_mid = (fine_grid.y_edges[:-1] + fine_grid.y_edges[1:]) / 2
    inside = (((y_mid >= box[1]) & (y_mid <= box[3]))[:, None]
              & ((x_mid >= box[0]) & (x_mid <= box[2]))[None, :])
    parts = regions(fine_mask & inside)
    if not parts:
        return [box]
    largest = max(part.sum() for part in parts)
    out = []
    for part in parts:
        if part.sum() < min_share * largest:
            continue
        rows, cols = np.nonzero(part)
        cell_box = fine_grid.tile_box(rows.min(), cols.min(), rows.max(), cols.max())
        out.append(np.array([max(cell_box[0], box[0]), max(cell_box[1], box[1]),
                             min(cell_box[2], box[2]), min(cell_box[3], box[3])], np.float32))
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of [x1, y1, x2, y2] boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    ix = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    iy = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def greedy_pairs(iou: np.ndarray, least: float) -> list[tuple[int, int]]:
    """One-to-one (row, col) pairs with IoU >= least, best pairs first."""
    if iou.size == 0:
        return []
    rows, cols = np.nonzero(iou >= least)
    used_r, used_c, pairs = set(), set(), []
    for k in np.argsort(-iou[rows, cols], kind="stable"):
        r, c = int(rows[k]), int(cols[k])
        if r not in used_r and c not in used_c:
            used_r.add(r)
            used_c.add(c)
            pairs.append((r, c))
    return pairs


def merge_overlapping(items: list[tuple[np.ndarray, float, float]], iou: float
                      ) -> list[tuple[np.ndarray, float, float]]:
    """Merge boxes of one prompt that overlap more than `iou` (or nest) into their union.

    Separate regions can still have overlapping boxes (an L-shaped region
    next to a small one); one object should give one box.
    """
    items = sorted(items, key=lambda item: -item[1])
    merged = True
    while merged:
        merged = False
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                a, b = items[i][0], items[j][0]
                if box_iou(a, b) > iou or _nested(a, b):
                    union = np.array([min(a[0], b[0]), min(a[1], b[1]),
                                      max(a[2], b[2]), max(a[3], b[3])], np.float32)
                    items[i] = (union, max(items[i][1], items[j][1]),
                                max(items[i][2], items[j][2]))
                    del items[j]
                    merged = True
                    break
            if merged:
                break
    return items


def _nested(a: np.ndarray, b: np.ndarray) -> bool:
    inside = lambda p, q: p[0] >= q[0] and p[1] >= q[1] and p[2] <= q[2] and p[3] <= q[3]
    return inside(a, b) or inside(b, a)


def linear_scores(similarities: np.ndarray, low: float, high: float) -> np.ndarray:
    """The common heuristic percentage: similarity mapped linearly from [low, high] to [0, 1]."""
    return np.clip((similarities - low) / (high - low), 0.0, 1.0).astype(np.float32)


def merge_same(found: Boxes, merge_iou: float) -> Boxes:
    """Candidates of one prompt that fitted onto the same object: the most probable
    box stays (non-maximum suppression; a box nested in a kept one is the same object)."""
    order = np.argsort(-found.probabilities, kind="stable")
    kept: list[int] = []
    for i in order:
        same = [k for k in kept if found.label_ids[k] == found.label_ids[i]]
        if not any(box_iou(found.boxes[i], found.boxes[k]) > merge_iou
                   or _nested(found.boxes[i], found.boxes[k]) for k in same):
            kept.append(int(i))
    kept.sort()
    return Boxes(found.boxes[kept], found.probabilities[kept], found.similarities[kept],
                 found.label_ids[kept])

