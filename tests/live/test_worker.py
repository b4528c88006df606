"""The inference worker: owns the detector, tags results with their frame, takes runtime
changes between frames, survives a bad frame and reports a detector that keeps failing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from conftest import FakeDetector
from realtime.buffers import BoundedQueue, LatestSlot
from realtime.live.capture import CaptureEnd, Frame
from realtime.control import PromptController
from realtime.live.worker import Result, SetThreshold, Worker, WorkerError


def frame(i: int) -> Frame:
    return Frame(i, i / 10.0, np.zeros((24, 32, 3), np.uint8), time.monotonic())


def collect(buffer, timeout_s: float = 10.0) -> list:
    items, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = buffer.get(timeout_s=0.1)
        if item is not None:
            items.append(item)
            if isinstance(item, (CaptureEnd, WorkerError)):
                return items
    raise AssertionError("worker did not finish")


def run_worker(detector, frames, inbox=None):
    inbox, outbox, stop = inbox or BoundedQueue(4), BoundedQueue(4), threading.Event()
    worker = Worker(detector, inbox, outbox, stop).start()
    feeder = threading.Thread(target=lambda: [inbox.put(f, stop) for f in frames])
    feeder.start()
    items = collect(outbox)
    stop.set()                       # a feeder blocked on a full inbox gives up
    feeder.join(5.0)
    assert worker.join(2.0)
    return worker, items


def test_every_frame_in_order_tagged_with_its_index_then_the_end():
    detector = FakeDetector()
    _, items = run_worker(detector, [frame(i) for i in range(10)] + [CaptureEnd("end", 10)])
    results, end = items[:-1], items[-1]
    assert [r.frame.index for r in results] == list(range(10))
    assert [r.detections.frame_index for r in results] == list(range(10))
    assert [r.detections.timestamp_s for r in results] == pytest.approx([i / 10 for i in
                                                                         range(10)])
    assert all(isinstance(r, Result) and r.latency_ms >= 0 for r in results)
    assert end == CaptureEnd("end", 10)


def test_latest_slot_inbox_means_inference_skips_to_the_newest_frame():
    detector, slot = FakeDetector(delay_s=0.05), LatestSlot()
    outbox, stop = BoundedQueue(100), threading.Event()
    worker = Worker(detector, slot, outbox, stop).start()
    for i in range(40):                       # a camera ten times faster than inference
        slot.put(frame(i))
        time.sleep(0.005)
    slot.put(CaptureEnd("end", 40))
    results = collect(outbox)[:-1]
    assert worker.join(2.0)
    assert len(results) < 40 and slot.replaced > 0
    assert detector.seen == sorted(detector.seen)     # never an older frame after a newer one


def test_threshold_and_prompt_changes_apply_between_frames():
    detector, inbox = FakeDetector(), BoundedQueue(4)
    outbox, stop = BoundedQueue(4), threading.Event()
    prompts = PromptController(detector.labels)
    worker = Worker(detector, inbox, outbox, stop, prompts).start()
    inbox.put(frame(0), stop)
    first = outbox.get(timeout_s=5.0)
    assert worker.send(SetThreshold(0.8))
    prompts.request(["a bird"])
    generation = prompts.request(["a cat", "a dog"])       # the newest request wins
    inbox.put(frame(1), stop)
    second = outbox.get(timeout_s=5.0)
    stop.set()
    assert worker.join(2.0)
    assert detector.thresholds == [0.5, 0.8] and detector.config.threshold == 0.8
    assert (first.detections.labels, first.generation) == (("a red circle",), 0)
    assert (second.detections.labels, second.generation) == (("a cat", "a dog"), generation)
    assert prompts.active.prompts == ("a cat", "a dog") and prompts.pending is None


def test_a_prompt_set_the_detector_refuses_keeps_the_old_one_and_is_reported():
    class Refusing(FakeDetector):
        def set_prompts(self, prompts):
            raise RuntimeError("text encoder out of memory")

    detector, inbox = Refusing(), BoundedQueue(4)
    outbox, stop = BoundedQueue(4), threading.Event()
    prompts = PromptController(detector.labels)
    worker = Worker(detector, inbox, outbox, stop, prompts).start()
    generation = prompts.request(["a cat"])
    inbox.put(frame(0), stop)
    result = outbox.get(timeout_s=5.0)
    stop.set()
    assert worker.join(2.0)
    assert result.detections.labels == ("a red circle",) and result.generation == 0
    assert prompts.last_failure == (generation, "RuntimeError: text encoder out of memory")


def test_a_bad_runtime_change_is_ignored_and_inference_goes_on():
    detector, inbox = FakeDetector(), BoundedQueue(4)
    outbox, stop = BoundedQueue(4), threading.Event()
    worker = Worker(detector, inbox, outbox, stop).start()
    worker.send(SetThreshold(7.0))           # out of range: DetectorConfig refuses it
    inbox.put(frame(0), stop)
    assert isinstance(outbox.get(timeout_s=5.0), Result)
    stop.set()
    assert worker.join(2.0) and detector.config.threshold == 0.5


def test_one_failing_frame_is_skipped_and_counted():
    detector = FakeDetector(fail_on={3})
    worker, items = run_worker(detector, [frame(i) for i in range(6)] + [CaptureEnd("end")])
    assert [r.frame.index for r in items[:-1]] == [0, 1, 2, 4, 5]
    assert worker.failed_frames == 1


def test_a_detector_that_keeps_failing_is_reported_once_as_a_worker_error():
    detector = FakeDetector(fail_on={"all"})
    worker, items = run_worker(detector, [frame(i) for i in range(10)])
    assert isinstance(items[-1], WorkerError)
    assert "3 frames in a row" in items[-1].message and "simulated failure" in items[-1].message
    assert "\n" not in items[-1].message


def test_stop_ends_an_idle_worker_quickly():
    stop = threading.Event()
    worker = Worker(FakeDetector(), LatestSlot(), LatestSlot(), stop).start()
    stop.set()
    assert worker.join(2.0)


def test_threshold_change_reaches_the_real_detector(tiny_model_dir):
    from realtime import Detector, DetectorConfig, ModelConfig, load_model

    model = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu"))
    detector = Detector(["a red circle"], DetectorConfig(method="dense"), model)
    inbox, outbox, stop = BoundedQueue(2), BoundedQueue(2), threading.Event()
    worker = Worker(detector, inbox, outbox, stop).start()
    worker.send(SetThreshold(0.9))
    inbox.put(frame(0), stop)
    result = outbox.get(timeout_s=30.0)
    stop.set()
    assert worker.join(5.0)
    assert isinstance(result, Result) and result.detections.labels == ("a red circle",)
    assert detector.config.threshold == 0.9 and detector.config.method == "dense"


def test_prompt_changes_encode_only_unseen_prompts_on_the_real_detector(tiny_model_dir):
    from realtime import Detector, DetectorConfig, ModelConfig, load_model

    model = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu"))
    detector = Detector(["a red circle"], DetectorConfig(method="dense"), model)
    inbox, outbox, stop = BoundedQueue(2), BoundedQueue(2), threading.Event()
    prompts = PromptController(detector.labels)
    worker = Worker(detector, inbox, outbox, stop, prompts).start()
    calls, before = [], model.text_calls
    for i, texts in enumerate([["a red circle", "a cat: 🐈"], ["a red circle"],
                               ["a cat: 🐈", "a red circle"]]):
        generation = prompts.request(texts)
        inbox.put(frame(i), stop)
        result = outbox.get(timeout_s=30.0)
        assert result.generation == generation and result.detections.labels == tuple(texts)
        calls.append(model.text_calls)
    stop.set()
    assert worker.join(5.0)
    assert calls == [before + 1] * 3          # one encoding, for the one new prompt
