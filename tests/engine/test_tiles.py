import numpy as np
import pytest

from realtime.config import ConfigError, DetectorConfig
from realtime.engine.tiles import TileGrid, grid_for_frame, window_starts


@pytest.mark.parametrize("size, tile, window, expected_grid, expected_windows", [
    ((1280, 720), 80, 4, (9, 16), 13 * 6),      # the GPU benchmark layout: 78 windows
    ((1280, 720), 160, 2, (4, 8), 7 * 3),       # the CPU benchmark layout: 21 windows
    ((640, 480), 80, 3, (6, 8), 6 * 4),
    ((1920, 1080), 100, 3, (11, 19), 17 * 9),   # 10.8 x 19.2 tiles -> stretched to fit
    ((333, 251), 50, 2, (5, 7), 6 * 4),
])
def test_tile_and_window_counts(size, tile, window, expected_grid, expected_windows):
    grid = grid_for_frame(*size, DetectorConfig(tile_px=tile, window_tiles=window))
    assert (grid.rows, grid.cols) == expected_grid
    assert grid.num_windows == expected_windows
    assert grid.coverage.shape == (expected_windows, grid.rows * grid.cols)


@pytest.mark.parametrize("size", [(640, 480), (1280, 720), (1920, 1080), (333, 251), (100, 700)])
def test_auto_grid_puts_tiles_per_side_on_short_side(size):
    config = DetectorConfig(tiles_per_side=6, window_tiles=3)
    grid = grid_for_frame(*size, config)
    assert min(grid.rows, grid.cols) == 6
    tile_w, tile_h = size[0] / grid.cols, size[1] / grid.rows
    assert 0.6 < tile_w / tile_h < 1.6      # tiles stay roughly square


@pytest.mark.parametrize("size, tile, window, stride", [
    ((333, 251), 50, 2, 1), ((1280, 720), 160, 3, 2), ((641, 479), 64, 4, 3), ((300, 300), 37, 5, 4),
])
def test_every_pixel_is_covered_by_a_window(size, tile, window, stride):
    grid = grid_for_frame(*size, DetectorConfig(tile_px=tile, window_tiles=window,
                                                stride_tiles=stride))
    assert grid.x_edges[0] == 0 and grid.x_edges[-1] == size[0]
    assert grid.y_edges[0] == 0 and grid.y_edges[-1] == size[1]
    covered = np.zeros((size[1], size[0]), bool)
    for x1, y1, x2, y2 in grid.window_boxes():
        covered[y1:y2, x1:x2] = True
    assert covered.all()
    assert (grid.coverage.sum(0) > 0).all()


def test_window_starts_add_a_flush_last_window():
    assert window_starts(10, 3, 1).tolist() == list(range(8))
    assert window_starts(10, 3, 3).tolist() == [0, 3, 6, 7]
    assert window_starts(4, 4, 2).tolist() == [0]


def test_tile_box_maps_tiles_to_exact_pixels():
    grid = TileGrid(frame_w=1280, frame_h=720, rows=9, cols=16, window_tiles=4)
    assert grid.tile_box(0, 0, 0, 0) == (0, 0, 80, 80)
    assert grid.tile_box(2, 3, 4, 6) == (240, 160, 560, 400)
    assert grid.tile_box(8, 15, 8, 15) == (1200, 640, 1280, 720)
    uneven = TileGrid(frame_w=100, frame_h=70, rows=3, cols=3)
    assert uneven.tile_box(0, 0, 2, 2) == (0, 0, 100, 70)
    assert uneven.tile_box(1, 1, 1, 1) == (33, 23, 67, 47)


def test_window_larger_than_grid_names_the_key():
    with pytest.raises(ConfigError, match=r"detector\.window_tiles: must be 1\.\.3"):
        grid_for_frame(320, 240, DetectorConfig(tile_px=80, window_tiles=4))


def test_auto_grid_always_fits_the_window():
    grid = grid_for_frame(64, 48, DetectorConfig(window_tiles=6, tiles_per_side=2))
    assert min(grid.rows, grid.cols) >= 6
