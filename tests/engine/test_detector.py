"""The detector end to end on a stub encoder whose embeddings the test controls."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from realtime import Detector, DetectorConfig
from realtime.engine.boxes import box_iou
from realtime.engine.methods import WindowsMethod
from realtime.engine.prompts import PromptError
from tests.stubs import StubClip


def frame_with_blobs(*boxes, size=(320, 240)):
    frame = np.zeros((size[1], size[0], 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        frame[y1:y2, x1:x2] = 255
    return frame


# 8 x 6 tiles of 40 px on 320 x 240; boxes from the window tiles alone (exact geometry;
# the stub scores a crop by its share of white, so fitting by crops is off here)
LAYOUT = DetectorConfig(verify_context=0.0, tile_px=40, window_tiles=2, refine=False, fit=False)


def test_aggregation_matches_the_walkthrough_loop():
    stub = StubClip()
    method = WindowsMethod(stub, DetectorConfig(verify_context=0.0, tile_px=40, window_tiles=3, stride_tiles=2))
    plan = method.plan(240, 320)
    grid = plan.grid
    rng = np.random.default_rng(1)
    window_scores = rng.normal(size=(grid.num_windows, 3)).astype(np.float32)

    k = grid.window_tiles
    expected = np.zeros((3, grid.rows, grid.cols))
    runs = np.zeros((grid.rows, grid.cols))
    for (r, c), score in zip(grid.window_origins, window_scores):   # the published loop
        expected[:, r:r + k, c:c + k] += score[:, None, None]
        runs[r:r + k, c:c + k] += 1
    expected /= runs

    got = plan.tile_means(torch.from_numpy(window_scores)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_tile_maxima_take_the_best_covering_window():
    method = WindowsMethod(StubClip(), DetectorConfig(verify_context=0.0, tile_px=40, window_tiles=3, stride_tiles=2))
    plan = method.plan(240, 320)
    grid = plan.grid
    rng = np.random.default_rng(2)
    window_scores = rng.uniform(size=(grid.num_windows, 2)).astype(np.float32)
    k = grid.window_tiles
    expected = np.zeros((2, grid.rows, grid.cols))
    for (r, c), score in zip(grid.window_origins, window_scores):
        expected[:, r:r + k, c:c + k] = np.maximum(expected[:, r:r + k, c:c + k],
                                                   score[:, None, None])
    got = plan.tile_maxima(torch.from_numpy(window_scores)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_window_crops_are_the_windows_of_the_resized_frame():
    stub = StubClip(image_px=32)
    method = WindowsMethod(stub, LAYOUT)
    plan = method.plan(240, 320)
    image = torch.arange(plan.resized_h * plan.resized_w, dtype=torch.float32)
    image = image.view(1, 1, plan.resized_h, plan.resized_w).expand(1, 3, -1, -1)
    from realtime.engine.frames import crop_windows
    crops = crop_windows(image, plan.rows_idx, plan.cols_idx)
    tile = plan.resized_h // plan.grid.rows
    for crop, (r, c) in zip(crops, plan.grid.window_origins):
        want = image[0, :, r * tile:r * tile + 32, c * tile:c * tile + 32]
        assert torch.equal(crop, want)


def test_two_separated_blobs_of_one_prompt_give_two_boxes():
    detector = Detector(["white"], LAYOUT, StubClip())
    found = detector(frame_with_blobs((0, 0, 80, 80), (200, 120, 280, 200)))
    assert sorted(found.boxes.tolist()) == [[0, 0, 80, 80], [200, 120, 280, 200]]
    assert (found.scores > 0.5).all()


def test_refine_outlines_an_object_smaller_than_a_window():
    # Windows of 120 px around a 40 px blob: the window region is much larger than the
    # blob; the patch map (20 px cells: 8 px patches of a 96 px-high input) outlines it.
    # No background prompts: the stub's windows are mostly background around a small blob.
    config = DetectorConfig(verify_context=0.0, tile_px=40, window_tiles=3, background_prompts=(),
                            refine_input_px=96, fit=False)
    blob = (160, 80, 200, 120)
    coarse = Detector(["white"], replace(config, refine=False), StubClip())(frame_with_blobs(blob))
    fine = Detector(["white"], config, StubClip())(frame_with_blobs(blob))
    assert len(coarse) == len(fine) == 1
    assert box_iou(coarse.boxes[0], np.array(blob, float)) < 0.4
    assert box_iou(fine.boxes[0], np.array(blob, float)) >= 0.8
    assert fine.scores[0] == coarse.scores[0]       # the windows still decide the score


def test_refine_splits_two_instances_that_one_window_region_merged():
    config = DetectorConfig(verify_context=0.0, tile_px=40, window_tiles=3, background_prompts=(),
                            refine_input_px=96, fit=False)
    blobs = ((120, 80, 160, 120), (200, 80, 240, 120))    # 40 px apart, both in one window
    coarse = Detector(["white"], replace(config, refine=False), StubClip())(frame_with_blobs(*blobs))
    fine = Detector(["white"], config, StubClip())(frame_with_blobs(*blobs))
    assert len(coarse) == 1
    assert len(fine) == 2
    for blob in blobs:
        assert max(box_iou(b, np.array(blob, float)) for b in fine.boxes) >= 0.8


def test_absent_prompt_gives_no_detection_while_present_one_does():
    detector = Detector(["red", "white"], LAYOUT, StubClip())
    found = detector(frame_with_blobs((120, 80, 200, 160)))
    assert [found.labels[i] for i in found.label_ids] == ["white"]
    assert found.boxes.tolist() == [[120, 80, 200, 160]]


def test_absent_prompt_alone_gives_no_detection():
    detector = Detector(["red"], LAYOUT, StubClip())
    assert len(detector(frame_with_blobs((120, 80, 200, 160)))) == 0
    assert len(detector(frame_with_blobs())) == 0


def test_all_windows_of_a_frame_are_encoded_in_one_batch():
    stub = StubClip()
    detector = Detector(["white"], LAYOUT, stub)
    detector(frame_with_blobs((0, 0, 40, 40)))
    assert stub.image_batches == [7 * 5]


def test_text_encoder_runs_once_for_many_frames():
    stub = StubClip()
    detector = Detector(["white", "red"], LAYOUT, stub)
    for i in range(20):
        detector(frame_with_blobs((i, i, i + 60, i + 60)), frame_index=i)
    assert stub.text_calls == 1


def test_changing_prompts_encodes_only_the_new_ones():
    stub = StubClip()
    encoded = []
    original = stub.encode_text
    stub.encode_text = lambda texts: encoded.append(list(texts)) or original(texts)
    detector = Detector(["white", "red"], LAYOUT, stub)
    detector.set_prompts(["red", "black", "white"])
    assert encoded[1] == ["black"]
    assert detector.labels == ("red", "black", "white")


def test_result_carries_frame_index_timestamp_maps_and_labels_as_given():
    detector = Detector(["  white ", "white", "A Red thing"], LAYOUT, StubClip())
    found = detector(frame_with_blobs((0, 0, 80, 80)), frame_index=7, timestamp_s=0.25)
    assert found.labels == ("white", "A Red thing")
    assert found.frame_index == 7 and found.timestamp_s == 0.25
    assert found.score_maps.shape == (2, 6, 8) == found.similarity_maps.shape
    record = found.to_record()
    assert record["frame"] == 7 and record["t"] == 0.25
    assert record["detections"][0]["label"] == "white"
    assert set(record["detections"][0]) == {"label", "box", "score", "similarity"}


def test_linear_score_mode_maps_similarity_through_the_range():
    config = DetectorConfig(verify_context=0.0, tile_px=40, window_tiles=2, score_mode="linear",
                            similarity_range=(0.0, 2.0))
    found = Detector(["white"], config, StubClip())(frame_with_blobs((0, 0, 80, 80)))
    np.testing.assert_allclose(found.scores, found.similarities / 2.0, rtol=1e-5)


def test_no_usable_prompt_is_an_error():
    with pytest.raises(PromptError):
        Detector(["", "   "], LAYOUT, StubClip())


def test_a_single_string_is_one_prompt_not_one_per_character():
    detector = Detector("a white blob", LAYOUT, StubClip())
    assert detector.labels == ("a white blob",)
    detector.set_prompts("abc")
    assert detector.labels == ("abc",)
    with pytest.raises(PromptError, match="must be a text"):
        detector.set_prompts(["a cat", 3])


@pytest.mark.parametrize("method", ["windows", "dense", "occlusion", "classify"])
@pytest.mark.parametrize("frame, fragment", [
    (None, "got NoneType"),
    (np.zeros((0, 0, 3), np.uint8), "got an empty 0x0x3 image"),
    (np.zeros((20, 0, 3), np.uint8), "got an empty 20x0x3 image"),
    (np.zeros((24, 32), np.uint8), "got shape 24x32 (grey"),
    (np.zeros((24, 32, 4), np.uint8), "got shape 24x32x4 (grey"),
    (np.zeros((24, 32, 3), np.float32), "got dtype float32"),
    ([[0, 0, 0]], "got list"),
], ids=["none", "0x0", "20x0", "2-d", "bgra", "float", "list"])
def test_a_bad_frame_is_a_value_error_that_says_what_is_expected(method, frame, fragment):
    detector = Detector(["white"], DetectorConfig(verify_context=0.0, method=method), StubClip())
    with pytest.raises(ValueError) as err:
        detector(frame)
    assert str(err.value).startswith("expected an HxWx3 uint8 BGR image") and fragment in str(
        err.value), str(err.value)
    assert len(detector(np.zeros((1, 1, 3), np.uint8)).labels) == 1   # tiny is fine


def test_background_prompt_equal_to_a_user_prompt_does_not_compete():
    stub = StubClip()
    config = DetectorConfig(verify_context=0.0, tile_px=40, window_tiles=2, background_prompts=("white", "floor"))
    found = Detector(["White"], config, stub)(frame_with_blobs((0, 0, 80, 80)))
    assert len(found) == 1


def test_dense_finds_the_blob():
    # 48 px on the short side: a 6 x 8 grid of 8 px patches, 40 source px each.
    config = DetectorConfig(verify_context=0.0, method="dense", dense_input_px=48)
    detector = Detector(["white"], config, StubClip(image_px=32, patch_px=8))
    found = detector(frame_with_blobs((160, 120, 240, 200)))
    assert found.boxes.tolist() == [[160, 120, 240, 200]]
    assert found.score_maps.shape == (1, 6, 8)


def test_occlusion_finds_the_blob_the_whole_frame_decision_rests_on():
    # Occlusion gates on the whole frame's probability, so the object must
    # dominate the frame; masking a cell of it lowers the similarity.
    config = DetectorConfig(verify_context=0.0, method="occlusion", dense_input_px=64, occlusion_cells=6)
    detector = Detector(["white"], config, StubClip(image_px=32, patch_px=8))
    found = detector(frame_with_blobs((20, 20, 300, 220)))
    assert len(found) == 1
    x1, y1, x2, y2 = found.boxes[0]
    assert x1 <= 40 and y1 <= 40 and x2 >= 280 and y2 >= 200


def test_classify_ranks_prompts_without_boxes():
    detector = Detector(["red", "white"], DetectorConfig(verify_context=0.0, method="classify"), StubClip())
    found = detector(frame_with_blobs((0, 0, 320, 240)))
    assert len(found) == 0
    assert found.frame_scores.argmax() == 1
    assert found.frame_scores.sum() == pytest.approx(1.0, abs=1e-5)
    assert found.to_record()["classification"][0]["label"] == "white"
    np.testing.assert_allclose(detector.classify(frame_with_blobs((0, 0, 320, 240))),
                               found.frame_scores, rtol=1e-5)


@pytest.mark.parametrize("config", [replace(LAYOUT, verify=False),
                                    DetectorConfig(verify_context=0.0, method="dense", verify=False,
                                                   fit=False),
                                    DetectorConfig(verify_context=0.0, method="occlusion", verify=False),
                                    DetectorConfig(verify_context=0.0, tile_px=40, window_tiles=2, verify=False,
                                                   fit=False)])
def test_detections_from_stored_embeddings_equal_direct_detection(config):
    # The archive stores encode()'s arrays (in fp16) and scores them later:
    # with the pixel-only stages (verify, fit: segmentation) off, the boxes must be those
    # of detect().
    detector = Detector(["white"], config, StubClip())
    frame = frame_with_blobs((40, 20, 280, 220))   # large: occlusion's gate is the whole frame's
    direct = detector(frame)
    encoded = detector.encode(frame)
    stored = replace(encoded, arrays={k: v.half().numpy() for k, v in encoded.arrays.items()})
    again = detector.detect_encoded(stored)
    assert len(direct) >= 1
    np.testing.assert_allclose(again.boxes, direct.boxes)
    np.testing.assert_allclose(again.scores, direct.scores, atol=2e-3)
    np.testing.assert_array_equal(again.label_ids, direct.label_ids)


def test_encoding_needs_no_prompts_and_scoring_takes_new_ones():
    detector = Detector((), LAYOUT, StubClip())
    encoded = detector.encode(frame_with_blobs((40, 40, 120, 120)))
    detector.set_prompts(["white", "red"])
    found = detector.detect_encoded(encoded)
    assert set(found.labels[i] for i in found.label_ids) == {"white"}


def test_the_layout_names_what_stored_embeddings_depend_on():
    stub = StubClip()
    stub.name = "stub"
    windows = Detector((), LAYOUT, stub).layout()
    assert windows["method"] == "windows" and windows["tile_px"] == 40 and windows["image_px"] == 32
    assert Detector((), replace(LAYOUT, threshold=0.7), stub).layout() == windows  # scoring only
    assert Detector((), replace(LAYOUT, window_tiles=3), stub).layout() != windows
