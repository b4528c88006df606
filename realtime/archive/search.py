"""Searching an index: prompts in, ranked segments with boxes out.

1. Only the prompts are encoded (with the detector's background prompts).
2. Every stored frame is scored with one matrix product of the whole-frame
   embeddings and the texts: its probability for the prompt against the
   background prompts, at the model's temperature - the detector's gate,
   applied to the whole frame.  Each prompt is its own question: prompts of
   one search do not compete with each other.
3. Runs of frames of one video whose probability reaches the gate become
   segments (start, end, best frame).
4. At each kept segment's best frame the stored window/patch arrays go
   through ``Detector.detect_encoded``: the detector's own maps-to-boxes code
   and gate (verification, which needs pixels, aside).  With ``confirm`` a
   segment whose best frame the detector does not confirm is dropped.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import ArchiveConfig
from .store import FrameTable, load_arrays


@dataclass(frozen=True)
class Segment:
    """One stretch of one video where a prompt matches; times in seconds."""

    prompt: str
    video: str
    start_s: float
    end_s: float
    best_frame: int
    best_t: float
    score: float                    # whole-frame probability at the best frame
    box: list[float] | None         # [x1, y1, x2, y2] in frame pixels, the detector's best
    box_score: float | None         # that box's score, as main.py --detections reports it
    similarity: float | None
    frames: int                     # matching stored frames in the segment

    def to_record(self) -> dict:
        return asdict(self)


def frame_scores(embeddings: np.ndarray, text: np.ndarray, logit_scale: float) -> np.ndarray:
    """(N,) probability of text row 0 against the other rows (the background), per frame.

    softmax(scale * s)[0] = exp(-logsumexp(scale * (s - s0))), computed stably.
    """
    similarities = embeddings @ text.T                      # the one matrix product
    z = logit_scale * (similarities - similarities[:, :1])
    top = z.max(axis=1, keepdims=True)
    return np.exp(-(top[:, 0] + np.log(np.exp(z - top).sum(axis=1))))


def sample_periods(table: FrameTable) -> np.ndarray:
    """(N,) seconds between two samples of each frame's chunk."""
    per_chunk = np.array([1.0 / min(r["sample_fps"], r.get("decoded_fps") or r["fps"] or 1.0)
                          for r in table.rows] or [1.0])
    return per_chunk[table.chunk_ids]


def runs(table: FrameTable, match: np.ndarray, max_gap_s: float) -> list[np.ndarray]:
    """Table rows of each run of matching frames: one video, consecutive samples (or
    samples at most `max_gap_s` apart), never across a chunk missing from the index."""
    rows = np.flatnonzero(match)
    if rows.size == 0:
        return []
    gaps = np.diff(table.times[rows])
    adjacent = np.diff(rows) == 1
    step = sample_periods(table)[rows[1:]]
    joined = ((table.video_ids[rows[1:]] == table.video_ids[rows[:-1]])
              & (((adjacent & (gaps <= 1.5 * step)) | (gaps <= max_gap_s))))
    return np.split(rows, np.flatnonzero(~joined) + 1)


def search(table: FrameTable, detector, prompts: Sequence[str], config: ArchiveConfig,
           index_dir: Path) -> dict[str, list[Segment]]:
    """Ranked segments per prompt (best first, at most `config.top`; [] = nowhere)."""
    return {prompt: search_prompt(table, detector, prompt, config, index_dir)
            for prompt in prompts}


def search_prompt(table: FrameTable, detector, prompt: str, config: ArchiveConfig,
                  index_dir: Path) -> list[Segment]:
    if len(table.frames) == 0:
        return []
    text = detector.bank.with_background([prompt]).float().cpu().numpy()
    scores = frame_scores(table.embeddings, text, detector.model.logit_scale)
    found = runs(table, scores >= detector.config.gate, config.max_gap_s)
    best = [run[np.argmax(scores[run])] for run in found]
    order = sorted(range(len(found)), key=lambda i: (-scores[best[i]], -len(found[i])))
    detector.set_prompts([prompt])
    confirm = config.confirm and detector.config.method != "classify"
    segments = []
    with one_thread():
        for i in order:
            segment = _segment(table, detector, prompt, found[i], best[i], scores, index_dir)
            if confirm and segment.box is None:
                continue
            segments.append(segment)
            if config.top and len(segments) == config.top:
                break
    return segments


@contextlib.contextmanager
def one_thread():
    """Torch on one thread for the boxes: their tensors are tiny, and on a busy CPU
    waking a second thread costs more than the work (5x slower measured)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _segment(table: FrameTable, detector, prompt: str, run: np.ndarray, best: int,
             scores: np.ndarray, index_dir: Path) -> Segment:
    box = box_at(table, detector, best, index_dir)
    return Segment(prompt=prompt, video=table.videos[table.video_ids[best]],
                   start_s=round(float(table.times[run[0]]), 3),
                   end_s=round(float(table.times[run[-1]]), 3),
                   best_frame=int(table.frames[best]), best_t=round(float(table.times[best]), 3),
                   score=round(float(scores[best]), 4),
                   box=None if box is None else box[0],
                   box_score=None if box is None else box[1],
                   similarity=None if box is None else box[2], frames=len(run))


def box_at(table: FrameTable, detector, row: int, index_dir: Path):
    """The detector's best box of its (one) prompt on a stored frame, from the stored
    arrays: (box, score, similarity), or None when it finds none."""
    from ..engine.methods import Encoded

    frame_w, frame_h, arrays = load_arrays(index_dir, table.rows[table.chunk_ids[row]],
                                           int(table.positions[row]))
    found = detector.detect_encoded(Encoded(frame_w, frame_h, arrays), int(table.frames[row]),
                                    float(table.times[row]))
    if len(found) == 0:
        return None
    record = found.to_record()["detections"]
    top = max(record, key=lambda d: d["score"])
    return top["box"], top["score"], top["similarity"]
