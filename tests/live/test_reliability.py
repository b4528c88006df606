"""Issue 7: cameras that drop, files that break, bad input, interruptions, long runs."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import (ROOT, FakeCamera, FakeFactory, RecordingDisplay, app_config,
                      pipeline_threads, read_video, write_video)
from realtime.live import app
from realtime.live.capture import Backoff
from realtime.config import ConfigError, DetectorConfig, config_from_dict
from realtime.live.source import Grabbed, SourceSpec


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def last_stderr_line(capsys) -> str:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()][-1]


# --------------------------------------------------------------------------- live sources


def test_camera_that_drops_is_reopened_and_the_window_shows_reconnecting(capsys):
    camera = FakeCamera(fps=100, size=(160, 120), drop_after=20, failed_reopens=3)
    banners, indices = [], []

    def watch(loop):
        indices.append(loop.view.frame.index)
        if loop.capture.reconnecting.is_set():
            shown = loop.view.shown                  # a dark band across the middle
            band = any(np.all(row == 32) for row in shown[30:90])
            banners.append((loop.view.frame.index, band))

    code = app.run(app_config(max_frames=40), detector_factory=FakeFactory(), reader=camera,
                   display=RecordingDisplay(), backoff=Backoff(0.05, 0.1), on_frame=watch)
    assert code == 0
    # While the camera was away the last frame (19) stayed up under the dark banner...
    assert banners and all(index == 19 and dark for index, dark in banners)
    # ...and afterwards frames flowed again, numbered on.
    assert max(indices) >= 35 and camera.reopen_calls == 4
    assert "frames processed, 0 unreadable frames skipped, 4 reconnects, " in last_stderr_line(
        capsys)


def test_max_reconnects_bounds_the_attempts_then_exit_1(capsys):
    camera = FakeCamera(fps=200, drop_after=5, recover=False)
    code = app.run(app_config(max_reconnects=2), detector_factory=FakeFactory(),
                   reader=camera, display=RecordingDisplay(), backoff=Backoff(0.01, 0.01))
    assert code == 1 and camera.reopen_calls == 2 and pipeline_threads() == []
    assert last_stderr_line(capsys).startswith(
        "error: source lost: no frame after 2 reconnect attempts")


def test_zero_max_reconnects_keeps_trying_until_stopped():
    camera = FakeCamera(fps=200, drop_after=3, recover=False)

    def stop_after_many_attempts(loop):
        if camera.reopen_calls >= 12:
            os.kill(os.getpid(), signal.SIGINT)

    code = app.run(app_config(max_reconnects=0), detector_factory=FakeFactory(),
                   reader=camera, display=RecordingDisplay(), backoff=Backoff(0.005, 0.005),
                   on_frame=stop_after_many_attempts)
    assert code == 130 and camera.reopen_calls >= 12 and pipeline_threads() == []


# --------------------------------------------------------------------------- damaged files


def corrupt_frames(avi: Path, frames: tuple[int, ...]) -> None:
    """Overwrite the start of some MJPG frames' data (each frame is a JPEG: FF D8 FF)."""
    data = bytearray(avi.read_bytes())
    starts = [i for i in range(len(data) - 2) if data[i:i + 3] == b"\xff\xd8\xff"]
    for k in frames:
        data[starts[k] + 2:starts[k] + 400] = b"\x5a" * 398
    avi.write_bytes(bytes(data))


def test_corrupt_frames_are_skipped_counted_and_keep_their_place(tmp_path, capsys):
    video = write_video(tmp_path / "broken.avi", 30, fps=10.0)
    corrupt_frames(video, (10, 11, 20))
    dets = tmp_path / "d.jsonl"
    code = app.run(app_config(source=str(video), detections=str(dets)),
                   detector_factory=FakeFactory())
    assert code == 0
    records = jsonl(dets)
    assert [r["frame"] for r in records] == [i for i in range(30) if i not in (10, 11, 20)]
    assert records[10]["frame"] == 12 and records[10]["t"] == pytest.approx(1.2)
    assert last_stderr_line(capsys).startswith("done: 27 frames processed, 3 unreadable frames "
                                               "skipped, 0 reconnects, 27 frames shown")


def test_truncated_file_finishes_and_reports_the_missing_frames(tmp_path, capsys):
    video = write_video(tmp_path / "cut.avi", 30, fps=10.0)
    data = video.read_bytes()
    video.write_bytes(data[: int(len(data) * 0.6)])
    dets = tmp_path / "d.jsonl"
    assert app.run(app_config(source=str(video), detections=str(dets)),
                   detector_factory=FakeFactory()) == 0
    frames = [r["frame"] for r in jsonl(dets)]
    assert 5 < len(frames) < 30 and frames == list(range(len(frames)))
    assert last_stderr_line(capsys).startswith(f"done: {len(frames)} frames processed, "
                                               f"{30 - len(frames)} unreadable frames skipped, "
                                               "0 reconnects")


def test_truncated_mp4_without_an_index_is_an_input_error(tmp_path, capsys):
    video = write_video(tmp_path / "cut.mp4", 30)
    video.write_bytes(video.read_bytes()[:4000])
    factory = FakeFactory()
    assert app.run(app_config(source=str(video)), detector_factory=factory) == 2
    assert "cannot open this video" in last_stderr_line(capsys) and factory.built == []


# --------------------------------------------------------------------------- prompts


def test_prompts_merged_truncated_with_a_warning_and_non_ascii_end_to_end(tmp_path, caplog,
                                                                          tiny_model_dir):
    long_prompt = " ".join(["red"] * 50)     # 199 characters; the tiny model reads 32 tokens
    prompts = ["a red circle", " a red circle ", "κόκκινος κύκλος", "红色的圆", long_prompt]
    config = config_from_dict({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "detector": {"method": "dense", "threshold": 0.0, "gate": 0.0},
        "app": {"source": str(write_video(tmp_path / "v.mp4", 4)), "prompts": prompts,
                "headless": True, "detections": str(tmp_path / "d.jsonl"),
                "output": str(tmp_path / "o.mp4")}})
    with caplog.at_level(logging.WARNING):
        assert app.run(config) == 0
    assert any("tokens long" in r.getMessage() for r in caplog.records)
    labels = {d["label"] for r in jsonl(tmp_path / "d.jsonl") for d in r["detections"]}
    # gate and threshold 0: every prompt reports a region; duplicates were merged.
    assert labels == {"a red circle", "κόκκινος κύκλος", "红色的圆", long_prompt}
    assert read_video(tmp_path / "o.mp4")[0] == 4


def test_only_empty_prompts_is_an_input_error(capsys, video_file):
    assert app.run(app_config(source=str(video_file), prompts=["", "  ", "\t"]),
                   detector_factory=FakeFactory()) == 2
    assert "no prompt given" in last_stderr_line(capsys)


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("data, fragment", [
    ({"detector": {"tile_px": 0}}, "detector.tile_px: must be 4..4096 (got 0)"),
    ({"detector": {"threshold": -0.1}}, "detector.threshold: must be 0.0..1.0 (got -0.1)"),
    ({"detector": {"window_tiles": "3"}}, "detector.window_tiles: must be an integer"),
    ({"app": {"max_reconnects": 1.5}}, "app.max_reconnects: must be an integer"),
    ({"app": {"colour": "red"}}, "app.colour: unknown key (allowed:"),
])
def test_configuration_errors_name_the_key_and_what_is_allowed(data, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_window_larger_than_the_grid_names_the_key_and_range():
    from realtime.engine.tiles import grid_for_frame

    with pytest.raises(ConfigError, match=r"detector.window_tiles: must be 1..3 .* \(got 5\)"):
        grid_for_frame(320, 240, DetectorConfig(tile_px=80, window_tiles=5))


# --------------------------------------------------------------------------- interruption


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_cleanly_with_playable_video_and_whole_lines(tmp_path, tiny_model_dir,
                                                                     signum, code):
    video = write_video(tmp_path / "long.mp4", 300, size=(160, 120), fps=30.0)
    out, dets = tmp_path / "o.mp4", tmp_path / "d.jsonl"
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--source", str(video), "--model",
         str(tiny_model_dir), "--device", "cpu", "--method", "dense", "--prompt", "a red circle",
         "--headless", "--output", str(out), "--detections", str(dets)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and process.poll() is None:
            if dets.exists() and dets.read_text().count("\n") >= 5:
                break
            time.sleep(0.05)
        assert process.poll() is None, process.communicate()[1]
        process.send_signal(signum)
        signalled = time.monotonic()
        _, err = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == code, err
    assert time.monotonic() - signalled < 5.0        # threads joined promptly
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(f"stopped by {signal.Signals(signum).name}")
    text = dets.read_text()
    records = [json.loads(line) for line in text.splitlines()]   # only whole lines
    assert text.endswith("\n") and 5 <= len(records) < 300
    assert [r["frame"] for r in records] == list(range(len(records)))
    assert read_video(out)[:3] == (len(records), 160, 120)     # finalised: it plays


# --------------------------------------------------------------------------- device trouble


def test_out_of_memory_halves_the_batch_and_retries(tiny_model_dir, caplog):
    from realtime import ModelConfig, load_model

    model = load_model(ModelConfig(name=str(tiny_model_dir), device="cpu"))
    pixels = torch.randn(8, 3, 64, 64)
    expected = model.encode_images(pixels)
    real_vision, batches = model._vision, []

    def vision_with_little_memory(chunk, any_size):
        batches.append(len(chunk))
        if len(chunk) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_vision(chunk, any_size)

    model._vision = vision_with_little_memory
    with caplog.at_level(logging.WARNING):
        got = model.encode_images(pixels)
    assert torch.allclose(got, expected, atol=1e-5)
    assert batches[:2] == [8, 4] and model.max_batch == 2
    assert any("retrying with 4" in r.getMessage() for r in caplog.records)
    batches.clear()
    model.encode_images(pixels)                       # later frames keep the smaller batch
    assert batches == [2, 2, 2, 2]


# --------------------------------------------------------------------------- long runs


class SyntheticFile:
    """A file-like source of `count` small frames, generated on the fly."""

    def __init__(self, count: int, size=(64, 48)) -> None:
        self.spec, self.fps, self.frame_count = SourceSpec("video", "synthetic"), 30.0, count
        self.width, self.height = size
        self.live, self._next = False, 0
        self._images = [np.full((size[1], size[0], 3), v, np.uint8) for v in (60, 160)]

    def read(self):
        if self._next >= self.frame_count:
            return None
        index, self._next = self._next, self._next + 1
        return Grabbed(index, self._images[index % 2])

    def reopen(self) -> bool:
        return False

    def close(self) -> None:
        pass


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_ten_thousand_frames_with_bounded_memory_and_queues(tmp_path):
    from realtime import Detector
    from tests.stubs import StubClip

    count, rss, sizes = 10_000, {}, []

    def factory(prompts, config):
        return Detector(prompts, DetectorConfig(tiles_per_side=2, window_tiles=1), StubClip())

    def watch(loop):
        sizes.append(loop.results.qsize())
        if loop.processed in (1_000, 4_000, 7_000, count):
            rss[loop.processed] = resident_kib()

    dets, out = tmp_path / "d.jsonl", tmp_path / "o.mp4"
    code = app.run(app_config(prompts=["white", "black"], detections=str(dets),
                              output=str(out)),
                   detector_factory=factory, reader=SyntheticFile(count), on_frame=watch)
    assert code == 0
    assert sum(1 for _ in dets.open()) == count
    growth_kib = max(rss.values()) - rss[1_000]
    assert growth_kib < 25 * 1024, rss               # after warm-up: flat, not per frame
    assert max(sizes) <= app.QUEUE_FRAMES
