"""Box fitting by crops, and the self-check that decides whether patch maps outline boxes."""

import numpy as np
import pytest

from realtime.engine.boxes import Boxes
from realtime.engine.fit import RefineCheck, _merged, _peak, object_side, squares
from realtime.engine.tiles import TileGrid

SIDES = np.array([240.0, 170.0, 120.0, 84.0, 60.0])


def test_the_object_side_is_where_the_similarity_falls_between_two_crops():
    # flat while the crop holds the object, then a fall: between 120 and 84 px
    side, holding = object_side(SIDES, np.array([0.70, 0.70, 0.69, 0.40, 0.30]), floor=0.2)
    assert 84 < side < 120
    assert holding.tolist() == [True, True, True, False, False]


def test_no_fall_means_the_object_is_at_most_the_smallest_crop():
    side, holding = object_side(SIDES, np.array([0.6, 0.62, 0.63, 0.64, 0.65]), floor=0.1)
    assert side == 60.0 and holding.all()


def test_a_best_crop_smaller_than_the_largest_still_holds_the_larger_ones():
    side, holding = object_side(SIDES, np.array([0.50, 0.66, 0.70, 0.45, 0.3]), floor=0.1)
    assert 84 < side < 120 and holding[:3].all() and not holding[3:].any()


def test_parabola_peak_and_its_limits():
    assert _peak(np.array([1.0]), np.array([2.0]), np.array([1.0]))[0] == 0.0
    assert 0 < _peak(np.array([1.0]), np.array([2.0]), np.array([1.5]))[0] < 0.5
    assert _peak(np.array([1.0]), np.array([2.0]), np.array([3.0]))[0] == 1.0   # no peak: step


def test_squares_are_centred_and_of_the_given_side():
    out = squares(np.array([[100.0, 50.0], [10.0, 10.0]]), np.array([40.0, 21.0]))
    assert out[0].tolist() == [80, 30, 120, 70]
    assert out[1, 2] - out[1, 0] == 21 and out[1, 3] - out[1, 1] == 21


def test_two_candidates_fitted_onto_one_object_become_one_box():
    found = Boxes(np.array([[10, 10, 50, 50], [12, 12, 48, 48], [100, 100, 140, 140]], np.float32),
                  np.array([0.8, 0.9, 0.7], np.float32), np.zeros(3, np.float32),
                  np.array([0, 0, 0], np.int64))
    merged = _merged(found, 0.5)
    assert merged.boxes.tolist() == [[12, 12, 48, 48], [100, 100, 140, 140]]


def _frame(agree: bool, rng):
    """A present prompt's window probabilities (gated block in the middle) and a
    patch map that peaks inside that block (agree) or somewhere at random."""
    probability = np.zeros((1, 4, 4), np.float32)
    probability[0, 1:3, 1:3] = 0.9
    fine = rng.normal(size=(1, 8, 8)).astype(np.float32)
    if agree:
        fine[0, 3, 4] = 10.0
    else:
        fine[0, 0, 7] = 10.0          # a corner: outside the region
    return probability, fine


@pytest.mark.parametrize("agree", [True, False])
def test_the_self_check_trusts_patch_maps_only_where_they_agree_with_the_windows(agree):
    rng = np.random.default_rng(0)
    check = RefineCheck()
    grid, fine_grid = TileGrid(64, 64, 4, 4), TileGrid(64, 64, 8, 8)
    assert check.trusted                               # undecided: try it
    for _ in range(RefineCheck.CHECKS):
        probability, fine = _frame(agree, rng)
        assert check.observe(probability, grid, fine, fine_grid, 0.5) is agree
    assert check.decided and check.trusted is agree
    # a frame where no prompt passes the gate tells nothing
    fresh = RefineCheck()
    probability, fine = _frame(False, rng)
    fresh.observe(probability * 0.1, grid, fine, fine_grid, 0.5)
    assert fresh.hits == []
