"""Tile grids: how a frame is cut into tiles and windows, and mapped back.

A grid covers the whole frame with ``rows x cols`` tiles.  Tile sizes are the
nominal ``tile_px`` stretched (by less than half a tile) so that the grid ends
exactly at the right and bottom edges: no strip of the frame is ignored and no
padding is encoded.  A window is ``window_tiles x window_tiles`` tiles; windows
start every ``stride_tiles`` tiles, plus one window flush with the last row and
column when the stride does not land there, so every tile is covered.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..config import ConfigError, DetectorConfig


@dataclass(frozen=True)
class TileGrid:
    """A grid of tiles over a ``frame_w x frame_h`` frame, with its windows."""

    frame_w: int
    frame_h: int
    rows: int
    cols: int
    window_tiles: int = 1
    stride_tiles: int = 1

    def __post_init__(self) -> None:
        if self.rows < 1 or self.cols < 1:
            raise ValueError(f"grid needs at least one tile (got {self.rows}x{self.cols})")
        if self.window_tiles > min(self.rows, self.cols):
            raise ValueError(f"window of {self.window_tiles} tiles does not fit a "
                             f"{self.cols}x{self.rows} grid")

    @cached_property
    def x_edges(self) -> np.ndarray:
        """Pixel x of each tile boundary, ``cols + 1`` values from 0 to frame_w."""
        return _edges(self.frame_w, self.cols)

    @cached_property
    def y_edges(self) -> np.ndarray:
        return _edges(self.frame_h, self.rows)

    @cached_property
    def window_rows(self) -> np.ndarray:
        """First tile row of each window row."""
        return window_starts(self.rows, self.window_tiles, self.stride_tiles)

    @cached_property
    def window_cols(self) -> np.ndarray:
        return window_starts(self.cols, self.window_tiles, self.stride_tiles)

    @property
    def num_windows(self) -> int:
        return len(self.window_rows) * len(self.window_cols)

    @cached_property
    def window_origins(self) -> np.ndarray:
        """(num_windows, 2) first (row, col) tile of each window, row-major."""
        rr, cc = np.meshgrid(self.window_rows, self.window_cols, indexing="ij")
        return np.stack([rr.ravel(), cc.ravel()], axis=1)

    @cached_property
    def coverage(self) -> np.ndarray:
        """(num_windows, rows * cols) float32: 1 where a window covers a tile."""
        k = self.window_tiles
        cover = np.zeros((self.num_windows, self.rows, self.cols), np.float32)
        for i, (r, c) in enumerate(self.window_origins):
            cover[i, r:r + k, c:c + k] = 1.0
        return cover.reshape(self.num_windows, -1)

    def tile_box(self, r0: int, c0: int, r1: int, c1: int) -> tuple[int, int, int, int]:
        """Pixel box [x1, y1, x2, y2) of tiles rows r0..r1, cols c0..c1 (inclusive)."""
        return (int(self.x_edges[c0]), int(self.y_edges[r0]),
                int(self.x_edges[c1 + 1]), int(self.y_edges[r1 + 1]))

    def window_boxes(self) -> np.ndarray:
        """(num_windows, 4) pixel box of every window, in window order."""
        k = self.window_tiles
        return np.array([self.tile_box(r, c, r + k - 1, c + k - 1)
                         for r, c in self.window_origins], np.int64)


def _edges(length_px: int, count: int) -> np.ndarray:
    return np.round(np.arange(count + 1) * (length_px / count)).astype(np.int64)


def window_starts(tiles: int, window: int, stride: int) -> np.ndarray:
    """Window start indices along one axis; the last window is flush with the end."""
    starts = list(range(0, tiles - window + 1, stride))
    if starts[-1] + window < tiles:
        starts.append(tiles - window)
    return np.asarray(starts, np.int64)


def grid_for_frame(frame_w: int, frame_h: int, config: DetectorConfig) -> TileGrid:
    """The tile grid a detector config gives for a frame size.

    Raises ConfigError (naming the key) when the window does not fit the grid.
    """
    if config.tile_px == "auto":
        tile_px = min(frame_w, frame_h) / config.tiles_per_side
    else:
        tile_px = float(config.tile_px)
    rows = max(1, round(frame_h / tile_px))
    cols = max(1, round(frame_w / tile_px))
    k = config.window_tiles
    if config.tile_px == "auto":
        rows, cols = max(rows, k), max(cols, k)
    if k > min(rows, cols):
        raise ConfigError(
            f"detector.window_tiles: must be 1..{min(rows, cols)} for a {frame_w}x{frame_h} "
            f"frame cut into {cols}x{rows} tiles of {config.tile_px} px (got {k})")
    if config.stride_tiles > max(rows, cols):
        raise ConfigError(f"detector.stride_tiles: must be 1..{max(rows, cols)} for this "
                          f"frame (got {config.stride_tiles})")
    return TileGrid(frame_w, frame_h, rows, cols, k, config.stride_tiles)


def resized_tile_px(input_px: int, window_tiles: int) -> int:
    """Tile side, in resized pixels, that makes a window at least the model's input.

    When the input size is not a multiple of the window, windows come out up to
    ``window_tiles - 1`` pixels larger and are centre-cropped, as CLIP's own
    processor centre-crops.
    """
    return math.ceil(input_px / window_tiles)
