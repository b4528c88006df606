"""Box verification: crop geometry, crop contents, which boxes survive, CUDA-graph buckets."""

import numpy as np
import pytest
import torch

from realtime import Detector, DetectorConfig
from realtime.engine.boxes import Boxes
from realtime.config import ConfigError
from realtime.engine.verify import BoxVerifier, crop_squares
from tests.stubs import StubClip


def candidates(*boxes, label_ids=None) -> Boxes:
    count = len(boxes)
    return Boxes(np.array(boxes, np.float32), np.ones(count, np.float32),
                 np.ones(count, np.float32),
                 np.array(label_ids or [0] * count, np.int64))


def test_a_square_holds_the_box_with_its_margin_and_stays_in_the_frame():
    (square,) = crop_squares(np.array([[100, 50, 140, 70]], np.float32), 320, 240, 0.25)
    x0, y0, x1, y1 = square
    assert x1 - x0 == y1 - y0 == 60                      # long side 40, plus 10 each side
    assert (x0 + x1) / 2 == 120 and (y0 + y1) / 2 == 60  # centred on the box
    assert x0 <= 100 and y0 <= 50 and x1 >= 140 and y1 >= 70


def test_a_square_at_the_edge_is_shifted_inside_rather_than_padded():
    (square,) = crop_squares(np.array([[0, 200, 40, 240]], np.float32), 320, 240, 0.5)
    assert square.tolist() == [0, 160, 80, 240]


def test_a_box_wider_than_the_frame_is_tall_gets_a_centred_square_past_the_frame():
    (square,) = crop_squares(np.array([[0, 0, 320, 240]], np.float32), 320, 240, 0.0)
    assert square.tolist() == [0, -40, 320, 280]


def test_crops_show_the_box_and_pad_outside_the_frame_with_zero():
    stub = StubClip(image_px=32)
    frame = torch.zeros(1, 3, 240, 320)
    frame[..., 100:140, 150:190] = 255.0                 # a 40 px white square
    verifier = BoxVerifier(stub, margin=0.0)
    inside, past = verifier.crops(frame, np.array([[150, 100, 190, 140], [0, -40, 320, 280]]))
    assert inside.shape == past.shape == (3, 32, 32)
    assert inside.min().item() == pytest.approx(1.0)                          # the box exactly: all white (x/255)
    assert past[:, :4].abs().max() == 0 and past[:, -4:].abs().max() == 0   # padded rows
    assert past[:, 4:-4].max().item() == pytest.approx(1.0)                   # the frame (with the square) between


def test_boxes_whose_crop_is_not_the_prompt_are_dropped_and_kept_ones_rescored():
    stub = StubClip(image_px=32)
    config = DetectorConfig(tile_px=40, window_tiles=2, verify_margin=0.0, verify_context=0.0)
    detector = Detector(["white"], config, stub)
    frame = torch.zeros(1, 3, 240, 320)
    frame[..., 40:80, 40:80] = 255.0
    found = candidates([40, 40, 80, 80], [200, 120, 240, 160])   # the blob; plain black
    kept = detector.verifier(frame, found, detector._text, 1, gate=0.5)
    assert kept.boxes.tolist() == [[40, 40, 80, 80]]
    assert 0.5 <= kept.probabilities[0] <= 1.0
    assert kept.similarities[0] == pytest.approx(1.0, abs=1e-3)   # crop all white


def test_verification_is_one_batch_of_crops_per_frame():
    stub = StubClip(image_px=32)
    detector = Detector(["white"], DetectorConfig(tile_px=40, window_tiles=2, refine=False,
                                                  fit=False, verify_context=0.0), stub)
    frame = np.zeros((240, 320, 3), np.uint8)
    frame[0:80, 0:80] = frame[120:200, 200:280] = 255
    stub.image_batches.clear()
    found = detector(frame)
    assert sorted(found.boxes.tolist()) == [[0, 0, 80, 80], [200, 120, 280, 200]]
    assert stub.image_batches[-1] == 2                   # both crops, one call


def test_a_box_must_also_pass_on_its_context_crop_in_the_same_batch():
    # The stub reads "white" from the share of bright pixels: a white square alone
    # on black is white up close and not with context; one inside a white area is
    # white either way.
    stub = StubClip(image_px=32)
    frame = torch.zeros(1, 3, 240, 320)
    frame[..., 20:100, 20:100] = 255.0                  # a white area around the first
    frame[..., 150:190, 230:270] = 255.0                # a square alone
    found = candidates([40, 40, 80, 80], [230, 150, 270, 190])
    kept = {}
    for context in (0.0, 0.5):
        detector = Detector(["white"], DetectorConfig(verify_margin=0.0, verify_context=context,
                                                      refine=True), stub)
        stub.image_batches.clear()
        kept[context] = detector.verifier(frame, found, detector._text, 1, gate=0.5)
        assert stub.image_batches == [2 if context == 0 else 4]     # one batch either way
    assert len(kept[0.0].boxes) == 2
    assert kept[0.5].boxes.tolist() == [[40, 40, 80, 80]]
    assert kept[0.5].probabilities[0] == pytest.approx(kept[0.0].probabilities[0], abs=1e-3)


@pytest.mark.parametrize("method, verify, expected", [
    ("windows", "auto", True), ("occlusion", "auto", True), ("dense", "auto", True),
    ("classify", "auto", False), ("dense", False, False), ("windows", False, False),
    ("classify", True, False)])
def test_auto_verifies_every_method_with_boxes(method, verify, expected):
    # dense too: without it an absent prompt is drawn on a third of the frames of a
    # contrastive-only model (docs/method.md)
    assert DetectorConfig(method=method, verify=verify).verifies is expected


def test_verify_accepts_true_false_or_auto_only():
    with pytest.raises(ConfigError, match=r"detector\.verify: must be true, false or auto"):
        DetectorConfig(verify="sometimes")


class _RecordingGraphs:
    """Stands in for the CUDA graph cache: runs eagerly, records batch sizes."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, fn, pixels, tag=""):
        self.batches.append(pixels.shape[0])
        return fn(pixels)


def test_changing_crop_counts_reach_the_graphs_padded_to_a_power_of_two(tiny_model_dir):
    from realtime.config import ModelConfig
    from realtime.engine.model import load_model

    model = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu", dtype="float32"))
    pixels = torch.randn(5, 3, model.spec.image_px, model.spec.image_px)
    eager = model.encode_images(pixels, bucket=True)      # no graphs: no padding
    model._graphs = _RecordingGraphs()
    padded = model.encode_images(pixels, bucket=True)
    assert model._graphs.batches == [8] and padded.shape == eager.shape == (5, eager.shape[1])
    torch.testing.assert_close(padded, eager, atol=1e-5, rtol=1e-4)
    model.encode_images(pixels)                           # fixed-size batches stay as they are
    assert model._graphs.batches == [8, 5]
