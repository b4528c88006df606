"""Streams over loopback: a file served at an http:// URL is a file, a live stream
that keeps coming back for a moment uses up the reconnect budget, and opening a
stream is time-bounded and interruptible (issue 14, items 3 and 7)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, FakeFactory, RecordingDisplay, app_config, write_video
from realtime.live import app, capture, source
from realtime.live.capture import Backoff, Capture
from realtime.live.source import Grabbed, SourceSpec, open_reader, parse_source
from realtime.buffers import BoundedQueue
from tests.live.loopback import SilentServer, serve_files, serve_mjpeg


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# --------------------------------------------------------------------------- files at URLs


def test_a_video_file_served_over_http_is_read_as_a_file_every_frame_once(tmp_path, capsys):
    write_video(tmp_path / "clip.mp4", 40, fps=10.0)
    dets = tmp_path / "d.jsonl"
    with serve_files(tmp_path) as base:
        url = f"{base}/clip.mp4"
        reader = open_reader(parse_source(url))
        assert (reader.live, reader.frame_count, reader.fps) == (False, 40, 10.0)
        reader.close()
        # max_frames only guards against the old endless replay
        code = app.run(app_config(source=url, detections=str(dets), max_frames=200),
                       detector_factory=FakeFactory())
    assert code == 0
    frames = [json.loads(line)["frame"] for line in dets.read_text().splitlines()]
    assert frames == list(range(40))
    assert stderr_lines(capsys)[-1].startswith("done: 40 frames processed, 0 unreadable "
                                               "frames skipped, 0 reconnects")


def test_a_live_http_stream_stays_live_and_reopen_then_fail_cycles_use_up_the_budget(capsys):
    stop = threading.Event()
    timer = threading.Timer(20.0, stop.set)   # the old code cycled forever: end it
    with serve_mjpeg(frames_per_connection=8) as base:
        url = f"{base}/camera.mjpg"
        reader = open_reader(parse_source(url))
        assert reader.live and reader.frame_count is None
        reader.close()
        timer.start()
        try:
            code = app.run(app_config(source=url, max_reconnects=2),
                           detector_factory=FakeFactory(), display=RecordingDisplay(),
                           backoff=Backoff(0.01, 0.01), stop=stop)
        finally:
            timer.cancel()
    line = stderr_lines(capsys)[-1]
    assert code == 1 and line.startswith(
        "error: source lost: no frame after 2 reconnect attempts"), line
    assert ", 2 reconnects, " in line


class FlappingCamera:
    """A live source whose every reopen works, and that drops after `frames_up` frames."""

    live, frame_count, fps, width, height = True, None, 500.0, 8, 6
    spec = SourceSpec("camera", 0)

    def __init__(self, frames_up: int) -> None:
        self.frames_up, self.reopen_calls, self._left = frames_up, 0, frames_up

    def read(self):
        if self._left == 0:
            return None
        self._left -= 1
        time.sleep(1.0 / self.fps)
        import numpy as np

        return Grabbed(None, np.zeros((6, 8, 3), np.uint8))

    def reopen(self) -> bool:
        self.reopen_calls += 1
        self._left = self.frames_up
        return True

    def close(self) -> None:
        pass


@pytest.mark.parametrize("frames_up, lost", [(5, True), (150, False)])
def test_only_a_lasting_recovery_resets_the_failed_attempts(monkeypatch, frames_up, lost):
    monkeypatch.setattr(capture, "STABLE_S", 0.2)     # 5 frames: 0.01 s; 150: 0.3 s
    camera, stop = FlappingCamera(frames_up), threading.Event()
    sink = BoundedQueue(10_000)
    run = Capture(camera, [sink], stop, max_reconnects=3, backoff=Backoff(0.001, 0.001),
                  max_frames=0 if lost else 6 * frames_up).start()
    assert run.join(10.0)
    end = run.outcome()
    assert end.reason == ("lost" if lost else "max_frames"), end
    assert camera.reopen_calls == (3 if lost else 5)


# --------------------------------------------------------------------------- opening


def test_a_stream_that_never_answers_is_an_input_error_after_the_timeout(monkeypatch,
                                                                         capsys):
    monkeypatch.setattr(source, "STREAM_TIMEOUT_S", 1.0)
    factory = FakeFactory()
    with SilentServer() as server:
        start = time.monotonic()
        code = app.run(app_config(source=f"http://127.0.0.1:{server.port}/live"),
                       detector_factory=factory)
    assert code == 2 and time.monotonic() - start < 8 and factory.built == []
    assert "cannot open this stream (no answer within 1 s" in stderr_lines(capsys)[-1]


def start_main(*argv: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def interrupt(process: subprocess.Popen) -> tuple[int, str, float]:
    """SIGINT; (exit code, stderr, seconds it took to exit)."""
    process.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        _, err = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, err, time.monotonic() - sent


def test_ctrl_c_while_a_stream_opens_exits_130_at_once_with_one_line():
    with SilentServer() as server:
        process = start_main("--source", f"http://127.0.0.1:{server.port}/live", "--prompt",
                             "x", "--headless")
        assert server.accepted.wait(60), "main.py never connected"
        time.sleep(0.5)                                   # opening now hangs on the server
        code, err, took_s = interrupt(process)
    assert code == 130 and took_s < 3, (code, err)
    assert err.strip().splitlines() == ["stopped by SIGINT before the run started"], err


@pytest.mark.parametrize("delay_s", [0.3, 1.5])
def test_ctrl_c_during_the_imports_exits_130_without_a_traceback(delay_s):
    with SilentServer() as server:
        process = start_main("--source", f"http://127.0.0.1:{server.port}/live", "--prompt",
                             "x", "--headless")
        time.sleep(delay_s)              # torch alone takes seconds to import here
        code, err, took_s = interrupt(process)
    assert code == 130 and took_s < 3, (code, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("stopped by SIGINT"), err
