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


def damaged_mp4(path: Path, n_frames: int = 300, garbage_bytes: int = 15_000) -> Path:
    """An mp4 with `garbage_bytes` of noise written over it at 5 %: a damaged stretch of
    some 50 frames (more than any fixed give-up count of a few dozen), good frames after."""
    write_video(path, n_frames, fps=30.0)
    data = bytearray(path.read_bytes())
    at = len(data) // 20
    data[at:at + garbage_bytes] = np.random.default_rng(0).integers(
        0, 256, garbage_bytes, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def plain_opencv_count(path: Path, reads: int) -> int:
    """Frames a plain cv2 loop decodes when it reads on through failures."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    decoded = sum(bool(cap.read()[0]) for _ in range(reads))
    cap.release()
    return decoded


def test_good_frames_after_a_damaged_stretch_of_an_mp4_are_all_read(tmp_path, capsys):
    video = damaged_mp4(tmp_path / "damaged.mp4")
    decodable = plain_opencv_count(video, 600)
    assert 150 < decodable < 300 - 40                # a long stretch is lost, most is not
    dets = tmp_path / "d.jsonl"
    assert app.run(app_config(source=str(video), detections=str(dets)),
                   detector_factory=FakeFactory()) == 0
    frames = [r["frame"] for r in jsonl(dets)]
    assert len(frames) == decodable and frames == sorted(set(frames)) and frames[-1] == 299
    assert last_stderr_line(capsys).startswith(f"done: {decodable} frames processed, "
                                               f"{300 - decodable} unreadable frames skipped")


def test_a_damaged_file_of_unknown_length_is_read_through_a_bounded_stretch(tmp_path):
    from realtime.live.source import BAD_STRETCH_S, open_reader, parse_source

    video = damaged_mp4(tmp_path / "damaged.mp4")
    reader = open_reader(parse_source(str(video)))
    reader.frame_count = None                         # as a container without a count
    assert reader._bad_reads_allowed() == BAD_STRETCH_S * 30
    got = 0
    while reader.read() is not None:
        got += 1
    reader.close()
    assert got == plain_opencv_count(video, 600)


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


def main_writing(video: Path, model_dir: Path, output: Path, dets: Path) -> subprocess.Popen:
    """main.py on `video` with the tiny model, writing both outputs."""
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--source", str(video), "--model",
         str(model_dir), "--device", "cpu", "--method", "dense", "--prompt", "a red circle",
         "--headless", "--output", str(output), "--detections", str(dets)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for_lines(process: subprocess.Popen, dets: Path, lines: int, timeout_s: float) -> None:
    """Until `dets` holds `lines` lines; the process must still be running then."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if dets.exists() and dets.read_text().count("\n") >= lines:
            break
        time.sleep(0.05)
    assert process.poll() is None, process.communicate()[1]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_finishes_cleanly_with_playable_video_and_whole_lines(tmp_path, tiny_model_dir,
                                                                     signum, code):
    video = write_video(tmp_path / "long.mp4", 300, size=(160, 120), fps=30.0)
    out, dets = tmp_path / "o.mp4", tmp_path / "d.jsonl"
    process = main_writing(video, tiny_model_dir, out, dets)
    try:
        wait_for_lines(process, dets, 5, timeout_s=90)
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


# --------------------------------------------------------------------------- the user's files


def _same_file_cases(tmp_path: Path):
    """(app keys, the flag the error names) for each way of naming the source again."""
    video = tmp_path / "a.mp4"
    (tmp_path / "link.mp4").symlink_to(video)
    os.link(video, tmp_path / "hard.mp4")
    (tmp_path / "sub").mkdir()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n")
    src = str(video)
    return [
        (dict(source=src, output=src), "--output"),
        (dict(source=src, output="./a.mp4"), "--output"),            # run from tmp_path
        (dict(source="a.mp4", output=str(tmp_path / "sub" / ".." / "a.mp4")), "--output"),
        (dict(source=src, output=str(tmp_path / "link.mp4")), "--output"),
        (dict(source=str(tmp_path / "link.mp4"), output=src), "--output"),
        (dict(source=src, output=str(tmp_path / "hard.mp4")), "--output"),
        (dict(source=src, detections=src), "--detections"),
        (dict(source=src, output="new.mp4", detections="./new.mp4"), "--detections"),
        (dict(source=src, detections=str(prompts), prompts_file=str(prompts)), "--detections"),
    ]


def test_an_output_naming_a_file_the_run_reads_is_an_input_error_and_the_file_is_kept(
        tmp_path, capsys, monkeypatch):
    video = write_video(tmp_path / "a.mp4", 12)
    original = video.read_bytes()
    monkeypatch.chdir(tmp_path)
    factory = FakeFactory()
    for app_keys, flag in _same_file_cases(tmp_path):
        code = app.run(app_config(**app_keys), detector_factory=factory)
        lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1, (app_keys, lines)
        assert lines[0].startswith(f"error: {flag} ") and "is the same file as" in lines[0]
        assert video.read_bytes() == original, app_keys
        assert (tmp_path / "prompts.txt").read_text() == "a red circle\n"
        assert not (tmp_path / "new.mp4").exists()       # nothing was opened for writing
    assert factory.built == []


def test_an_output_inside_an_image_folder_source_may_not_name_one_of_its_images(tmp_path,
                                                                                 capsys):
    import cv2

    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "f1.png"), np.zeros((8, 8, 3), np.uint8))
    original = (folder / "f1.png").read_bytes()
    code = app.run(app_config(source=str(folder), detections=str(folder / "f1.png")),
                   detector_factory=FakeFactory())
    assert code == 2 and "is the same file as --source" in last_stderr_line(capsys)
    assert (folder / "f1.png").read_bytes() == original
    dets = folder / "d.jsonl"                            # a new file beside them is fine
    assert app.run(app_config(source=str(folder), detections=str(dets)),
                   detector_factory=FakeFactory()) == 0 and len(jsonl(dets)) == 1


def test_the_config_file_named_as_an_output_is_refused_and_kept(tmp_path, capsys):
    import main

    preset = tmp_path / "p.yaml"
    preset.write_text("detector: {method: dense}\n")
    video = write_video(tmp_path / "a.mp4", 4)
    for flag in ("--output", "--detections"):
        target = str(preset) if flag == "--detections" else str(tmp_path / "p.yaml")
        code = main.main(["--config", str(preset), "--source", str(video), "--headless",
                          "--prompt", "x", flag, target])
        err = capsys.readouterr().err.splitlines()
        assert code == 2 and len(err) == 1 and "is the same file as --config" in err[0], err
    assert preset.read_text() == "detector: {method: dense}\n"


# --------------------------------------------------------------------------- true counts


def test_the_summary_after_sigint_reports_the_real_reconnects(capsys):
    camera = FakeCamera(fps=200, drop_after=10, failed_reopens=2)

    def interrupt_once_flowing_again(loop):
        if loop.view.frame.index >= 20:
            os.kill(os.getpid(), signal.SIGINT)

    code = app.run(app_config(), detector_factory=FakeFactory(), reader=camera,
                   display=RecordingDisplay(), backoff=Backoff(0.01, 0.01),
                   on_frame=interrupt_once_flowing_again)
    line = last_stderr_line(capsys)
    assert code == 130 and camera.reopen_calls == 3
    assert line.startswith("stopped by SIGINT: ") and (
        ", 0 unreadable frames skipped, 3 reconnects, " in line), line


def test_the_summary_after_sigterm_reports_the_real_skipped_frames(tmp_path, capsys):
    video = write_video(tmp_path / "broken.avi", 60, fps=10.0)
    corrupt_frames(video, (10, 11, 12))
    dets = tmp_path / "d.jsonl"

    def terminate(loop):
        if loop.processed == 20:
            os.kill(os.getpid(), signal.SIGTERM)

    code = app.run(app_config(source=str(video), detections=str(dets)),
                   detector_factory=FakeFactory(), on_frame=terminate)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 143 and line.startswith("stopped by SIGTERM: "), line
    processed = len(jsonl(dets))
    assert line.startswith(f"stopped by SIGTERM: {processed} frames processed, 3 unreadable "
                           "frames skipped, 0 reconnects")


# --------------------------------------------------------------------------- write failures


class NoiseFile(SyntheticFile):
    """A file-like source of random frames: they compress badly and fill a disk fast."""

    def __init__(self, count: int, size=(320, 240)) -> None:
        super().__init__(count, size)
        self._rng = np.random.default_rng(0)

    def read(self):
        grabbed = super().read()
        if grabbed is None:
            return None
        return Grabbed(grabbed.index, self._rng.integers(0, 256, (self.height, self.width, 3),
                                                         dtype=np.uint8))


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs; skipped where this user may not mount one (root only)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill(disk: Path, leave_bytes: int) -> None:
    """Fill `disk` up, then free about `leave_bytes` (whole 4 KiB pages)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
        f.truncate(max(0, filler.stat().st_size - leave_bytes) // 4096 * 4096)


def summary_line(capsys) -> str:
    """The last line of stderr, split on newlines only (a progress bar's carriage
    returns would show here if the summary were glued to it)."""
    return [line for line in capsys.readouterr().err.split("\n") if line.strip()][-1]


def complete_lines(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n"), repr(text[-80:])
    return [json.loads(line) for line in text.splitlines()]


def test_a_full_device_under_the_jsonl_file_stops_with_exit_1_and_one_line(tmp_path, capsys):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    video = write_video(tmp_path / "in.mp4", 20)
    code = app.run(app_config(source=str(video), detections="/dev/full"),
                   detector_factory=FakeFactory())
    line = summary_line(capsys)
    assert code == 1, line
    assert line.startswith("error: --detections /dev/full: cannot write (No space left on "
                           "device); it keeps the 0 complete lines written (0 frames "
                           "processed"), line


def test_a_full_disk_under_the_jsonl_file_keeps_only_its_complete_lines(small_disk, capsys):
    fill(small_disk, 4096)
    dets = small_disk / "d.jsonl"
    code = app.run(app_config(detections=str(dets)), detector_factory=FakeFactory(),
                   reader=SyntheticFile(5000))
    line = summary_line(capsys)
    kept = complete_lines(dets)
    assert code == 1 and 5 < len(kept) < 5000, line
    assert [r["frame"] for r in kept] == list(range(len(kept)))
    assert line.startswith(f"error: --detections {dets}: cannot write (No space left on "
                           f"device); it keeps the {len(kept)} complete lines written ("), line


@pytest.mark.parametrize("suffix", [".mp4", ".avi", ".mkv"])
def test_a_full_disk_under_the_video_stops_with_exit_1_and_keeps_the_jsonl(tmp_path,
                                                                          small_disk, capsys,
                                                                          suffix):
    out, dets = small_disk / f"o{suffix}", tmp_path / "d.jsonl"
    code = app.run(app_config(output=str(out), detections=str(dets)),
                   detector_factory=FakeFactory(), reader=NoiseFile(400))
    line = summary_line(capsys)
    assert code == 1 and line.startswith(f"error: --output {out}: "), line
    kept = complete_lines(dets)
    assert 0 < len(kept) < 400 and f"({len(kept)} frames processed, " in line, line


def test_a_video_that_cannot_be_finalised_is_an_error_on_close(small_disk):
    from realtime.live.outputs import OutputError, VideoOutput

    fill(small_disk, 96 * 1024)
    frames = NoiseFile(20, size=(160, 120))
    video = VideoOutput(small_disk / "o.mp4", 10.0, 160, 120)
    while (grabbed := frames.read()) is not None:   # FFmpeg buffers these: no error yet
        video.write(grabbed.image)
    with pytest.raises(OutputError, match=r"the finished video does not play \(20 frames"):
        video.close()


# --------------------------------------------------------------------------- SIGKILL


def killed_run(tmp_path: Path, tiny_model_dir: Path, output: Path, after_lines: int) -> int:
    """main.py writing `output`, killed with SIGKILL once `after_lines` JSON lines are
    out; the frames it had processed then."""
    video = write_video(tmp_path / "in.mp4", 250, size=(640, 480), fps=30.0)
    dets = tmp_path / f"{output.stem}.jsonl"
    process = main_writing(video, tiny_model_dir, output, dets)
    try:
        wait_for_lines(process, dets, after_lines, timeout_s=120)
        process.kill()
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
    return dets.read_text().count("\n")


def decodable_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    count = 0
    while cap.isOpened() and cap.read()[0]:
        count += 1
    cap.release()
    return count


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".avi", ".mkv", ".mp4"])
def test_after_sigkill_an_avi_or_mkv_keeps_what_reached_the_disk_an_mp4_nothing(
        tmp_path, tiny_model_dir, suffix):
    output = tmp_path / f"out{suffix}"
    processed = killed_run(tmp_path, tiny_model_dir, output, after_lines=120)
    decodable = decodable_frames(output)
    print(f"{suffix}: {decodable} of {processed} frames decode after SIGKILL")
    if suffix == ".mp4":
        assert decodable == 0          # no index without a clean exit: README says so
    elif suffix == ".avi":
        assert processed - 30 <= decodable <= processed   # MJPG: all but the last frames
    else:
        # Matroska plays up to what left FFmpeg's 256 KiB buffer (~80 frames here).
        assert 0 < decodable <= processed and output.stat().st_size >= 256 * 1024


# --------------------------------------------------------------------------- memory


def _limit_address_space() -> None:
    """The child may map at most 8 GiB: code that tries to allocate tens of GiB fails
    there instead of driving this machine into the kernel's out-of-memory killer."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, 8 * 2**30))


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS guard is Linux-only")
def test_occlusion_on_an_extreme_aspect_ratio_is_an_input_error_not_an_oom(tmp_path,
                                                                           tiny_model_dir):
    import cv2

    wide = tmp_path / "wide.png"                     # 10000x100: 2500 occlusion cells
    cv2.imwrite(str(wide), np.full((100, 10000, 3), 90, np.uint8))
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--source", str(wide), "--model",
         str(tiny_model_dir), "--device", "cpu", "--dtype", "float32", "--method", "occlusion",
         "--prompt", "a red circle", "--headless", "--detections", str(tmp_path / "d.jsonl")],
        cwd=ROOT, capture_output=True, text=True, timeout=120, preexec_fn=_limit_address_space)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-2000:]
    assert lines[0].startswith("error: detector.occlusion_cells: masking 2500 cells (500x5) "
                               "of a 6400x64 input for a 10000x100 frame needs about "), lines
    assert "over the memory budget of" in lines[0] and "--method dense" in lines[0]
