"""The application in-process, with fake detectors, cameras and displays: file and live
pipelines, keys, orderly shutdown from each cause, input errors before any work."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time

import cv2
import numpy as np
import pytest

from conftest import (FakeCamera, FakeDetector, FakeFactory, RecordingDisplay, app_config,
                      pipeline_threads, read_video, write_video)
from realtime.live import app
from realtime.config import DEFAULT_MODEL, config_from_dict
from realtime.live.render import label_colour


def jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


# --------------------------------------------------------------------------- files


def test_headless_file_run_pairs_every_frame_with_its_own_detections(tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 24, size=(160, 120), fps=10.0)
    out, dets = tmp_path / "out.mp4", tmp_path / "d.jsonl"
    factory = FakeFactory()
    code = app.run(app_config(source=str(video), output=str(out), detections=str(dets),
                              track={"enabled": False}),
                   detector_factory=factory)
    assert code == 0
    records = jsonl(dets)
    assert [r["frame"] for r in records] == list(range(24))
    assert [r["t"] for r in records] == pytest.approx([i / 10 for i in range(24)])
    assert all(r["detections"] == [{"label": "a red circle", "box": [40.0, 30.0, 120.0, 90.0],
                                    "score": 0.87, "similarity": 0.31}] for r in records)
    assert factory.built[0].seen == list(range(24))          # inference saw every frame
    assert read_video(out) == (24, 160, 120, 10.0)
    annotated = cv2.VideoCapture(str(out)).read()[1]
    left_edge = annotated[35:85, 40:43].reshape(-1, 3).astype(int)
    assert np.abs(left_edge.mean(0) - label_colour(0)).max() < 60   # the box is in the video
    assert stderr_lines(capsys)[-1].startswith("done: 24 frames processed, 0 unreadable frames "
                                               "skipped, 0 reconnects, 24 frames shown in ")
    assert pipeline_threads() == []


def test_a_tracked_file_run_writes_track_ids_and_names_the_tracks(tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 12, size=(160, 120), fps=10.0)
    dets = tmp_path / "d.jsonl"
    factory = FakeFactory()
    code = app.run(app_config(source=str(video), detections=str(dets),
                              track={"keep_score": 0.35}), detector_factory=factory)
    assert code == 0
    records = jsonl(dets)
    assert [r["frame"] for r in records] == list(range(12))
    assert records[0]["detections"] == []            # min_hits 2: not shown on its first frame
    for record in records[1:]:
        assert record["detections"] == [{"label": "a red circle",
                                         "box": [40.0, 30.0, 120.0, 90.0], "score": 0.87,
                                         "similarity": 0.31, "track_id": 1,
                                         "state": "confirmed"}]
        assert set(record) == {"frame", "t", "detections"} | ({"prompts", "generation"}
                                                              if record is records[0] else set())
    # while tracking, the detector reports boxes down to a keep_score under the gate
    assert factory.built[0].config.gate == pytest.approx(0.35)
    lines = stderr_lines(capsys)
    assert lines[-3:-1] == ["tracks: 1 shown", "  #1 a red circle: 0.10-1.10 s, 11 frames"]
    assert lines[-1].startswith("done: 12 frames processed")


def test_no_track_and_single_images_give_raw_detections(tmp_path, capsys):
    video = write_video(tmp_path / "in.mp4", 3, size=(160, 120), fps=10.0)
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.full((48, 64, 3), 90, np.uint8))
    for source, track in ((video, {"enabled": False}), (image, {})):
        dets = tmp_path / "d.jsonl"
        factory = FakeFactory()
        assert app.run(app_config(source=str(source), detections=str(dets), track=track),
                       detector_factory=factory) == 0
        first = jsonl(dets)[0]["detections"][0]
        assert "track_id" not in first and "state" not in first
        assert factory.built[0].config.gate == 0.5
    assert not any(line.startswith("tracks:") for line in stderr_lines(capsys))


def test_folder_of_images_is_processed_in_order(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        cv2.imwrite(str(folder / f"img{i}.png"), np.full((48, 64, 3), 50 * i, np.uint8))
    dets, out = tmp_path / "d.jsonl", tmp_path / "o.avi"
    assert app.run(app_config(source=str(folder), detections=str(dets), output=str(out)),
                   detector_factory=FakeFactory()) == 0
    assert [(r["frame"], r["t"]) for r in jsonl(dets)] == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert read_video(out) == (3, 64, 48, 1.0)


def test_max_frames_stops_a_file_early(tmp_path, video_file):
    dets = tmp_path / "d.jsonl"
    assert app.run(app_config(source=str(video_file), detections=str(dets), max_frames=5),
                   detector_factory=FakeFactory()) == 0
    assert [r["frame"] for r in jsonl(dets)] == [0, 1, 2, 3, 4]


def test_realtime_flag_plays_a_file_at_its_rate_and_drops_inference_frames(tmp_path):
    video = write_video(tmp_path / "v.mp4", 30, fps=30.0)
    dets, display = tmp_path / "d.jsonl", RecordingDisplay()
    start = time.monotonic()
    code = app.run(app_config(source=str(video), detections=str(dets), realtime=True),
                   detector_factory=FakeFactory(delay_s=0.1), display=display)
    assert code == 0 and time.monotonic() - start >= 0.9   # 30 frames at 30 fps: >= ~1 s
    frames = [r["frame"] for r in jsonl(dets)]
    assert frames == sorted(set(frames)) and len(frames) < 30   # inference skipped frames
    assert display.shown > len(frames)                            # the window did not


# --------------------------------------------------------------------------- live


def test_live_render_loop_keeps_its_rate_with_a_slow_detector():
    camera = FakeCamera(fps=100, size=(64, 48))
    display, lags, sizes, processed = RecordingDisplay(), [], [], []

    def watch(loop):
        view = loop.view
        if view.detections is not None:
            lags.append(view.frame.index - view.detections.frame_index)
        sizes.append((loop.results.qsize(), loop.frames.qsize()))
        processed.append(loop.processed)

    code = app.run(app_config(max_frames=150), detector_factory=FakeFactory(delay_s=0.1),
                   display=display, reader=camera, on_frame=watch)
    assert code == 0
    # Most of the 150 camera frames were shown, while inference (10 fps) saw only a few...
    assert display.shown >= 75 and display.shown >= 3 * processed[-1] > 0
    # ...about recent frames: the lag stays bounded (a FIFO would fall 100+ frames
    # behind), and so do the buffers.
    assert max(lags) <= 40
    assert all(r <= app.RESULTS_LIVE and f <= 1 for r, f in sizes)


class GlidingDetector(FakeDetector):
    """A slow detector whose one box moves at 100 px/s of the frame's own time."""

    def detect(self, image, frame_index=0, timestamp_s=0.0):
        found = super().detect(image, frame_index, timestamp_s)
        box = np.array([[10 + 100 * timestamp_s, 40, 50 + 100 * timestamp_s, 100]], np.float32)
        return dataclasses.replace(found, boxes=box)


def left_edge(image, row: int = 70):
    """Column of the leftmost pixel of prompt 0's colour on a row (None: no box there)."""
    b, g, r = label_colour(0)
    hits = np.flatnonzero(np.abs(image[row].astype(int) - (b, g, r)).max(axis=1) < 40)
    return int(hits[0]) if len(hits) else None


def test_frames_between_inference_results_draw_boxes_moved_along_their_velocity():
    camera = FakeCamera(fps=100, size=(320, 120))
    display, shown = RecordingDisplay(), []

    def watch(loop):
        if loop.view.detections is not None and len(loop.view.detections):
            shown.append((loop.view.frame.timestamp_s, loop.view.detections.timestamp_s,
                          left_edge(loop.view.shown)))

    factory = lambda prompts, config: GlidingDetector(prompts, delay_s=0.1,
                                                      config=config.detector)
    code = app.run(app_config(max_frames=160, track={"smoothing": 0.2}),
                   detector_factory=factory, display=display, reader=camera, on_frame=watch)
    assert code == 0
    results = sorted({t_result for _, t_result, _ in shown})
    assert len(results) >= 8
    # from the sixth result on, once the filter's velocity has built up
    between = [(t, t_result, x) for t, t_result, x in shown
               if t - t_result > 0.03 and t_result >= results[5]]
    assert len(between) >= 10
    for t, t_result, x in between:
        # drawn where the box is at the frame's own time, not where the result left it
        assert x == pytest.approx(10 + 100 * t, abs=2.5)
        assert x - (10 + 100 * t_result) >= 2.5


def test_frames_between_results_stay_put_without_tracking():
    camera = FakeCamera(fps=100, size=(320, 120))
    shown = []

    def watch(loop):
        if loop.view.detections is not None:
            shown.append((loop.view.detections.timestamp_s, left_edge(loop.view.shown)))

    factory = lambda prompts, config: GlidingDetector(prompts, delay_s=0.1,
                                                      config=config.detector)
    assert app.run(app_config(max_frames=60, track={"enabled": False}),
                   detector_factory=factory, display=RecordingDisplay(), reader=camera,
                   on_frame=watch) == 0
    assert shown and all(x == pytest.approx(10 + 100 * t, abs=1.5) for t, x in shown)


def demo_config(**app_keys):
    """--demo with a stand-in model name (the fake factory loads nothing)."""
    app_keys = {"demo": True, "prompts": [], "headless": True, **app_keys}
    return config_from_dict({"model": {"name": "fake-model"}, "app": app_keys})


def test_demo_headless_is_deterministic_and_every_frame(tmp_path):
    runs = []
    for name in ("a", "b"):
        dets = tmp_path / f"{name}.jsonl"
        config = demo_config(detections=str(dets), max_frames=8)
        assert app.run(config, detector_factory=FakeFactory()) == 0
        runs.append(dets.read_text())
    records = [json.loads(line) for line in runs[0].splitlines()]
    assert runs[0] == runs[1] and [r["frame"] for r in records] == list(range(8))
    assert [r["t"] for r in records] == pytest.approx([i / 30 for i in range(8)], abs=1e-6)


def test_demo_defaults_to_the_shapes_model_and_the_scene_captions():
    config = app.with_demo_defaults(app_config(demo=True, prompts=[]))
    assert config.model.name.endswith(os.path.join("models", "shapes-clip"))
    prompts = app.resolve_prompts(config)
    assert prompts and all(p.startswith("a ") for p in prompts)
    mine = config_from_dict({"model": {"name": "my-model"}, "app": {"demo": True}})
    assert app.with_demo_defaults(mine).model.name == "my-model"
    assert app.with_demo_defaults(app_config()).model.name == DEFAULT_MODEL


def test_demo_without_its_trained_model_says_how_to_get_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(app, "SHAPES_MODEL", tmp_path / "shapes-clip")   # deleted, say
    factory = FakeFactory()
    assert app.run(app_config(demo=True, prompts=[]), detector_factory=factory) == 2
    assert "train_shapes_clip.py" in stderr_lines(capsys)[-1] and factory.built == []


def test_demo_in_a_window_plays_like_a_camera():
    display = RecordingDisplay()
    start = time.monotonic()
    code = app.run(demo_config(headless=False, max_frames=15),
                   detector_factory=FakeFactory(), display=display)
    assert code == 0 and display.shown >= 10
    assert time.monotonic() - start >= 0.4      # paced at 30 fps: 15 frames take ~0.5 s


# --------------------------------------------------------------------------- keys


def test_keys_change_threshold_heatmap_pause_and_write_snapshots(tmp_path, video_file):
    # The worker runs at most QUEUE_FRAMES + 1 frames ahead of the display, so
    # keys 12 frames apart must reach it on frames of their own.
    keys = {2: ord("+"), 3: ord("h"), 4: ord("s"), 14: ord("-"), 15: ord("-")}
    display, factory = RecordingDisplay(keys), FakeFactory()
    seen = {}

    def watch(loop):
        seen[display.shown] = (loop.view.threshold, loop.view.heatmap)

    code = app.run(app_config(source=str(video_file), snapshot_dir=str(tmp_path)),
                   detector_factory=factory, display=display, on_frame=watch)
    assert code == 0
    assert seen[2] == (0.55, False) and seen[3] == (0.55, True) and seen[15] == (0.45, True)
    thresholds = factory.built[0].thresholds
    assert 0.55 in thresholds and thresholds[-1] == 0.45   # the worker's detector got them
    snapshots = list(tmp_path.glob("snapshot-*.png"))
    assert len(snapshots) == 1 and cv2.imread(str(snapshots[0])).shape == (120, 160, 3)


def test_space_pauses_a_file_and_space_resumes(tmp_path, video_file):
    class PausingDisplay(RecordingDisplay):
        def show(self, image):
            key = super().show(image)
            if self.shown == 3:
                return ord(" ")
            if self.shown == 8:          # five redraws while paused, then resume
                return ord(" ")
            return key

    display, frames = PausingDisplay(), []
    code = app.run(app_config(source=str(video_file)), detector_factory=FakeFactory(),
                   display=display, on_frame=lambda loop: frames.append(loop.view.frame.index))
    assert code == 0 and frames == list(range(24))      # nothing lost to the pause
    assert display.shown > 24                            # the paused frame was redrawn


# --------------------------------------------------------------------------- shutdown


@pytest.mark.parametrize("key", [ord("q"), 27])
def test_quit_key_stops_everything_quickly_and_keeps_the_outputs(tmp_path, key):
    video = write_video(tmp_path / "long.mp4", 120)
    out, dets = tmp_path / "o.mp4", tmp_path / "d.jsonl"
    start = time.monotonic()
    code = app.run(app_config(source=str(video), output=str(out), detections=str(dets)),
                   detector_factory=FakeFactory(delay_s=0.01),
                   display=RecordingDisplay({5: key}))
    assert code == 0 and time.monotonic() - start < 10
    assert pipeline_threads() == []
    lines = jsonl(dets)
    assert [r["frame"] for r in lines] == list(range(len(lines))) and 5 <= len(lines) < 120
    assert read_video(out)[0] == len(lines)


def test_source_failure_stops_the_run_with_exit_1_and_one_line(tmp_path, capsys):
    class Failing(FakeCamera):
        def read(self):
            if self.frames_read >= 10:
                raise OSError("USB device disconnected")
            return super().read()

    dets = tmp_path / "d.jsonl"
    code = app.run(app_config(detections=str(dets)), detector_factory=FakeFactory(),
                   reader=Failing(fps=200), display=RecordingDisplay())
    assert code == 1 and pipeline_threads() == []
    last = stderr_lines(capsys)[-1]
    assert last.startswith("error: source failed: OSError: USB device disconnected")
    assert all(json.loads(line) for line in dets.read_text().splitlines())


def test_inference_that_keeps_failing_stops_the_run_with_exit_1(tmp_path, video_file, capsys):
    code = app.run(app_config(source=str(video_file)),
                   detector_factory=FakeFactory(fail_on={"all"}))
    assert code == 1 and pipeline_threads() == []
    assert "inference failed on 3 frames in a row" in stderr_lines(capsys)[-1]


def test_sigterm_stops_cleanly_with_complete_outputs(tmp_path, capsys):
    video = write_video(tmp_path / "long.mp4", 200)
    out, dets = tmp_path / "o.mp4", tmp_path / "d.jsonl"

    def terminate(loop):
        if loop.processed == 6:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    code = app.run(app_config(source=str(video), output=str(out), detections=str(dets)),
                   detector_factory=FakeFactory(), on_frame=terminate)
    assert code == 143 and signal.getsignal(signal.SIGTERM) == previous
    lines = jsonl(dets)
    assert 6 <= len(lines) < 200 and read_video(out)[0] == len(lines)
    assert stderr_lines(capsys)[-1].startswith("stopped by SIGTERM:")
    assert pipeline_threads() == []


# --------------------------------------------------------------------------- input errors


def assert_input_error(capsys, code: int, *fragments: str) -> None:
    lines = stderr_lines(capsys)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    for fragment in fragments:
        assert fragment in lines[0]


def test_input_errors_exit_2_with_one_line_before_any_model_is_loaded(tmp_path, capsys,
                                                                      video_file, monkeypatch):
    factory = FakeFactory()
    cases = [
        (dict(source=str(tmp_path / "nope.mp4")), ("no such file",)),
        (dict(source="97", output=str(tmp_path / "no" / "o.mp4")), ("--output", "does not exist")),
        (dict(source=str(video_file), detections=str(tmp_path)), ("--detections", "is a folder")),
        (dict(source=str(video_file), prompts=["", "   "]), ("no prompt given",)),
        (dict(source=str(video_file), prompts_file=str(tmp_path / "none.txt")),
         ("--prompts-file",)),
    ]
    for app_keys, fragments in cases:
        assert_input_error(capsys, app.run(app_config(**app_keys), detector_factory=factory),
                           *fragments)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert_input_error(capsys, app.run(app_config(source=str(video_file), headless=False),
                                       detector_factory=factory), "app.headless", "--headless")
    assert factory.built == []


def test_window_larger_than_the_tile_grid_is_an_input_error_before_the_model(capsys,
                                                                            video_file):
    factory = FakeFactory()
    config = config_from_dict({"detector": {"tile_px": 80, "window_tiles": 4},
                               "app": {"source": str(video_file), "prompts": ["x"],
                                       "headless": True}})
    assert_input_error(capsys, app.run(config, detector_factory=factory),
                       "detector.window_tiles", "must be 1..2", "160x120")
    assert factory.built == []


def test_a_model_that_cannot_be_loaded_is_an_input_error(tmp_path, capsys, video_file):
    (tmp_path / "empty-model").mkdir()
    config = config_from_dict({"model": {"name": str(tmp_path / "empty-model"), "device": "cpu"},
                               "app": {"source": str(video_file), "prompts": ["x"],
                                       "headless": True}})
    assert_input_error(capsys, app.run(config), "--model", "empty-model")


def test_hud_names_the_device_and_the_precision_that_runs():
    import torch
    from types import SimpleNamespace

    model = SimpleNamespace(device=torch.device("cpu"), dtype=torch.bfloat16)
    assert app._device_name(SimpleNamespace(model=model)) == "cpu bfloat16"
    assert app._device_name(SimpleNamespace(model=SimpleNamespace(device="fake"))) == "fake"


needs_libx11 = pytest.mark.skipif(__import__("ctypes.util").util.find_library("X11") is None,
                                  reason="libX11 is not installed: no X connection to try")


@needs_libx11
def test_a_display_that_is_set_but_dead_is_an_input_error(monkeypatch, capsys, video_file):
    monkeypatch.setenv("DISPLAY", ":999")                   # no X server there
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    factory = FakeFactory()
    assert_input_error(capsys, app.run(app_config(source=str(video_file), headless=False),
                                       detector_factory=factory),
                       "app.headless", "no X server answers at DISPLAY=:999", "--headless")
    assert factory.built == []
    app.check_display(app_config(headless=True))            # headless needs no display


@needs_libx11
def test_main_with_a_dead_display_exits_2_instead_of_aborting(tmp_path, video_file):
    import subprocess
    import sys

    from conftest import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM",
                                                            "WAYLAND_DISPLAY")}
    out = tmp_path / "o.mp4"
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "--source", str(video_file),
                           "--prompt", "x", "--output", str(out)],
                          env={**env, "DISPLAY": ":999"}, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert done.stderr.strip().splitlines() == [
        "error: app.headless: no X server answers at DISPLAY=:999 (stale after ssh -X, or "
        "Xvfb not running); pass --headless, or start the X server"]


def test_a_short_source_whose_every_frame_fails_inference_is_exit_1(tmp_path, capsys):
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), np.zeros((48, 64, 3), np.uint8))
    code = app.run(app_config(source=str(image)),
                   detector_factory=FakeFactory(fail_on={"all"}))
    assert code == 1
    assert stderr_lines(capsys)[-1].startswith(
        "error: inference failed on all 1 frames: RuntimeError: simulated failure on frame 0")


def test_a_missing_snapshot_folder_is_an_input_error_in_window_mode(tmp_path, capsys,
                                                                    video_file):
    missing = tmp_path / "no-such-folder"
    code = app.run(app_config(source=str(video_file), headless=False,
                              snapshot_dir=str(missing)),
                   detector_factory=FakeFactory(), display=RecordingDisplay())
    assert_input_error(capsys, code, f"--snapshot-dir {missing}: no such folder")
    assert app.run(app_config(source=str(video_file), snapshot_dir=str(missing)),
                   detector_factory=FakeFactory()) == 0     # headless: no s key, no check
