"""Box fitting by crops, and the self-check that decides whether patch maps outline boxes."""

import numpy as np
import torch
import pytest

from realtime.engine.boxes import Boxes
from realtime.engine.fit import (TRIMS, RefineCheck, _merged, _upper_bound, object_side, pool,
                                 squares, trim_edges, trim_masks)
from realtime.engine.tiles import TileGrid

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
    merged = _merged(found, 0.5)
    assert merged.boxes.tolist() == [[12, 12, 48, 48], [100, 100, 140, 140]]


def test_pooling_a_fine_map_onto_the_window_grid():
    fine, coarse = TileGrid(80, 40, 4, 8), TileGrid(80, 40, 2, 4)
    pooled = pool(np.arange(32, dtype=np.float32).reshape(1, 4, 8), fine, coarse)
    assert pooled.shape == (1, 2, 4)
    assert pooled[0, 0, 0] == pytest.approx(np.mean([0, 1, 8, 9]))


def _frame(agree: bool, rng):
    """A present prompt's window probabilities (a gated block) and a patch map that
    is that block, finer (agree), or noise peaking in a corner (not)."""
    probability = np.full((1, 4, 4), 0.05, np.float32)
    probability[0, 1:3, 1:3] = 0.9
    if agree:
        fine = np.kron(probability, np.ones((2, 2))) + 0.01 * rng.normal(size=(1, 8, 8))
    else:
        fine = rng.normal(size=(1, 8, 8))
        fine[0, 0, 7] = 10.0
    return probability, fine.astype(np.float32)


@pytest.mark.parametrize("agree", [True, False])
def test_the_self_check_trusts_patch_maps_only_where_they_agree_with_the_windows(agree):
    rng = np.random.default_rng(0)
    check = RefineCheck()
    grid, fine_grid = TileGrid(64, 64, 4, 4), TileGrid(64, 64, 8, 8)
    for _ in range(RefineCheck.CHECKS):
        probability, fine = _frame(agree, rng)
        assert check.observe(probability, grid, fine, fine_grid, 0.5) is agree
    assert check.decided and check.trusted is agree
    probability, fine = _frame(not agree, rng)          # decided: the verdict holds
    assert check.observe(probability, grid, fine, fine_grid, 0.5) is agree
    fresh = RefineCheck()                               # no prompt passes: nothing learnt
    probability, fine = _frame(False, rng)
    fresh.observe(probability * 0.1, grid, fine, fine_grid, 0.5)
    assert fresh.hits == []


def test_an_undecided_check_distrusts_only_what_its_misses_rule_out():
    # One miss in two checks could still be a model with 80 % hits; nine misses
    # in ten cannot.
    assert _upper_bound(0.5, 2) >= RefineCheck().min_hits
    assert _upper_bound(0.1, 10) < RefineCheck().min_hits
    assert _upper_bound(1.0, 5) == pytest.approx(1.0)
    check = RefineCheck()
    check.hits, check.correlations = [True, False], [0.3, 0.3]
    assert check.trusted
    check.hits, check.correlations = [True] + [False] * 9, [0.3] * 10
    assert not check.trusted


def test_a_detector_fits_by_crops_unless_zoom_is_asked():
    from realtime.config import DetectorConfig
    from realtime.engine.detector import Detector
    from realtime.engine.fit import BoxFitter, ZoomFitter
    from tests.stubs import StubClip
    crops = Detector((), DetectorConfig(), StubClip())
    zoom = Detector((), DetectorConfig(fit_mode="zoom"), StubClip())
    assert type(crops.fitter) is BoxFitter and type(zoom.fitter) is ZoomFitter
    # each fit has its own rule for trusting the patch map instead (RULES)
    assert (crops.refine_check.min_hits, crops.refine_check.correlation) == RefineCheck.RULES["crops"]
    assert (zoom.refine_check.min_hits, zoom.refine_check.correlation) == RefineCheck.RULES["zoom"]


def test_a_weak_correlation_is_tolerated_while_undecided_and_distrusted_once_decided():
    # Hits alone do not make a patch map trustworthy: a contrastive-only model's
    # best patch often lies in the right window while its map barely follows them.
    # Against the zoom fit it takes a stronger correlation to be trusted.
    check = RefineCheck("zoom")
    check.hits, check.correlations = [True] * 10, [0.15] * 10
    assert check.trusted                               # a few noisy early checks
    check.hits, check.correlations = [True] * RefineCheck.CHECKS, [0.15] * RefineCheck.CHECKS
    assert not check.trusted
    against_crops = RefineCheck("crops")
    against_crops.hits, against_crops.correlations = check.hits, check.correlations
    assert against_crops.trusted
    strong = RefineCheck("zoom")
    strong.hits = [True] * 30 + [False] * (RefineCheck.CHECKS - 30)   # 67 % hits, crowded scene
    strong.correlations = [0.3] * RefineCheck.CHECKS
    assert strong.trusted
