import numpy as np
import pytest

from realtime.engine.boxes import (box_iou, linear_scores, maps_to_boxes, merge_overlapping,
                            normalise_map)
from realtime.config import DetectorConfig
from realtime.engine.tiles import TileGrid

GRID = TileGrid(frame_w=800, frame_h=600, rows=6, cols=8)


def walkthrough_normalise(scores):
    # The published loop, verbatim in spirit: clip(scores - mean), then min-max.
    scores = np.clip(scores - scores.mean(), 0, np.inf)
    return (scores - scores.min()) / (scores.max() - scores.min())


def test_normalise_matches_walkthrough():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.25, 0.03, (6, 8))
    np.testing.assert_allclose(normalise_map(scores), walkthrough_normalise(scores), atol=1e-6)


def test_flat_map_normalises_to_zero_not_nan():
    assert not normalise_map(np.full((3, 3), 0.2)).any()


def one_prompt(sim, prob):
    return sim[None], sim[None], prob[None]


def test_component_in_tiles_gives_matching_pixel_box():
    sim = np.zeros((6, 8), np.float32)
    sim[1:3, 2:5] = 1.0                          # rows 1..2, cols 2..4
    found = maps_to_boxes(*one_prompt(sim, sim), GRID, DetectorConfig())
    assert found.boxes.tolist() == [[200, 100, 500, 300]]
    assert found.label_ids.tolist() == [0]


def test_two_separated_blobs_give_two_boxes():
    sim = np.zeros((6, 8), np.float32)
    sim[0:2, 0:2] = 0.3
    sim[4:6, 5:8] = 0.3
    found = maps_to_boxes(*one_prompt(sim, sim * 3), GRID, DetectorConfig())
    assert sorted(found.boxes.tolist()) == [[0, 0, 200, 200], [500, 400, 800, 600]]


def test_gate_drops_a_region_whose_probability_is_low():
    sim = np.zeros((6, 8), np.float32)
    sim[2:4, 2:4] = 0.3                          # the normalised map always has a peak ...
    prob = np.full((6, 8), 0.2, np.float32)      # ... but the prompt never wins
    assert len(maps_to_boxes(*one_prompt(sim, prob), GRID, DetectorConfig(gate=0.5)).boxes) == 0
    assert len(maps_to_boxes(*one_prompt(sim, prob), GRID, DetectorConfig(gate=0.1)).boxes) == 1


def test_min_area_drops_small_regions():
    sim = np.zeros((6, 8), np.float32)
    sim[0, 0] = 1.0
    sim[3:5, 3:6] = 1.0
    found = maps_to_boxes(*one_prompt(sim, sim), GRID, DetectorConfig(min_area_tiles=2))
    assert found.boxes.tolist() == [[300, 300, 600, 500]]


def test_threshold_override_changes_region_size():
    sim = np.array([[0, 0, 0, 0], [0, 0.5, 1.0, 0.5], [0, 0, 0, 0]], np.float32)
    grid = TileGrid(frame_w=400, frame_h=300, rows=3, cols=4)
    wide = maps_to_boxes(sim[None], sim[None], np.ones_like(sim)[None], grid, DetectorConfig(),
                         threshold=0.2)
    narrow = maps_to_boxes(sim[None], sim[None], np.ones_like(sim)[None], grid, DetectorConfig(),
                           threshold=0.9)
    assert wide.boxes.tolist() == [[100, 100, 400, 200]]
    assert narrow.boxes.tolist() == [[200, 100, 300, 200]]


def test_each_prompt_gets_its_own_boxes_and_reports_its_peak():
    sims = np.zeros((2, 6, 8), np.float32)
    sims[0, 0:2, 0:2] = [[0.31, 0.29], [0.28, 0.27]]
    sims[1, 3:5, 4:6] = 0.26
    probs = np.where(sims > 0, 0.9, 0.05).astype(np.float32)
    found = maps_to_boxes(sims, sims, probs, GRID, DetectorConfig())
    assert found.label_ids.tolist() == [0, 1]
    assert found.similarities.tolist() == pytest.approx([0.31, 0.26])
    assert found.probabilities.tolist() == pytest.approx([0.9, 0.9])


def test_overlapping_boxes_of_one_prompt_merge_into_their_union():
    a = (np.array([0, 0, 100, 100], np.float32), 0.9, 0.3)
    b = (np.array([10, 10, 110, 110], np.float32), 0.7, 0.2)
    c = (np.array([300, 300, 350, 350], np.float32), 0.6, 0.25)
    merged = merge_overlapping([a, b, c], iou=0.5)
    assert [m[0].tolist() for m in merged] == [[0, 0, 110, 110], [300, 300, 350, 350]]
    assert merged[0][1] == 0.9


def test_nested_box_is_merged():
    outer = (np.array([0, 0, 300, 300], np.float32), 0.6, 0.2)
    inner = (np.array([100, 100, 150, 150], np.float32), 0.8, 0.3)
    assert len(merge_overlapping([outer, inner], iou=0.9)) == 1


def test_box_iou():
    assert box_iou(np.array([0, 0, 10, 10]), np.array([5, 0, 15, 10])) == pytest.approx(1 / 3)
    assert box_iou(np.array([0, 0, 10, 10]), np.array([20, 20, 30, 30])) == 0.0


def test_linear_scores_map_the_range_to_percentages():
    np.testing.assert_allclose(linear_scores(np.array([0.1, 0.15, 0.275, 0.4, 0.5]), 0.15, 0.40),
                               [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_boxes_from_items_keeps_the_dtypes_and_an_empty_list_gives_empty_arrays():
    from realtime.engine.boxes import Boxes

    empty = Boxes.from_items([])
    assert empty.boxes.shape == (0, 4) and empty.label_ids.dtype == np.int64
    one = Boxes.from_items([(np.array([1, 2, 3, 4.0]), 0.9, 0.3, 2)])
    assert one.boxes.dtype == np.float32 and one.boxes.tolist() == [[1, 2, 3, 4]]
    assert one.label_ids.tolist() == [2] and one.probabilities.dtype == np.float32
