"""Synthetic scenes of coloured shapes on muted, textured backgrounds.

The scenes serve three purposes:

* the live demo (``python main.py --demo``) renders a :class:`MovingScene`
  at 30 fps, so rendering a 640x480 frame takes a few milliseconds;
* tests generate frames and videos with exact ground truth;
* ``tools/train_shapes_clip.py`` trains the offline CLIP model on crops of
  :func:`random_scene` frames.

Conventions
-----------
Frames are BGR ``uint8`` arrays of shape ``(height, width, 3)``.  A box is
``[x1, y1, x2, y2]`` in integer pixel coordinates with *exclusive* right and
bottom edges (pixel ``i`` spans ``[i, i + 1)``), so ``x2 - x1`` is the box
width.  It is the tight box of every pixel the shape drew on (anti-aliased
edge pixels included).  Shape colours are saturated; background colours are
kept to a low saturation so a background never looks like a shape colour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Sequence

import cv2
import numpy as np

__all__ = [
    "SHAPES",
    "COLORS",
    "BACKGROUND_STYLES",
    "DEFAULT_MAX_ANGLE",
    "caption",
    "all_captions",
    "Shape",
    "Scene",
    "make_background",
    "render_shapes",
    "random_shapes",
    "random_scene",
    "MovingScene",
    "Actor",
    "ScriptedFrame",
    "ScriptedScene",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

# BGR; hues are far apart (red 0, orange 30, yellow 60, green 120, blue 220,
# purple 285 degrees) and all are fully saturated.
COLORS: Mapping[str, tuple[int, int, int]] = MappingProxyType(
    {
        "red": (40, 30, 225),
        "orange": (0, 140, 255),
        "yellow": (20, 230, 240),
        "green": (40, 190, 30),
        "blue": (230, 90, 20),
        "purple": (200, 40, 150),
    }
)

BACKGROUND_STYLES: tuple[str, ...] = ("noise", "stripes", "gradient", "checker", "blobs")

_SHIFT = 4  # sub-pixel bits for cv2 drawing
_SCALE = 1 << _SHIFT
_STAR_INNER = 0.45  # inner/outer radius of the five-pointed star
_MAX_BG_SATURATION = 0.22
DEFAULT_MAX_ANGLE = 15.0  # shapes stand upright, tilted by at most this (degrees)


def caption(kind: str, color: str) -> str:
    """The canonical prompt for a shape, e.g. ``caption("circle", "red")`` -> ``"a red circle"``."""
    if kind not in SHAPES:
        raise ValueError(f"unknown shape {kind!r}; expected one of {SHAPES}")
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; expected one of {tuple(COLORS)}")
    return f"a {color} {kind}"


def all_captions() -> tuple[str, ...]:
    """Every canonical caption, colour-major (``"a red circle"``, ``"a red square"``, ...)."""
    return tuple(caption(kind, color) for color in COLORS for kind in SHAPES)


@dataclass(frozen=True)
class Shape:
    """One shape: ``size`` is the diameter of its circumscribed circle in pixels,
    ``angle`` its rotation in degrees (counter-clockwise on screen)."""

    kind: str
    color: str
    cx: float
    cy: float
    size: float
    angle: float = 0.0

    def __post_init__(self) -> None:
        caption(self.kind, self.color)  # validates kind and colour
        if not self.size > 0:
            raise ValueError(f"shape size must be positive, got {self.size}")

    @property
    def caption(self) -> str:
        return caption(self.kind, self.color)

    @property
    def radius(self) -> float:
        return self.size / 2.0


@dataclass(frozen=True)
class Scene:
    """A rendered frame with its ground truth.

    ``boxes`` is an ``(N, 4)`` int32 array (see the module docstring),
    ``labels[i]`` the caption of ``shapes[i]``.  ``index_map`` (only when
    asked for) is an ``(H, W)`` int8 array holding, per pixel, the index of the
    shape that covers at least half of it, or -1 for background.
    """

    frame: np.ndarray
    boxes: np.ndarray
    labels: tuple[str, ...]
    shapes: tuple[Shape, ...]
    index_map: np.ndarray | None = field(default=None, repr=False)

    @property
    def prompts(self) -> tuple[str, ...]:
        """The distinct captions present, in order of first appearance."""
        return tuple(dict.fromkeys(self.labels))


# --------------------------------------------------------------------------- backgrounds


def _muted_color(rng: np.random.Generator) -> np.ndarray:
    """A random low-saturation BGR colour as float32."""
    hsv = np.array(
        [[[rng.uniform(0, 180), rng.uniform(0, _MAX_BG_SATURATION) * 255, rng.uniform(45, 215)]]],
        dtype=np.float32,
    )
    hsv_u8 = np.clip(hsv, 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv_u8, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _coords(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    ys = np.arange(height, dtype=np.float32)[:, None]
    xs = np.arange(width, dtype=np.float32)[None, :]
    return xs, ys


def _texture_noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    cell = rng.uniform(8, 48)
    small = rng.random((max(2, int(height / cell)), max(2, int(width / cell))), dtype=np.float32)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def _texture_stripes(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    xs, ys = _coords(height, width)
    theta = rng.uniform(0, math.pi)
    period = rng.uniform(0.04, 0.25) * min(height, width)
    phase = (xs * math.cos(theta) + ys * math.sin(theta)) * (2 * math.pi / period)
    wave = 0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * math.pi))
    return (wave > 0.5).astype(np.float32) if rng.random() < 0.5 else wave


def _texture_gradient(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    xs, ys = _coords(height, width)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = xs * math.cos(theta) + ys * math.sin(theta)
    lo, hi = float(ramp.min()), float(ramp.max())
    return (ramp - lo) / max(hi - lo, 1e-6)


def _texture_checker(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    cell = rng.uniform(0.05, 0.2) * min(height, width)
    cols = (np.arange(width) / cell).astype(np.int32)
    rows = (np.arange(height) / cell).astype(np.int32)
    return ((rows[:, None] ^ cols[None, :]) & 1).astype(np.float32)


def _texture_blobs(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    scale = 4
    h, w = max(8, height // scale), max(8, width // scale)
    canvas = np.full((h, w), rng.random(), dtype=np.float32)
    for _ in range(int(rng.integers(6, 20))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        radius = int(rng.uniform(0.05, 0.3) * min(h, w)) + 1
        cv2.circle(canvas, centre, radius, float(rng.random()), -1)
    sigma = 0.06 * min(h, w)
    canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    return cv2.resize(canvas, (width, height), interpolation=cv2.INTER_LINEAR)


_TEXTURES = {
    "noise": _texture_noise,
    "stripes": _texture_stripes,
    "gradient": _texture_gradient,
    "checker": _texture_checker,
    "blobs": _texture_blobs,
}


def make_background(
    rng: np.random.Generator, width: int, height: int, style: str | None = None
) -> np.ndarray:
    """A muted, textured BGR uint8 background; ``style`` defaults to a random one of
    :data:`BACKGROUND_STYLES`."""
    style = style if style is not None else str(rng.choice(BACKGROUND_STYLES))
    if style not in _TEXTURES:
        raise ValueError(f"unknown background style {style!r}; expected one of {BACKGROUND_STYLES}")
    texture = _TEXTURES[style](rng, height, width)
    low, high = _muted_color(rng), _muted_color(rng)
    # low + texture * (high - low) is never negative, so convertScaleAbs is a
    # saturating multiply-add straight to uint8
    channels = [cv2.convertScaleAbs(texture, alpha=float(h - l), beta=float(l)) for l, h in zip(low, high)]
    image = cv2.merge(channels)
    amplitude = int(rng.integers(0, 9))
    if amplitude:
        grain = rng.integers(0, 2 * amplitude + 1, size=(height, width), dtype=np.uint8)
        grain = cv2.merge([grain, grain, grain])
        image = cv2.subtract(cv2.add(image, grain), (amplitude, amplitude, amplitude, 0))
    return image


# --------------------------------------------------------------------------- shapes


def _outline(shape: Shape) -> np.ndarray:
    """Polygon vertices (float, pixels) of a non-circular shape."""
    corners = {"square": 4, "triangle": 3, "star": 10}[shape.kind]
    radii = np.full(corners, shape.radius)
    if shape.kind == "star":
        radii[1::2] *= _STAR_INNER
    # start pointing up; screen y grows downwards so a positive angle turns CCW
    theta = np.deg2rad(shape.angle) + np.pi / 2 + 2 * np.pi * np.arange(corners) / corners
    if shape.kind == "square":
        theta += np.pi / 4  # axis-aligned at angle 0
    return np.stack([shape.cx + radii * np.cos(theta), shape.cy - radii * np.sin(theta)], axis=1)


def _draw_mask(shape: Shape, x0: int, y0: int, width: int, height: int) -> np.ndarray:
    """Anti-aliased coverage mask (uint8, 0..255) of ``shape`` in the window at (x0, y0)."""
    mask = np.zeros((height, width), dtype=np.uint8)
    if shape.kind == "circle":
        centre = (round((shape.cx - x0) * _SCALE), round((shape.cy - y0) * _SCALE))
        cv2.circle(mask, centre, round(shape.radius * _SCALE), 255, -1, cv2.LINE_AA, _SHIFT)
    else:
        points = np.round((_outline(shape) - (x0, y0)) * _SCALE).astype(np.int32)
        cv2.fillPoly(mask, [points], 255, cv2.LINE_AA, shift=_SHIFT)
    return mask


def _window(shape: Shape, width: int, height: int) -> tuple[int, int, int, int]:
    """The frame region (x0, y0, x1, y1) that can hold the shape's pixels, clipped."""
    reach = shape.radius + 2
    x0 = max(0, math.floor(shape.cx - reach))
    y0 = max(0, math.floor(shape.cy - reach))
    x1 = min(width, math.ceil(shape.cx + reach) + 1)
    y1 = min(height, math.ceil(shape.cy + reach) + 1)
    return x0, y0, x1, y1


def _tight_box(mask: np.ndarray, x0: int, y0: int) -> list[int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return [x0, y0, x0, y0]
    return [x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1]


def _composite(frame: np.ndarray, shape: Shape) -> tuple[list[int], tuple[int, int, np.ndarray]]:
    """Blend one shape into ``frame`` in place; returns its box and (x0, y0, mask)."""
    height, width = frame.shape[:2]
    x0, y0, x1, y1 = _window(shape, width, height)
    if x1 <= x0 or y1 <= y0:
        return [x0, y0, x0, y0], (x0, y0, np.zeros((0, 0), np.uint8))
    mask = _draw_mask(shape, x0, y0, x1 - x0, y1 - y0)
    alpha = mask.astype(np.float32)[..., None] * (1.0 / 255.0)
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    colour = np.asarray(COLORS[shape.color], dtype=np.float32)
    frame[y0:y1, x0:x1] = (roi + alpha * (colour - roi) + 0.5).astype(np.uint8)
    return _tight_box(mask, x0, y0), (x0, y0, mask)


def render_shapes(
    background: np.ndarray, shapes: Sequence[Shape], with_index_map: bool = False
) -> Scene:
    """Draw ``shapes`` (in order, later ones on top) onto a copy of ``background``."""
    frame = np.ascontiguousarray(background, dtype=np.uint8).copy()
    index_map = np.full(frame.shape[:2], -1, dtype=np.int8) if with_index_map else None
    boxes = []
    for i, shape in enumerate(shapes):
        box, (x0, y0, mask) = _composite(frame, shape)
        boxes.append(box)
        if index_map is not None and mask.size:
            roi = index_map[y0 : y0 + mask.shape[0], x0 : x0 + mask.shape[1]]
            roi[mask >= 128] = i
    return Scene(
        frame=frame,
        boxes=np.asarray(boxes, dtype=np.int32).reshape(-1, 4),
        labels=tuple(s.caption for s in shapes),
        shapes=tuple(shapes),
        index_map=index_map,
    )


# --------------------------------------------------------------------------- random scenes


def _pick_captions(
    rng: np.random.Generator, n: int, duplicate: bool
) -> list[tuple[str, str]]:
    """``n`` distinct (kind, colour) pairs; with ``duplicate`` the second repeats the first."""
    pairs = [(kind, color) for color in COLORS for kind in SHAPES]
    n_distinct = n - 1 if duplicate and n >= 2 else n
    if n_distinct > len(pairs):
        raise ValueError(f"at most {len(pairs)} distinct captions, asked for {n_distinct}")
    order = rng.permutation(len(pairs))[:n_distinct]
    chosen = [pairs[i] for i in order]
    if duplicate and n >= 2:
        chosen.insert(1, chosen[0])
    return chosen


def _place(
    rng: np.random.Generator,
    width: int,
    height: int,
    size: float,
    placed: list[tuple[float, float, float]],
    gap: float,
) -> tuple[float, float] | None:
    """A centre for a circle of diameter ``size`` inside the frame, clear of ``placed``."""
    r = size / 2
    if 2 * r + 2 >= min(width, height):
        return None
    for _ in range(30):
        cx = rng.uniform(r + 1, width - r - 1)
        cy = rng.uniform(r + 1, height - r - 1)
        if all(math.hypot(cx - px, cy - py) >= r + pr + gap for px, py, pr in placed):
            return cx, cy
    return None


def random_shapes(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_shapes: int,
    *,
    size_range: tuple[float, float] = (0.10, 0.45),
    duplicate: bool = False,
    gap: float = 4.0,
    max_angle: float = DEFAULT_MAX_ANGLE,
) -> list[Shape]:
    """``n_shapes`` non-overlapping shapes fully inside a ``width`` x ``height`` frame.

    Sizes are drawn as fractions of the short side from ``size_range``; a shape
    that does not fit is shrunk until it does.  Captions are distinct, except
    that with ``duplicate`` (and ``n_shapes >= 2``) the first two shapes share
    one.  Angles are uniform in ``[-max_angle, max_angle]`` degrees.
    """
    short = min(width, height)
    shapes: list[Shape] = []
    placed: list[tuple[float, float, float]] = []
    for kind, color in _pick_captions(rng, n_shapes, duplicate):
        size = rng.uniform(*size_range) * short
        spot = None
        while spot is None:
            spot = _place(rng, width, height, size, placed, gap)
            if spot is None:
                size *= 0.85
                if size < 4:
                    raise ValueError(f"cannot fit {n_shapes} shapes into {width}x{height}")
        angle = rng.uniform(-max_angle, max_angle)
        shapes.append(Shape(kind, color, spot[0], spot[1], size, angle))
        placed.append((spot[0], spot[1], size / 2))
    return shapes


def random_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_shapes: int,
    *,
    size_range: tuple[float, float] = (0.10, 0.45),
    duplicate: bool = False,
    style: str | None = None,
    with_index_map: bool = False,
    max_angle: float = DEFAULT_MAX_ANGLE,
) -> Scene:
    """A random textured background with ``n_shapes`` non-overlapping shapes.

    See :func:`random_shapes` for ``size_range``, ``duplicate`` and ``max_angle``,
    and :func:`make_background` for ``style``.
    """
    background = make_background(rng, width, height, style)
    shapes = random_shapes(
        rng, width, height, n_shapes, size_range=size_range, duplicate=duplicate,
        max_angle=max_angle,
    )
    return render_shapes(background, shapes, with_index_map)


# --------------------------------------------------------------------------- moving scenes


def _bounce(start: float, velocity: float, low: float, high: float, t: float) -> float:
    """Position at time ``t`` of a point moving at ``velocity`` that reflects off [low, high]."""
    span = high - low
    if span <= 0:
        return (low + high) / 2
    offset = (start - low + velocity * t) % (2 * span)
    return low + (offset if offset <= span else 2 * span - offset)


@dataclass(frozen=True)
class _Track:
    """A shape moving with constant velocity inside its cell, bouncing off the walls,
    and rocking smoothly: angle(i) = tilt * sin(phase + rate * i)."""

    shape: Shape  # the shape at frame 0, angle aside
    cell: tuple[float, float, float, float]  # x0, y0, x1, y1 its centre may not leave
    velocity: tuple[float, float]  # px per frame
    tilt: float  # degrees
    rate: float  # radians per frame
    phase: float  # radians

    def at(self, i: int) -> Shape:
        r = self.shape.radius + 1
        x0, y0, x1, y1 = self.cell
        cx = _bounce(self.shape.cx, self.velocity[0], x0 + r, x1 - r, i)
        cy = _bounce(self.shape.cy, self.velocity[1], y0 + r, y1 - r, i)
        angle = self.tilt * math.sin(self.phase + self.rate * i)
        s = self.shape
        return Shape(s.kind, s.color, cx, cy, s.size, angle)


def _grid(width: int, height: int, n: int) -> tuple[int, int]:
    """Columns and rows of a grid of at least ``n`` cells that are roughly square."""
    rows = max(1, min(n, round(math.sqrt(n * height / width))))
    cols = math.ceil(n / rows)
    return cols, rows


class MovingScene:
    """A deterministic animation of ``n_shapes`` shapes moving over a fixed background.

    Each shape moves smoothly within its own cell of a grid laid over the
    frame (so shapes never overlap and always stay fully inside the frame),
    bouncing off the cell walls, and rocks by up to ``max_angle`` degrees.
    ``frame(i)`` depends only on the constructor arguments and ``i``.
    """

    def __init__(
        self,
        width: int,
        height: int,
        n_shapes: int,
        seed: int,
        *,
        duplicate: bool = False,
        speed: float = 0.01,
        size_range: tuple[float, float] = (0.15, 0.35),
        style: str | None = None,
        max_angle: float = DEFAULT_MAX_ANGLE,
    ) -> None:
        """``speed`` is in short sides per frame; ``size_range`` in short sides."""
        if n_shapes < 1:
            raise ValueError("a moving scene needs at least one shape")
        self.width, self.height, self.n_shapes, self.seed = width, height, n_shapes, seed
        rng = np.random.default_rng(seed)
        self._background = make_background(rng, width, height, style)
        self._background.setflags(write=False)
        self._tracks = self._make_tracks(rng, duplicate, speed, size_range, max_angle)

    def _make_tracks(
        self,
        rng: np.random.Generator,
        duplicate: bool,
        speed: float,
        size_range: tuple[float, float],
        max_angle: float,
    ) -> tuple[_Track, ...]:
        cols, rows = _grid(self.width, self.height, self.n_shapes)
        cell_w, cell_h = self.width / cols, self.height / rows
        short = min(self.width, self.height)
        cells = rng.permutation(cols * rows)[: self.n_shapes]
        tracks = []
        for (kind, color), cell in zip(_pick_captions(rng, self.n_shapes, duplicate), cells):
            x0, y0 = (cell % cols) * cell_w, (cell // cols) * cell_h
            size = min(rng.uniform(*size_range) * short, 0.8 * min(cell_w, cell_h) - 2)
            r = size / 2 + 1
            cx, cy = rng.uniform(x0 + r, x0 + cell_w - r), rng.uniform(y0 + r, y0 + cell_h - r)
            heading = rng.uniform(0, 2 * math.pi)
            velocity = (speed * short * math.cos(heading), speed * short * math.sin(heading))
            shape = Shape(kind, color, cx, cy, size)
            box = (x0, y0, x0 + cell_w, y0 + cell_h)
            tilt = rng.uniform(0.3, 1.0) * max_angle
            rate = 2 * math.pi / rng.uniform(60, 240)
            tracks.append(_Track(shape, box, velocity, tilt, rate, rng.uniform(0, 2 * math.pi)))
        return tuple(tracks)

    @property
    def background(self) -> np.ndarray:
        """The fixed background (read-only)."""
        return self._background

    @property
    def prompts(self) -> tuple[str, ...]:
        """The distinct captions of the shapes in the scene."""
        return tuple(dict.fromkeys(t.shape.caption for t in self._tracks))

    def shapes_at(self, i: int) -> tuple[Shape, ...]:
        """The shapes as they are in frame ``i``."""
        return tuple(track.at(i) for track in self._tracks)

    def frame(self, i: int, with_index_map: bool = False) -> Scene:
        """Frame ``i`` with its ground truth."""
        return render_shapes(self._background, self.shapes_at(i), with_index_map)


# --------------------------------------------------------------------------- scripted scenes


@dataclass(frozen=True)
class Actor:
    """A shape that follows a path: ``waypoints`` are ``(frame, cx, cy)``, sorted by frame.

    Between two waypoints the centre moves in a straight line; before the first
    and after the last the actor is not in the scene.  A centre outside the
    frame lets an actor enter or leave through an edge.  ``identity`` names the
    object across frames (ground truth for trackers).
    """

    identity: int
    kind: str
    color: str
    size: float
    waypoints: tuple[tuple[float, float, float], ...]
    tilt: float = 0.0

    def __post_init__(self) -> None:
        caption(self.kind, self.color)
        frames = [w[0] for w in self.waypoints]
        if len(frames) < 2 or frames != sorted(frames):
            raise ValueError("an actor needs at least two waypoints in frame order")

    @property
    def caption(self) -> str:
        return caption(self.kind, self.color)

    def at(self, i: int) -> Shape | None:
        """The shape in frame ``i``, or None while the actor is not in the scene."""
        frames = [w[0] for w in self.waypoints]
        if i < frames[0] or i > frames[-1]:
            return None
        cx = float(np.interp(i, frames, [w[1] for w in self.waypoints]))
        cy = float(np.interp(i, frames, [w[2] for w in self.waypoints]))
        angle = self.tilt * math.sin(0.05 * i + self.identity)
        return Shape(self.kind, self.color, cx, cy, self.size, angle)


@dataclass(frozen=True)
class ScriptedFrame:
    """A frame of a :class:`ScriptedScene` and its ground truth, per object in view.

    ``boxes`` are clipped to the frame; ``visible`` is the share of each
    object's full (unclipped) box that lies inside the frame, so an object half
    through an edge reads 0.5.  Occlusion by another shape does not lower it.
    """

    frame: np.ndarray
    boxes: np.ndarray            # (N, 4) int32
    labels: tuple[str, ...]
    identities: np.ndarray       # (N,) int64
    visible: np.ndarray          # (N,) float32


class ScriptedScene:
    """Actors moving over a fixed background along scripted paths (later actors on top).

    For evaluation clips: objects that enter, leave, cross and overlap, with the
    identity of every box known.  ``frame(i)`` depends only on the arguments and ``i``.
    """

    def __init__(self, width: int, height: int, actors: Sequence[Actor], seed: int,
                 style: str | None = None) -> None:
        self.width, self.height, self.actors = width, height, tuple(actors)
        self._background = make_background(np.random.default_rng(seed), width, height, style)
        self._background.setflags(write=False)

    @property
    def prompts(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(a.caption for a in self.actors))

    def frame(self, i: int) -> ScriptedFrame:
        present = [(a, a.at(i)) for a in self.actors]
        present = [(a, s) for a, s in present if s is not None]
        scene = render_shapes(self._background, [s for _, s in present])
        keep, visible = [], []
        for n, (box, (_, shape)) in enumerate(zip(scene.boxes, present)):
            share = _inside_share(shape, self.width, self.height)
            if box[2] > box[0] and box[3] > box[1] and share > 0:
                keep.append(n)
                visible.append(share)
        return ScriptedFrame(
            frame=scene.frame,
            boxes=scene.boxes[keep].reshape(-1, 4),
            labels=tuple(scene.labels[n] for n in keep),
            identities=np.array([present[n][0].identity for n in keep], np.int64),
            visible=np.array(visible, np.float32),
        )


def _inside_share(shape: Shape, width: int, height: int) -> float:
    """Share of the shape's circumscribed square that lies inside the frame."""
    r = shape.radius
    x0, x1 = max(0.0, shape.cx - r), min(float(width), shape.cx + r)
    y0, y1 = max(0.0, shape.cy - r), min(float(height), shape.cy + r)
    if x1 <= x0 or y1 <= y0:
        return 0.0
    return float((x1 - x0) * (y1 - y0) / (4 * r * r))
