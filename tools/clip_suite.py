"""Evaluation clips: moving shapes with per-frame ground truth boxes and identities.

Six kinds of clip, each a :class:`realtime.scenes.ScriptedScene` at 15 fps:

- ``single``: one shape drifting across a 640x480 frame;
- ``two-classes``: two shapes of different captions;
- ``twins``: two instances of one caption beside a third shape;
- ``enter-leave``: a shape enters through the left edge and leaves through the
  right; another leaves through the top and comes back;
- ``overlap``: two shapes whose paths cross, one drawn over the other;
- ``hd``: 1280x720 with three shapes of 10, 25 and 40 % of the short side.

Objects are 10-40 % of the short side.  Captions, colours, paths and
backgrounds come from the seed; every clip also names two absent prompts, one
of them sharing a colour with a present shape (the hard case).  Used by
``tools/evaluate_clips.py`` (detection quality through the real app) and by
the tracking evaluator; tests import it like any tool.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime.scenes import COLORS, SHAPES, Actor, ScriptedFrame, ScriptedScene, caption  # noqa: E402

FPS = 15.0
KINDS = ("single", "two-classes", "twins", "enter-leave", "overlap", "hd")


@dataclass(frozen=True)
class Clip:
    name: str
    scene: ScriptedScene
    frames: int
    absent: tuple[str, ...]
    fps: float = FPS

    @property
    def present(self) -> tuple[str, ...]:
        return self.scene.prompts

    @property
    def prompts(self) -> tuple[str, ...]:
        return self.present + self.absent

    def frame(self, i: int) -> ScriptedFrame:
        return self.scene.frame(i)

    def truth(self) -> Iterator[ScriptedFrame]:
        for i in range(self.frames):
            yield self.frame(i)


def _captions(rng: np.random.Generator, n: int) -> list[tuple[str, str]]:
    """``n`` distinct (kind, colour) pairs with distinct colours (a colour names one shape)."""
    colours = rng.permutation(list(COLORS))[:n]
    kinds = rng.permutation(SHAPES)[:n]
    return [(str(k), str(c)) for k, c in zip(kinds, colours)]


def _absent(rng: np.random.Generator, present: list[tuple[str, str]]) -> tuple[str, ...]:
    """Two captions nowhere in the clip: one sharing a present shape's colour, one not."""
    used = {caption(k, c) for k, c in present}
    kind, colour = present[0]
    same_colour = caption(str(rng.choice([s for s in SHAPES if s != kind])), colour)
    others = [caption(s, c) for c in COLORS for s in SHAPES
              if c not in {p[1] for p in present} and caption(s, c) not in used]
    return same_colour, str(rng.choice(others))


def _line(frames: int, start: tuple[float, float], end: tuple[float, float],
          first: float = 0.0) -> tuple[tuple[float, float, float], ...]:
    return ((first, *start), (first + frames - 1, *end))


def make_clip(kind: str, seed: int = 0, frames: int = 45) -> Clip:
    """One clip of the suite; ``frames`` at 15 fps (45 = 3 s)."""
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    width, height = (1280, 720) if kind == "hd" else (640, 480)
    short = min(width, height)
    n = {"single": 1, "two-classes": 2, "twins": 2, "enter-leave": 2, "overlap": 2, "hd": 3}[kind]
    pairs = _captions(rng, n)
    if kind == "twins":
        pairs = [pairs[0], pairs[0], pairs[1]]
    last = frames - 1
    jitter = lambda: rng.uniform(-0.05, 0.05) * short
    tilt = float(rng.uniform(0, 12))
    sizes, paths = _layout(kind, width, height, frames, jitter)
    actors = [Actor(i + 1, k, c, s * short, p, tilt)
              for i, ((k, c), s, p) in enumerate(zip(pairs, sizes, paths))]
    assert all(a.waypoints[-1][0] <= last for a in actors)
    scene = ScriptedScene(width, height, actors, seed=int(rng.integers(1 << 30)))
    return Clip(kind, scene, frames, _absent(rng, pairs))


def _layout(kind: str, w: int, h: int, frames: int, jitter):
    """Sizes (share of the short side) and waypoints of each actor of a clip kind."""
    n = frames
    if kind == "single":
        return [0.30], [_line(n, (0.3 * w + jitter(), 0.35 * h), (0.7 * w, 0.6 * h + jitter()))]
    if kind == "two-classes":
        return [0.25, 0.20], [_line(n, (0.2 * w, 0.3 * h + jitter()), (0.4 * w, 0.7 * h)),
                              _line(n, (0.8 * w, 0.7 * h), (0.65 * w + jitter(), 0.3 * h))]
    if kind == "twins":
        return [0.25, 0.25, 0.18], [_line(n, (0.18 * w, 0.3 * h), (0.3 * w, 0.7 * h + jitter())),
                                    _line(n, (0.5 * w, 0.7 * h), (0.55 * w + jitter(), 0.3 * h)),
                                    _line(n, (0.85 * w, 0.4 * h + jitter()), (0.82 * w, 0.6 * h))]
    if kind == "enter-leave":
        size_a, size_b = 0.25, 0.15
        ra, rb = size_a * min(w, h) / 2, size_b * min(w, h) / 2
        across = _line(n, (-ra, 0.6 * h + jitter()), (w + ra, 0.55 * h))
        third = (n - 1) / 3
        out_and_back = ((0, 0.25 * w, 0.3 * h), (third, 0.3 * w, -rb - 2),
                        (2 * third, 0.5 * w, -rb - 2), (n - 1, 0.55 * w, 0.3 * h))
        return [size_a, size_b], [across, out_and_back]
    if kind == "overlap":
        # paths cross a little off-centre: the shapes overlap partly, one over the other
        return [0.30, 0.25], [_line(n, (0.2 * w, 0.38 * h), (0.8 * w, 0.45 * h + jitter() / 2)),
                              _line(n, (0.8 * w, 0.62 * h + jitter() / 2), (0.2 * w, 0.55 * h))]
    if kind == "hd":
        return [0.10, 0.25, 0.40], [_line(n, (0.1 * w, 0.2 * h), (0.2 * w, 0.3 * h + jitter())),
                                    _line(n, (0.45 * w, 0.75 * h), (0.4 * w + jitter(), 0.65 * h)),
                                    _line(n, (0.75 * w, 0.45 * h + jitter()), (0.7 * w, 0.55 * h))]
    raise ValueError(f"unknown clip kind {kind!r} (allowed: {', '.join(KINDS)})")


def suite(seed: int = 0, frames: int = 45, kinds: tuple[str, ...] = KINDS) -> list[Clip]:
    return [make_clip(kind, seed, frames) for kind in kinds]


def write_clip(clip: Clip, path: Path) -> Path:
    """The clip as a video file (mp4v for .mp4, MJPG for .avi), as a user would record it."""
    fourcc = "MJPG" if path.suffix == ".avi" else "mp4v"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), clip.fps,
                             (clip.scene.width, clip.scene.height))
    if not writer.isOpened():
        raise OSError(f"cannot write {path}")
    for truth in clip.truth():
        writer.write(truth.frame)
    writer.release()
    return path
