"""Box segmentation: each window region's box cut out of the frame's own pixels.

A window region says *that* a prompt is in a part of the frame, not *how far*
it extends, and a CLIP trained only on whole images (every public
checkpoint) cannot say it either: its patch tokens localise poorly, and its
score of a crop hardly changes while the crop still holds the object.  The
frame itself can: an object differs from what surrounds it.  So each region
is segmented with GrabCut (Rother et al. 2004; OpenCV's cv2.grabCut): the
region's box is the "may be object" rectangle, what lies outside it (up to
half a box side further on each side) is background, and colour models of both
are fitted and the pixels labelled in a few iterations.  Each sizeable part
of the object label becomes a box (a region that holds two instances of its
prompt gives two); the verify stage then asks CLIP about each box on its own
crop, so a part that is something else, or nothing, is dropped there.

This is host work on a small copy of the frame (SEGMENT_PX on the long
side): a few milliseconds a region on a CPU core, regions side by side on up
to MAX_THREADS cores, and no vision batch at all.  What
it assumes is that the object stands out from its surroundings in colour;
where it does not (a grey mug on a grey desk), the part found may grow into
its surroundings or shrink to a detail, which is why the box check
(realtime.engine.boxcheck) measures this way against the others when a model
loads, and `fit_mode` can name another.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from .boxes import Boxes, merge_same

# Set a priori (not tuned on any model): the copy's long side, GrabCut's
# iterations, and how much smaller than the largest part another part may be.
SEGMENT_PX = 96
ITERATIONS = 3
PART_SHARE = 0.25
MIN_RECT_PX = 4         # copy pixels: a thinner rectangle is left as it is, a thinner part dropped
MAX_THREADS = 4         # regions segmented at once
RNG_SEED = 0


class BoxSegmenter:
    """Cuts every candidate region's box(es) out of the frame with GrabCut."""

    def __call__(self, frame_bgr: np.ndarray, found: Boxes, window_px: float,
                 merge_iou: float) -> Boxes:
        """Each region, grown to at least a window's side, cut down to its object(s)."""
        cut = functools.partial(object_boxes, frame_bgr)
        rects = at_least(found.boxes, window_px, frame_bgr.shape[1], frame_bgr.shape[0])
        # OpenCV releases the GIL: regions are segmented side by side on the cores
        parts = list(_pool().map(cut, rects)) if len(rects) > 1 else [cut(r) for r in rects]
        items = [(part, prob, sim, label)
                 for boxes, prob, sim, label in zip(parts, found.probabilities,
                                                    found.similarities, found.label_ids)
                 for part in boxes]
        return merge_same(Boxes.from_items(items), merge_iou)


def at_least(boxes: np.ndarray, side_px: float, frame_w: int, frame_h: int) -> np.ndarray:
    """Boxes grown about their centres to at least `side_px` on each axis, inside the frame.

    A region can be narrower than its object (only a few tiles passed the cut),
    and GrabCut must see the object whole inside the rectangle: with the object's
    own colour in the band around it, only its outline would be labelled object.
    Every window that scored the prompt held the object, so a window's side holds it.
    """
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = np.maximum((boxes[:, 2:] - boxes[:, :2]) / 2, side_px / 2)
    return np.clip(np.concatenate([centres - half, centres + half], 1), 0,
                   [frame_w, frame_h, frame_w, frame_h]).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    """Worker threads shared by every segmenter, started on first use; they only run
    GrabCut calls and end with the interpreter."""
    return ThreadPoolExecutor(max_workers=min(MAX_THREADS, os.cpu_count() or 1),
                              thread_name_prefix="segment")


def object_boxes(frame_bgr: np.ndarray, box: np.ndarray) -> list[np.ndarray]:
    """The boxes of the object parts GrabCut finds inside `box` (frame pixels): none
    where nothing stands out from the surroundings, the box itself where it is
    too small to segment."""
    frame_h, frame_w = frame_bgr.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    # Background: up to half a box side beyond each edge, inside the frame.
    pad_x, pad_y = (x1 - x0) / 2, (y1 - y0) / 2
    left, top = max(0, int(x0 - pad_x)), max(0, int(y0 - pad_y))
    right, bottom = min(frame_w, int(np.ceil(x1 + pad_x))), min(frame_h, int(np.ceil(y1 + pad_y)))
    if right - left < 2 or bottom - top < 2:
        return [np.asarray(box, np.float32)]
    scale = min(1.0, SEGMENT_PX / max(right - left, bottom - top))
    small = cv2.resize(frame_bgr[top:bottom, left:right],
                       (max(2, round((right - left) * scale)), max(2, round((bottom - top) * scale))),
                       interpolation=cv2.INTER_AREA)
    rect = _rect_in(small.shape, ((x0 - left) * scale, (y0 - top) * scale,
                                  (x1 - left) * scale, (y1 - top) * scale))
    if rect is None:
        return [np.asarray(box, np.float32)]
    parts = _parts(small, rect)
    if not parts:       # nothing stands out there: a window region over background
        return []
    boxes = np.array([[left + px0 / scale, top + py0 / scale, left + px1 / scale,
                       top + py1 / scale] for px0, py0, px1, py1 in parts], np.float32)
    # A part that reaches the band at the frame's edge is an object the edge cuts.
    edge_px = 1.5 / scale       # the band's one copy pixel, and rounding
    for axis, low, high, size in ((0, left, right, frame_w), (1, top, bottom, frame_h)):
        if low == 0:
            boxes[boxes[:, axis] <= edge_px, axis] = 0.0
        if high == size:
            boxes[boxes[:, axis + 2] >= size - edge_px, axis + 2] = float(size)
    return list(boxes)


def _rect_in(shape, box) -> tuple[int, int, int, int] | None:
    """GrabCut's (x, y, w, h) rectangle, one pixel in from the copy's border: a band
    of background on every side, the frame's edges included (without it, a
    background that changes across the frame is taken for object along the edge);
    None when too small."""
    height, width = shape[:2]
    x0, y0 = max(1, int(round(box[0]))), max(1, int(round(box[1])))
    x1, y1 = min(width - 1, int(round(box[2]))), min(height - 1, int(round(box[3])))
    if x1 - x0 < MIN_RECT_PX or y1 - y0 < MIN_RECT_PX:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _parts(image: np.ndarray, rect: tuple[int, int, int, int]) -> list[tuple[int, int, int, int]]:
    """Boxes (x0, y0, x1, y1 in the copy) of the object label's connected parts of at
    least PART_SHARE of the largest part's area."""
    mask = np.zeros(image.shape[:2], np.uint8)
    background, foreground = np.zeros((1, 65)), np.zeros((1, 65))
    # GrabCut seeds its colour models by k-means from OpenCV's per-thread random
    # generator: seeded here, a region's boxes do not depend on earlier calls.
    cv2.setRNGSeed(RNG_SEED)
    try:
        cv2.grabCut(image, mask, rect, background, foreground, ITERATIONS,
                    cv2.GC_INIT_WITH_RECT)
    except cv2.error:           # a degenerate colour model: a flat copy, nothing in it
        return []
    found = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(found, connectivity=8)
    if count <= 1:
        return []
    # A part thinner than a few pixels of the copy is an outline or noise, not an
    # object: what GrabCut labels when the object's colour is also in the band
    # (a neighbour of that colour), or a texture's edge on plain background.
    solid = np.minimum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT]) >= MIN_RECT_PX
    areas = np.where(solid, stats[1:, cv2.CC_STAT_AREA], 0)
    if not areas.any():
        return []
    keep = np.flatnonzero(areas >= PART_SHARE * areas.max()) + 1
    return [(int(stats[i, 0]), int(stats[i, 1]), int(stats[i, 0] + stats[i, 2]),
             int(stats[i, 1] + stats[i, 3])) for i in keep]
