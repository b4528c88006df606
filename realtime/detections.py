"""The result of one frame: boxes, scores and the score maps they came from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


def _empty(*shape: int, dtype=np.float32) -> np.ndarray:
    return np.zeros(shape, dtype)


@dataclass(frozen=True, eq=False)
class Detections:
    """Every region found in one frame, for every prompt.

    Arrays are indexed by detection; ``label_ids`` index ``labels``, which are
    the prompts exactly as given.  Boxes are ``[x1, y1, x2, y2]`` in source-
    frame pixels.  ``score_maps`` and ``similarity_maps`` are ``(prompts, rows,
    cols)`` over the frame (tile or patch cells); ``frame_scores`` holds the
    whole-frame classification probabilities when the method is classify.

    After tracking (realtime.track) ``track_ids`` holds each box's track ID,
    ``states`` "confirmed" (matched on this frame) or "coasting" (missed, shown
    where its velocity puts it) and ``velocities`` the px/s of each box's x1,
    y1, x2, y2; all three are None on untracked (raw) detections.
    """

    labels: tuple[str, ...]
    boxes: np.ndarray = field(default_factory=lambda: _empty(0, 4))
    scores: np.ndarray = field(default_factory=lambda: _empty(0))
    similarities: np.ndarray = field(default_factory=lambda: _empty(0))
    label_ids: np.ndarray = field(default_factory=lambda: _empty(0, dtype=np.int64))
    frame_index: int = 0
    timestamp_s: float = 0.0
    score_maps: np.ndarray = field(default_factory=lambda: _empty(0, 0, 0))
    similarity_maps: np.ndarray = field(default_factory=lambda: _empty(0, 0, 0))
    frame_scores: np.ndarray | None = None
    inference_ms: float = 0.0
    track_ids: np.ndarray | None = None
    states: np.ndarray | None = None
    velocities: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.boxes)
        if not (len(self.scores) == len(self.similarities) == len(self.label_ids) == n):
            raise ValueError("boxes, scores, similarities and label_ids must have equal length")
        for name in ("track_ids", "states", "velocities"):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"{name} must have one entry per box")

    @property
    def tracked(self) -> bool:
        """Whether these came out of a tracker (track_ids and states are set)."""
        return self.track_ids is not None

    def __len__(self) -> int:
        return len(self.boxes)

    def for_label(self, label: str) -> "Detections":
        """Only the detections of one prompt."""
        keep = self.label_ids == self.labels.index(label)
        pick = lambda a: None if a is None else a[keep]
        return Detections(self.labels, self.boxes[keep], self.scores[keep],
                          self.similarities[keep], self.label_ids[keep], self.frame_index,
                          self.timestamp_s, self.score_maps, self.similarity_maps,
                          self.frame_scores, self.inference_ms, pick(self.track_ids),
                          pick(self.states), pick(self.velocities))

    def to_record(self) -> dict[str, Any]:
        """The JSON Lines record of this frame (the documented schema)."""
        detections = [
            {"label": self.labels[int(i)],
             "box": [round(float(v), 1) for v in box],
             "score": round(float(score), 4),
             "similarity": round(float(sim), 4)}
            for box, score, sim, i in zip(self.boxes, self.scores, self.similarities,
                                          self.label_ids)
        ]
        if self.tracked:
            for detection, track_id, state in zip(detections, self.track_ids, self.states):
                detection.update(track_id=int(track_id), state=str(state))
        record: dict[str, Any] = {
            "frame": int(self.frame_index),
            "t": round(float(self.timestamp_s), 6),
            "detections": detections,
        }
        if self.frame_scores is not None:
            record["classification"] = [
                {"label": label, "score": round(float(p), 4)}
                for label, p in sorted(zip(self.labels, self.frame_scores),
                                       key=lambda lp: -lp[1])
            ]
        return record
