"""The capture thread and its buffers: latest-frame-wins, back-pressure, pacing, reconnects."""

from __future__ import annotations

import threading
import time

import pytest

from conftest import FakeCamera, write_video
from realtime.buffers import BoundedQueue, LatestSlot
from realtime.live.capture import Backoff, Capture, CaptureEnd, Frame
from realtime.live.source import open_reader, parse_source


def drain(buffer, timeout_s: float = 10.0) -> list:
    """Everything a buffer delivers up to and including the CaptureEnd."""
    items, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        item = buffer.get(timeout_s=0.1)
        if item is not None:
            items.append(item)
            if isinstance(item, CaptureEnd):
                return items
    raise AssertionError(f"no CaptureEnd within {timeout_s} s ({len(items)} items)")


def test_latest_slot_keeps_only_the_newest_item():
    slot = LatestSlot()
    for i in range(5):
        slot.put(i)
    assert slot.qsize() == 1 and slot.replaced == 4
    assert slot.get(timeout_s=0.0) == 4
    assert slot.get(timeout_s=0.01) is None   # taken items are not handed out twice


def test_latest_slot_wakes_a_waiting_consumer():
    slot, got = LatestSlot(), []
    consumer = threading.Thread(target=lambda: got.append(slot.get(timeout_s=5.0)))
    consumer.start()
    slot.put("frame")
    consumer.join(5.0)
    assert got == ["frame"]


def test_bounded_queue_blocks_when_full_until_stopped():
    q, stop = BoundedQueue(2), threading.Event()
    assert q.put(1, stop) and q.put(2, stop)
    stopper = threading.Timer(0.2, stop.set)
    stopper.start()
    assert q.put(3, stop) is False   # gave up only because stop was set
    assert q.qsize() == 2 and q.get(0.0) == 1


def test_backoff_doubles_up_to_its_cap():
    assert [Backoff(0.25, 2.0).delay_s(a) for a in range(1, 7)] == [0.25, 0.5, 1.0, 2.0, 2.0,
                                                                     2.0]


def test_file_capture_delivers_every_frame_in_order_then_the_end(tmp_path):
    reader = open_reader(parse_source(str(write_video(tmp_path / "v.mp4", 20, fps=10.0))))
    queue, stop = BoundedQueue(3), threading.Event()
    capture = Capture(reader, [queue], stop).start()
    items = drain(queue)
    assert capture.join(2.0)
    frames, end = items[:-1], items[-1]
    assert [f.index for f in frames] == list(range(20))
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 10.0 for i in range(20)])
    assert end == CaptureEnd("end", frames_read=20)
    assert all(isinstance(f, Frame) for f in frames)


def test_max_frames_stops_the_capture(tmp_path):
    reader = open_reader(parse_source(str(write_video(tmp_path / "v.mp4", 20))))
    queue = BoundedQueue(3)
    Capture(reader, [queue], threading.Event(), max_frames=7).start()
    items = drain(queue)
    assert len(items) == 8 and items[-1].reason == "max_frames"


def test_realtime_pacing_plays_a_file_at_its_frame_rate(tmp_path):
    reader = open_reader(parse_source(str(write_video(tmp_path / "v.mp4", 10, fps=25.0))))
    slot = BoundedQueue(100)
    start = time.monotonic()
    Capture(reader, [slot], threading.Event(), pace=True).start()
    items = drain(slot)
    # Frame 9 is due 0.36 s after frame 0: a lower bound, so no flakiness.
    assert time.monotonic() - start >= 0.34
    assert [f.index for f in items[:-1]] == list(range(10))


def test_stop_releases_a_capture_blocked_by_back_pressure(tmp_path):
    reader = open_reader(parse_source(str(write_video(tmp_path / "v.mp4", 20))))
    queue, stop = BoundedQueue(2), threading.Event()
    capture = Capture(reader, [queue], stop).start()
    deadline = time.monotonic() + 10.0
    while queue.qsize() < 2 and time.monotonic() < deadline:   # fills up; nobody consumes
        time.sleep(0.01)
    assert queue.qsize() == 2
    stop.set()
    assert capture.join(2.0)


def test_live_capture_reopens_with_backoff_and_keeps_numbering():
    camera = FakeCamera(fps=200, drop_after=5, failed_reopens=2)
    slot, stop = BoundedQueue(1000), threading.Event()
    capture = Capture(camera, [slot], stop, max_frames=12, backoff=Backoff(0.01, 0.02)).start()
    assert camera.dropped.wait(5.0)
    items = drain(slot)
    frames, end = items[:-1], items[-1]
    assert [f.index for f in frames] == list(range(12))
    assert end.reason == "max_frames" and end.reconnects == 3 and camera.reopen_calls == 3
    assert all(b.timestamp_s >= a.timestamp_s for a, b in zip(frames, frames[1:]))
    assert capture.join(2.0) and not capture.reconnecting.is_set()


def test_live_capture_gives_up_after_max_reconnects():
    camera = FakeCamera(fps=200, drop_after=3, recover=False)
    slot = LatestSlot()
    capture = Capture(camera, [slot], threading.Event(), max_reconnects=2,
                      backoff=Backoff(0.01, 0.01)).start()
    end = drain(slot)[-1]
    assert end.reason == "lost" and end.reconnects == 2 and "2 reconnect attempts" in end.error
    assert capture.join(2.0) and camera.closed


def test_reconnecting_flag_is_set_while_the_source_is_down():
    camera = FakeCamera(fps=200, drop_after=2, recover=False)
    stop = threading.Event()
    capture = Capture(camera, [LatestSlot()], stop, backoff=Backoff(0.05, 0.05)).start()
    assert camera.dropped.wait(5.0)
    assert capture.reconnecting.wait(5.0)
    stop.set()
    assert capture.join(2.0)


def test_a_reader_that_raises_ends_the_capture_with_an_error():
    class Broken(FakeCamera):
        def read(self):
            raise OSError("device vanished")

    slot = LatestSlot()
    Capture(Broken(), [slot], threading.Event()).start()
    end = drain(slot)[-1]
    assert end.reason == "error" and "device vanished" in end.error
