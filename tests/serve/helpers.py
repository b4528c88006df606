"""Helpers for the browser-view tests: the web application on aiohttp's test server, fed
with frames by a thread as the render loop would, an MJPEG part reader, and the whole
application running in a thread with --serve."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

import cv2
import numpy as np

from conftest import FakeCamera, FakeFactory, RecordingDisplay
from realtime.config import ServeConfig, config_from_dict
from realtime.control import LiveStatus, PromptController, ViewControl
from realtime.detections import Detections
from realtime.live import app


def status(index: int, captured_at: float | None = None, labels=("a cat",)) -> LiveStatus:
    detections = Detections(labels=tuple(labels), frame_index=index)
    return LiveStatus(index, time.monotonic() if captured_at is None else captured_at, 30.0,
                      5.0, 120.0, 0.5, False, False, 0, detections)


def frame_image(index: int, size=(320, 240), noise: bool = False) -> np.ndarray:
    width, height = size
    if noise:   # incompressible: large JPEGs fill a slow viewer's buffers quickly
        return np.random.default_rng(index).integers(0, 256, (height, width, 3), np.uint8)
    image = np.full((height, width, 3), 60, np.uint8)
    cv2.putText(image, str(index), (10, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 2,
                (255, 255, 255), 3)
    return image


class Feeder:
    """A thread that feeds the hub like the render loop: frames at `fps`."""

    def __init__(self, hub, fps: float = 30.0, size=(320, 240), noise: bool = False) -> None:
        self.hub, self.fps, self.size, self.noise = hub, fps, size, noise
        self.fed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-feeder", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(1.0 / self.fps):
            self.hub.feed(frame_image(self.fed, self.size, self.noise), status(self.fed))
            self.fed += 1

    def __enter__(self) -> "Feeder":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5.0)


@contextlib.asynccontextmanager
async def web_client(token: str = "", prompts: PromptController | None = None, **serve):
    """(aiohttp TestClient, WebView) for a server on 127.0.0.1 with `serve` settings."""
    from aiohttp.test_utils import TestClient, TestServer

    from realtime.serve.server import WebView

    config = ServeConfig(address="127.0.0.1:0", **serve)
    view = WebView(config, prompts or PromptController(["a cat"]), ViewControl(), token)
    async with TestClient(TestServer(view.application(), host="127.0.0.1")) as client:
        yield client, view


async def read_part(content) -> tuple[dict[str, str], bytes]:
    """One MJPEG part from an aiohttp StreamReader: (headers, JPEG bytes)."""
    line = await content.readline()
    while line in (b"\r\n", b""):
        if line == b"":
            raise EOFError("the stream ended")
        line = await content.readline()
    assert line == b"--frame\r\n", line
    headers = {}
    while (line := await content.readline()) != b"\r\n":
        name, _, value = line.decode("ascii").partition(":")
        headers[name.strip().lower()] = value.strip()
    jpeg = await content.readexactly(int(headers["content-length"]))
    return headers, jpeg


def run(coroutine):
    return asyncio.run(coroutine)

def serve_config(port: int, **app_keys):
    return config_from_dict({"app": {"headless": True, "prompts": ["a red circle"], **app_keys},
                             "serve": {"address": f"127.0.0.1:{port}"}})


class QuitDisplay(RecordingDisplay):
    """A display whose user presses q once `quit` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.quit = threading.Event()

    def show(self, image) -> int:
        super().show(image)
        return ord("q") if self.quit.is_set() else -1


class RunningApp:
    """app.run in a thread on a fake camera until the block ends, then q (exit code: .code)."""

    def __init__(self, config, size=(160, 120)) -> None:
        self.config, self.factory, self.display = config, FakeFactory(), QuitDisplay()
        self.size = size
        self.code = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = app.run(self.config, detector_factory=self.factory, display=self.display,
                            reader=FakeCamera(fps=30, size=self.size))

    def __enter__(self) -> "RunningApp":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.display.quit.set()
        self.thread.join(15.0)


