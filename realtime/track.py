"""Tracking: per-frame detections in, the same objects with stable IDs out.

A :class:`Tracker` is fed one :class:`~realtime.detections.Detections` per
inference frame, in time order, and returns a ``Detections`` holding the
tracks to show, with ``track_ids``, ``states`` and ``velocities`` filled in.
Plain numpy; a frame of 20 boxes costs a few tenths of a millisecond.

Per prompt (a box never changes prompt; tracks are keyed by the label text,
so a prompt change keeps the tracks of the prompts that stay):

- association: greedy one-to-one matching on IoU between each track's box
  predicted at the frame's time and the frame's boxes, best pairs first,
  at least ``match_iou``; then, for what is left, a box whose centre lies
  inside the predicted box (and the other way round) is the same object, as
  a detector's box may jump by a grid cell between frames; then, for what is
  still left, a distance gate for an object that moved beyond its predicted
  box (a fast object, a slow detector, a new track that has no velocity yet):
  the nearest box, relative to the allowed distance, one to one, whose centre
  is within ``size * (gate_sizes + gate_sizes_per_s * dt) + gate_speed_share
  * speed * dt`` of the predicted centre (size the box's mean side, dt the
  seconds since the track's last match; the ``gate_sizes_per_s`` term only
  while the track has no velocity, after one match) and whose width and height
  are within ``gate_side_ratio`` of the track's;
- hysteresis: a track starts from a box scoring at least ``start_score`` and
  is shown once it has been matched on ``min_hits`` inference frames in a row
  (supervision's ``minimum_consecutive_frames``); a box scoring only
  ``keep_score`` keeps an existing track alive but never starts one (ByteTrack's
  low-score second chance); a shown track that is missed keeps being shown,
  moved along its velocity ("coasting"), until ``hold_s`` seconds have passed
  since it was last matched (``lost_track_buffer``, in seconds rather than
  frames so that it means the same at 5 and at 30 inference frames/s);
- smoothing: box and velocity by an alpha-beta filter (alpha = 1 -
  ``smoothing``: 0 shows the newest box, towards 1 steadier and slower to
  follow a change of size), the score by an exponential moving average with
  the same factor; a track's first matches use the larger gains of a
  least-squares line through its matches so far (the velocity is the first
  displacement at the second match; not from a box of another size, within
  ``gate_side_ratio``), so a fast object is followed without lag from its
  second frame;
- IDs count up from 1 and are never reused within a run (:meth:`Tracker.reset`
  restarts them).

Times are the source's (``Detections.timestamp_s``), not the wall clock.
:func:`advance` moves a tracked result's boxes to a later time: the render
loop uses it to draw frames captured between two inference results.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .detections import Detections
from .engine.boxes import greedy_pairs, iou_matrix

CONFIRMED, COASTING = "confirmed", "coasting"
MAX_HISTORY = 10_000        # tracks remembered for the run's summary (oldest forgotten)
MAX_AHEAD_S = 1.0           # boxes are moved along their velocity at most this far ahead
GATE_SIZES = 1.0            # the distance gate: object sizes a centre may be off its prediction,
GATE_SIZES_PER_S = 10.0     # and more per second since the track's last match,
GATE_SPEED_SHARE = 0.5      # and this share of the distance its estimated velocity covered then
GATE_SIDE_RATIO = 2.0       # a box more than this much wider/narrower or taller/shorter: not it


@dataclass(frozen=True)
class TrackSummary:
    """One track of a run: first shown, last matched (source seconds), and on how many
    inference frames it was shown."""

    track_id: int
    label: str
    first_s: float
    last_s: float
    frames: int

    def line(self) -> str:
        return (f"#{self.track_id} {self.label}: {self.first_s:.2f}-{self.last_s:.2f} s, "
                f"{self.frames} frames")


class _Track:
    """The state of one tracked object (mutable; owned by its Tracker)."""

    __slots__ = ("box", "confirmed", "hits", "label", "matched", "score", "seen_s",
                 "similarity", "track_id", "velocity")

    def __init__(self, track_id: int, label: str, box: np.ndarray, score: float,
                 similarity: float, t_s: float) -> None:
        self.track_id, self.label = track_id, label
        self.box = box.astype(np.float64)
        self.velocity = np.zeros(4)           # px/s of x1, y1, x2, y2
        self.score, self.similarity = score, similarity
        self.hits, self.confirmed = 1, False
        self.seen_s = t_s                     # source time of the box estimate (last match)
        self.matched = True                   # matched on the latest frame

    def predicted(self, t_s: float, max_ahead_s: float) -> np.ndarray:
        dt = min(max(t_s - self.seen_s, 0.0), max_ahead_s)
        return self.box + self.velocity * dt


class Tracker:
    """Stable IDs, hysteresis and smoothing over a stream of per-frame detections."""

    def __init__(self, min_hits: int = 2, hold_s: float = 0.3, start_score: float = 0.5,
                 keep_score: float = 0.5, smoothing: float = 0.7,
                 match_iou: float = 0.1, gate_sizes: float = GATE_SIZES,
                 gate_sizes_per_s: float = GATE_SIZES_PER_S,
                 gate_speed_share: float = GATE_SPEED_SHARE,
                 gate_side_ratio: float = GATE_SIDE_RATIO) -> None:
        if min_hits < 1 or hold_s < 0 or not 0 <= smoothing < 1 or not 0 < match_iou <= 1:
            raise ValueError("min_hits >= 1, hold_s >= 0, 0 <= smoothing < 1, "
                             "0 < match_iou <= 1")
        if min(gate_sizes, gate_sizes_per_s, gate_speed_share) < 0 or gate_side_ratio < 1:
            raise ValueError("gate_sizes, gate_sizes_per_s, gate_speed_share >= 0, "
                             "gate_side_ratio >= 1")
        self.min_hits, self.hold_s, self.match_iou = min_hits, hold_s, match_iou
        self.gate_sizes, self.gate_sizes_per_s = gate_sizes, gate_sizes_per_s
        self.gate_speed_share, self.gate_side_ratio = gate_speed_share, gate_side_ratio
        self.start_score, self.keep_score = start_score, min(keep_score, start_score)
        self.alpha = 1.0 - smoothing
        # Benedict-Bordner: the velocity gain that goes with alpha (no overshoot).
        self.beta = self.alpha * self.alpha / (2.0 - self.alpha)
        self._fast_matches = next(k for k in range(2, 10_000) if self._gains(k + 1) == (
            self.alpha, self.beta))   # the last match with gains above the steady ones
        self.reset()

    @classmethod
    def from_config(cls, config, start_score: float) -> Tracker:
        """From a :class:`realtime.config.TrackConfig`; `start_score` is the detector's gate."""
        return cls(min_hits=config.min_hits, hold_s=config.hold_s, start_score=start_score,
                   keep_score=config.keep_score, smoothing=config.smoothing,
                   match_iou=config.match_iou, gate_sizes=config.gate_sizes,
                   gate_sizes_per_s=config.gate_sizes_per_s)

    def reset(self) -> None:
        """Forget every track and restart the IDs at 1."""
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._last_s: float | None = None
        self._history: dict[int, list] = {}

    # -- the one call per frame ---------------------------------------------------

    def update(self, detections: Detections) -> Detections:
        """Match this frame's boxes to the tracks; the tracks to show at its time."""
        t_s = float(detections.timestamp_s)
        if self._last_s is not None and t_s < self._last_s:
            self._tracks = []   # the source's clock went back (a new timeline): start over
        self._last_s = t_s
        labels = detections.labels
        kept: list[_Track] = []
        for label_id, label in enumerate(labels):
            mine = np.flatnonzero(detections.label_ids == label_id)
            tracks = [t for t in self._tracks if t.label == label]
            kept += self._update_label(tracks, label, detections, mine, t_s)
        self._tracks = kept        # tracks of prompts no longer asked for are dropped
        return self._shown(detections, t_s)

    def _update_label(self, tracks: list[_Track], label: str, detections: Detections,
                      mine: np.ndarray, t_s: float) -> list[_Track]:
        boxes = detections.boxes[mine].astype(np.float64)
        scores = detections.scores[mine]
        predicted = np.array([t.predicted(t_s, self.hold_s) for t in tracks]).reshape(-1, 4)
        usable = scores >= self.keep_score
        pairs = _greedy(iou_matrix(predicted, boxes), self.match_iou, usable)
        # A second chance for what is left: a detector's box can jump by a grid cell
        # between frames; each centre inside the other's box is the same object.
        left_r = [r for r in range(len(tracks)) if r not in {p[0] for p in pairs}]
        left_c = [c for c in range(len(boxes)) if c not in {p[1] for p in pairs}]
        if left_r and left_c:
            near = _centres_inside(predicted[left_r], boxes[left_c])
            pairs += [(left_r[r], left_c[c]) for r, c in
                      _greedy(near, 1e-9, usable[left_c])]
        # A third chance, for an object that moved beyond its predicted box (a new track
        # has no velocity yet; a slow detector sees a fast object jump): the nearest box
        # of a similar size within a distance that grows with the object's size, the
        # time since the track was matched and its speed (see _gate).
        left_r = [r for r in range(len(tracks)) if r not in {p[0] for p in pairs}]
        left_c = [c for c in range(len(boxes)) if c not in {p[1] for p in pairs}]
        if left_r and left_c:
            closeness = self._gate([tracks[r] for r in left_r], predicted[left_r],
                                   boxes[left_c], t_s)
            closeness[:, ~usable[left_c]] = -1.0
            pairs += [(left_r[r], left_c[c]) for r, c in greedy_pairs(closeness, 0.0)]
        used = set()
        for t in tracks:
            t.matched = False
        for r, c in pairs:
            self._correct(tracks[r], boxes[c], float(scores[c]),
                          float(detections.similarities[mine[c]]), t_s)
            used.add(c)
        alive = [t for t in tracks if t.matched or (
            t.confirmed and t_s - t.seen_s <= self.hold_s)]   # a tentative miss ends it
        for c in range(len(boxes)):
            if c not in used and scores[c] >= self.start_score:
                alive.append(self._start(label, boxes[c], float(scores[c]),
                                         float(detections.similarities[mine[c]]), t_s))
        return alive

    def _gate(self, tracks: list[_Track], predicted: np.ndarray, boxes: np.ndarray,
              t_s: float) -> np.ndarray:
        """1 - (centre distance / allowed distance) per (track, box); -1 outside the gate.

        allowed = size * (gate_sizes + gate_sizes_per_s * dt [velocity unknown])
                  + gate_speed_share * speed * dt

        with size the mean side of the predicted box (px), dt the seconds since the
        track's last match and speed its centre's (px/s). The distance is from the
        predicted centre, so this bounds the prediction's error: a detector's box may be
        off by about the object's size whatever the time; a track matched only once has
        no velocity yet (0), so its object may have moved up to gate_sizes_per_s of its
        sizes a second; a track with a velocity may be off by a share of the distance
        it was moved along it (the estimate's error, a change of speed). A box whose
        width or height is more than gate_side_ratio times the track's (or less than
        1 / that) is another object whatever the distance.
        """
        dt = np.array([min(max(t_s - t.seen_s, 0.0), MAX_AHEAD_S) for t in tracks])
        unknown = np.array([t.hits == 1 for t in tracks], float)   # no velocity yet
        speed = np.array([np.hypot(*t.velocity[:2]) for t in tracks])
        sides_a = predicted[:, 2:] - predicted[:, :2]
        sides_b = boxes[:, 2:] - boxes[:, :2]
        size = sides_a.mean(axis=1)
        allowed = (size * (self.gate_sizes + self.gate_sizes_per_s * dt * unknown)
                   + self.gate_speed_share * speed * dt)
        centre_a = (predicted[:, :2] + predicted[:, 2:]) / 2
        centre_b = (boxes[:, :2] + boxes[:, 2:]) / 2
        distance = np.linalg.norm(centre_a[:, None] - centre_b[None], axis=2)
        ratio = np.maximum(sides_a[:, None], 1e-6) / np.maximum(sides_b[None], 1e-6)
        alike = np.all((ratio <= self.gate_side_ratio) & (ratio * self.gate_side_ratio >= 1),
                       axis=2)
        closeness = 1.0 - distance / np.maximum(allowed, 1e-9)[:, None]
        return np.where(alike & (closeness >= 0), closeness, -1.0)

    def _start(self, label: str, box: np.ndarray, score: float, similarity: float,
               t_s: float) -> _Track:
        track = _Track(self._next_id, label, box, score, similarity, t_s)
        self._next_id += 1
        track.confirmed = self.min_hits <= 1
        return track

    def _correct(self, track: _Track, box: np.ndarray, score: float, similarity: float,
                 t_s: float) -> None:
        """The alpha-beta step: predict to t_s, then move part way to the measured box.

        The velocity is the centre's (the same for x1 and x2, y1 and y2): extrapolated
        corners of a box whose size is noisy would turn it inside out while coasting.
        It starts at 0; the first matches use the gains of a least-squares line through
        the matches so far (:meth:`_gains`), so the second match sets it to the first
        displacement and a fast object is followed from then on, and the gains fall to
        the steady ones (alpha, beta) within about five matches. A box whose width or
        height differs from the prediction's by more than gate_side_ratio gets the steady
        gains: another crop of the object, its shift is no measure of the motion.
        """
        dt = t_s - track.seen_s
        predicted = track.box + track.velocity * dt if dt > 0 else track.box
        residual = box - predicted
        k = track.hits + 1
        alpha, beta = (self._gains(k) if k <= self._fast_matches and self._alike(predicted, box)
                       else (self.alpha, self.beta))
        if dt > 0:
            shift = (residual[:2] + residual[2:]) / 2          # of the centre
            track.velocity = track.velocity + beta * np.tile(shift, 2) / dt
        track.box = predicted + alpha * residual
        track.score += self.alpha * (score - track.score)
        track.similarity, track.seen_s, track.matched = similarity, t_s, True
        track.hits += 1
        track.confirmed = track.confirmed or track.hits >= self.min_hits

    def _alike(self, a: np.ndarray, b: np.ndarray) -> bool:
        """Whether boxes a and b are within gate_side_ratio of each other in width and height
        (else b is another crop of the object, and its shift no measure of the motion)."""
        r = self.gate_side_ratio
        return all(1 / r <= max(a[i + 2] - a[i], 1e-6) / max(b[i + 2] - b[i], 1e-6) <= r
                   for i in (0, 1))

    def _gains(self, k: int) -> tuple[float, float]:
        """The filter's (alpha, beta) for a track's k-th match (k >= 2).

        Those of a least-squares line through the k matches so far (the expanding-memory
        filter: 1 and 1 at the second match, so the velocity is the first displacement,
        then 5/6 and 1/2, 0.7 and 0.3, ...) until they fall to the steady gains.
        """
        return (max(self.alpha, 2.0 * (2 * k - 1) / (k * (k + 1))),
                max(self.beta, 6.0 / (k * (k + 1))))

    def _shown(self, detections: Detections, t_s: float) -> Detections:
        shown = [t for t in self._tracks if t.confirmed]
        shown.sort(key=lambda t: (detections.labels.index(t.label), t.track_id))
        for t in shown:
            self._remember(t, t_s)
        return _as_detections(detections, shown, t_s, self.hold_s)

    def _remember(self, track: _Track, t_s: float) -> None:
        entry = self._history.get(track.track_id)
        if entry is None:
            if len(self._history) >= MAX_HISTORY:
                self._history.pop(next(iter(self._history)))
            self._history[track.track_id] = [track.label, t_s, track.seen_s, 1]
        else:
            entry[2], entry[3] = track.seen_s, entry[3] + 1

    def summary(self) -> list[TrackSummary]:
        """Every track shown in this run (up to MAX_HISTORY, the newest), by ID."""
        return [TrackSummary(track_id, label, first, last, frames)
                for track_id, (label, first, last, frames) in sorted(self._history.items())]


def _as_detections(base: Detections, tracks: list[_Track], t_s: float,
                   max_ahead_s: float) -> Detections:
    n = len(tracks)
    boxes = np.array([t.box if t.matched else t.predicted(t_s, max_ahead_s)
                      for t in tracks], np.float32).reshape(n, 4)
    return replace(
        base,
        boxes=boxes,
        scores=np.array([t.score for t in tracks], np.float32),
        similarities=np.array([t.similarity for t in tracks], np.float32),
        label_ids=np.array([base.labels.index(t.label) for t in tracks], np.int64),
        track_ids=np.array([t.track_id for t in tracks], np.int64),
        states=np.array([CONFIRMED if t.matched else COASTING for t in tracks], dtype="<U9"),
        velocities=np.array([t.velocity for t in tracks], np.float32).reshape(n, 4),
    )


def advance(detections: Detections, t_s: float, max_ahead_s: float = MAX_AHEAD_S,
            frame_size: tuple[int, int] | None = None) -> Detections:
    """A tracked result's boxes moved along their velocities to time `t_s`.

    For the frames shown between two inference results: at most `max_ahead_s`
    past the result's own time (a stalled detector must not fling boxes off),
    and kept inside a ``(width, height)`` frame when given.  Untracked
    results (no velocities) come back unchanged.
    """
    if detections.velocities is None or len(detections) == 0:
        return detections
    dt = min(max(t_s - detections.timestamp_s, 0.0), max_ahead_s)
    if dt == 0.0:
        return detections
    boxes = detections.boxes + detections.velocities * dt
    if frame_size is not None:
        width, height = frame_size
        boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
        boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return replace(detections, boxes=boxes.astype(np.float32))


def _centres_inside(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the pairs whose centres each lie inside the other box, else 0."""
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    inside = lambda c, box: ((c[:, None, 0] >= box[None, :, 0]) & (c[:, None, 0] <= box[None, :, 2])
                             & (c[:, None, 1] >= box[None, :, 1]) & (c[:, None, 1] <= box[None, :, 3]))
    mutual = inside(ca, b) & inside(cb, a).T
    return np.where(mutual, np.maximum(iou_matrix(a, b), 1e-6), 0.0)


def _greedy(iou: np.ndarray, least: float, usable: np.ndarray) -> list[tuple[int, int]]:
    """One-to-one (row, col) pairs with IoU >= least, best first; only `usable` columns."""
    return greedy_pairs(np.where(usable[None, :], iou, 0.0), least)
