"""Box fitting by crops."""

import numpy as np
import torch
import pytest

from realtime.engine.boxes import Boxes
from realtime.engine.boxes import merge_same
from realtime.engine.fit import TRIMS, object_side, squares, trim_edges, trim_masks

SIDES = np.array([240.0, 170.0, 120.0, 84.0, 60.0])


def test_the_object_side_is_where_the_similarity_falls_between_two_crops():
    # flat while the crop holds the object, then a fall: between 120 and 84 px
    side, holding = object_side(SIDES, np.array([0.70, 0.70, 0.69, 0.40, 0.30]), floor=0.2)
    assert 84 < side < 120
    assert holding.tolist() == [True, True, True, False, False]


def test_no_fall_means_the_object_is_at_most_the_smallest_crop():
    side, holding = object_side(SIDES, np.array([0.6, 0.62, 0.63, 0.64, 0.65]), floor=0.1)
    assert side == pytest.approx(60.0) and holding.all()


def test_a_best_crop_smaller_than_the_largest_still_holds_the_larger_ones():
    side, holding = object_side(SIDES, np.array([0.50, 0.66, 0.70, 0.45, 0.3]), floor=0.1)
    assert 84 < side < 120 and holding[:3].all() and not holding[3:].any()


def test_trim_masks_hide_each_side_in_turn():
    masks = trim_masks(50, torch.device("cpu"), torch.float32)[:, 0].numpy()
    count = len(TRIMS) - 1
    assert masks.shape == (1 + 4 * count, 50, 50) and masks[0].all()
    left, top, right, bottom = (masks[1 + side * count] for side in range(4))
    cut = round(TRIMS[1] * 50)
    assert not left[:, :cut].any() and left[:, cut:].all()
    assert not top[:cut].any() and top[cut:].all()
    assert not right[:, -cut:].any() and right[:, :-cut].all()
    assert not bottom[-cut:].any() and bottom[:-cut].all()
    assert (masks[count] == 0).mean() == pytest.approx(TRIMS[-1], abs=0.02)   # most hidden


def _trimmed_similarities(box: tuple[float, float, float, float]) -> np.ndarray:
    """A model whose similarity is the share of the object left visible (floor 0)."""
    x0, y0, x1, y1 = box
    spans = [(x0, x1), (y0, y1), (1 - x1, 1 - x0), (1 - y1, 1 - y0)]   # seen from each side
    row = [1.0]
    for lo, hi in spans:
        row += [1 - np.clip(t - lo, 0, hi - lo) / (hi - lo) for t in TRIMS[1:]]
    return np.array([row])


@pytest.mark.parametrize("box", [(0.4, 0.4, 0.7, 0.7), (0.1, 0.5, 0.45, 0.85), (0.3, 0.2, 0.6, 0.5)])
def test_the_middle_of_the_trim_edges_is_the_object_centre_wherever_it_lies(box):
    edges = trim_edges(_trimmed_similarities(box), np.array([0.0]))[0]
    centre = 0.5 + (edges[:2] - edges[2:]) / 2
    assert np.allclose(centre, [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], atol=0.03)


def test_a_crop_whose_trims_change_nothing_keeps_its_centre():
    edges = trim_edges(np.full((1, 1 + 4 * (len(TRIMS) - 1)), 0.5), np.array([0.1]))[0]
    assert np.allclose(edges[:2], edges[2:])


def test_squares_are_centred_and_of_the_given_side():
    out = squares(np.array([[100.0, 50.0], [10.0, 10.0]]), np.array([40.0, 21.0]))
    assert out[0].tolist() == [80, 30, 120, 70]
    assert out[1, 2] - out[1, 0] == 21 and out[1, 3] - out[1, 1] == 21


def test_two_candidates_fitted_onto_one_object_become_one_box():
    found = Boxes(np.array([[10, 10, 50, 50], [12, 12, 48, 48], [100, 100, 140, 140]], np.float32),
                  np.array([0.8, 0.9, 0.7], np.float32), np.zeros(3, np.float32),
                  np.array([0, 0, 0], np.int64))
    merged = merge_same(found, 0.5)
    assert merged.boxes.tolist() == [[12, 12, 48, 48], [100, 100, 140, 140]]


def test_a_detector_fits_the_way_fit_mode_names():
    from realtime.config import DetectorConfig
    from realtime.engine.detector import Detector
    from realtime.engine.fit import BoxFitter, ZoomFitter
    from tests.stubs import StubClip
    crops = Detector((), DetectorConfig(fit_mode="crops"), StubClip())
    zoom = Detector((), DetectorConfig(fit_mode="zoom"), StubClip())
    assert type(crops.fitter) is BoxFitter and type(zoom.fitter) is ZoomFitter
