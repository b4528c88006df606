"""Shared fixtures: a tiny CLIP built once, generated videos, fake detectors,
cameras and displays for running the application pipeline without a model.

Tests marked ``slow`` take tens of seconds; deselect them with ``-m "not slow"``.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from realtime.config import Config, DetectorConfig, config_from_dict  # noqa: E402
from realtime.detections import Detections  # noqa: E402
from realtime.live.source import Grabbed, SourceSpec  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes tens of seconds (deselect with -m 'not slow')")


# --------------------------------------------------------------------------- model and files


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random CLIP saved with save_pretrained: plumbing, not meaning."""
    from tools.clip_factory import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


def scene_frames(n_frames: int, size=(160, 120), seed: int = 3):
    from realtime.scenes import MovingScene

    scene = MovingScene(size[0], size[1], 2, seed=seed)
    return [scene.frame(i).frame for i in range(n_frames)]


def write_video(path: Path, n_frames: int, size=(160, 120), fps: float = 10.0,
                fourcc: str | None = None) -> Path:
    """A video of a moving-shapes scene (mp4v for .mp4, MJPG for .avi)."""
    return write_frames(path, scene_frames(n_frames, size), fps, fourcc)


def write_frames(path: Path, frames, fps: float = 10.0, fourcc: str | None = None) -> Path:
    """A video of the given BGR frames (mp4v for .mp4, MJPG for .avi)."""
    frames = list(frames)
    fourcc = fourcc or ("MJPG" if path.suffix == ".avi" else "mp4v")
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    assert writer.isOpened(), path
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def video_file(tmp_path) -> Path:
    return write_video(tmp_path / "clip.mp4", 24)


def read_video(path: Path) -> tuple[int, int, int, float]:
    """(decodable frames, width, height, fps) of a video, by decoding it."""
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    width, height, fps = int(cap.get(3)), int(cap.get(4)), cap.get(5)
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    return frames, width, height, fps


def app_config(track: dict | None = None, **app) -> Config:
    """A headless Config with app-section (and track-section) overrides, validated as
    from YAML."""
    app.setdefault("headless", True)
    app.setdefault("prompts", ["a red circle"])
    return config_from_dict({"app": app, "track": track or {}})


# --------------------------------------------------------------------------- fakes


class FakeDetector:
    """Stands in for realtime.Detector: one box per frame over the frame's centre.

    `delay_s` simulates inference time; `fail_on` holds frame indices whose
    inference raises.  `seen` lists the frame indices given to detect().
    """

    def __init__(self, prompts=("a red circle",), delay_s: float = 0.0, fail_on=(),
                 config: DetectorConfig | None = None) -> None:
        self.labels = tuple(prompts)
        self.config = config or DetectorConfig()
        self.delay_s, self.fail_on = delay_s, set(fail_on)
        self.model = SimpleNamespace(device="fake-device")
        self.seen: list[int] = []
        self.thresholds: list[float] = []

    def set_prompts(self, prompts) -> None:
        self.labels = tuple(prompts)

    def set_threshold(self, threshold: float) -> None:
        self.config = dataclasses.replace(self.config, threshold=threshold)

    def detect(self, image, frame_index=0, timestamp_s=0.0) -> Detections:
        self.seen.append(frame_index)
        self.thresholds.append(self.config.threshold)
        if self.delay_s:
            time.sleep(self.delay_s)   # stands for inference time, not for synchronisation
        if frame_index in self.fail_on or "all" in self.fail_on:
            raise RuntimeError(f"simulated failure on frame {frame_index}")
        height, width = image.shape[:2]
        box = np.array([[width * 0.25, height * 0.25, width * 0.75, height * 0.75]], np.float32)
        k = len(self.labels)
        return Detections(labels=self.labels, boxes=box, scores=np.array([0.87], np.float32),
                          similarities=np.array([0.31], np.float32),
                          label_ids=np.array([0], np.int64), frame_index=frame_index,
                          timestamp_s=timestamp_s,
                          score_maps=np.full((k, 2, 2), 0.5, np.float32))


class FakeFactory:
    """A detector_factory for realtime.live.app.run that records what it built."""

    def __init__(self, **options) -> None:
        self.options, self.built = options, []

    def __call__(self, prompts, config):
        detector = FakeDetector(prompts, config=config.detector, **self.options)
        self.built.append(detector)
        return detector


class FakeCamera:
    """A live source paced like a camera, that can drop out and come back.

    After `drop_after` frames reads fail; the next `failed_reopens` reopen
    attempts fail too, then frames flow again (`recover=False`: never).
    Frames are flat grey with the frame number in the red channel.
    """

    def __init__(self, fps: float = 100.0, size=(64, 48), drop_after: int | None = None,
                 failed_reopens: int = 0, recover: bool = True) -> None:
        self.spec = SourceSpec("camera", 0)
        self.fps, self.frame_count = fps, None
        self.width, self.height = size
        self.drop_after, self.failed_reopens, self.recover = drop_after, failed_reopens, recover
        self.frames_read = self.reopen_calls = 0
        self.dropped = threading.Event()
        self.closed = False
        self._down = False

    live = True
    name = "fake camera"

    def read(self):
        if self._down:
            return None
        if self.drop_after is not None and self.frames_read == self.drop_after:
            self._down = True
            self.dropped.set()
            return None
        time.sleep(1.0 / self.fps)   # a camera delivers at its own rate
        image = np.full((self.height, self.width, 3), 128, np.uint8)
        image[..., 2] = self.frames_read % 256
        self.frames_read += 1
        return Grabbed(None, image)

    def reopen(self) -> bool:
        self.reopen_calls += 1
        if self.recover and self.reopen_calls > self.failed_reopens:
            self._down = False
            self.drop_after = None
            return True
        return False

    def close(self) -> None:
        self.closed = True


class RecordingDisplay:
    """A display that records what was shown and plays scripted key presses.

    `keys` maps the number of frames shown so far to a key code returned by
    that show() call.  Only counts and the last image are kept (long runs).
    """

    def __init__(self, keys: dict[int, int] | None = None, keep: int = 0) -> None:
        self.keys = dict(keys or {})
        self.shown = 0
        self.last: np.ndarray | None = None
        self.kept: list[np.ndarray] = []
        self.keep = keep
        self.closed_calls = 0

    def show(self, image) -> int:
        self.shown += 1
        self.last = image
        if len(self.kept) < self.keep:
            self.kept.append(image.copy())
        return self.keys.pop(self.shown, -1)

    def poll(self) -> int:
        return -1

    def closed(self) -> bool:
        return False

    def close(self) -> None:
        self.closed_calls += 1


def pipeline_threads() -> list[str]:
    """Names of the application's threads still alive."""
    return [t.name for t in threading.enumerate()
            if t.name in ("capture", "inference", "web", "web-encode")]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
