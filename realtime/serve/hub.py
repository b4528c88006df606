"""The frame hub: shown frames in (from the render loop), shared JPEG parts out.

The render loop hands every frame it shows to :meth:`FrameHub.feed`, which
only drops it into a latest-wins slot.  One encoder thread takes the newest
frame, encodes it once for each stream width in use (at most the fastest
viewer's rate, and not at all when nobody watches), and hands the encoded
MJPEG parts to the event loop.  Every viewer writes the same bytes; one that
reads slowly gets the newest frame when it is ready again and skips the rest,
so no queue grows and no viewer waits for another.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass

import cv2
import numpy as np

from ..buffers import LatestSlot
from ..control import LiveStatus

log = logging.getLogger(__name__)

BOUNDARY = "frame"
FULL = 0                                           # width key: the frame as shown
WIDTHS = (160, 320, 480, 640, 960, 1280, 1920)     # stream widths a request is rounded down to


@dataclass(frozen=True, eq=False)
class StreamFrame:
    """One shown frame, encoded: `parts[width]` is a whole MJPEG part (headers, JPEG, CRLF)."""

    seq: int
    index: int
    captured_ms: float                 # wall clock (ms since the epoch) of the capture
    parts: dict[int, bytes]
    jpegs: dict[int, bytes]


def stream_width(requested: int | None) -> int:
    """The width key for a requested width: the largest of WIDTHS not above it; FULL for none."""
    if requested is None:
        return FULL
    return max((w for w in WIDTHS if w <= requested), default=WIDTHS[0])


def wall_ms(monotonic_s: float) -> float:
    """A time.monotonic() instant as wall-clock milliseconds (what a browser can compare)."""
    return (time.time() - (time.monotonic() - monotonic_s)) * 1000.0


def encode_jpeg(image: np.ndarray, quality: int, width: int = FULL) -> bytes:
    if width and width < image.shape[1]:
        height = max(1, round(image.shape[0] * width / image.shape[1]))
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"JPEG encoding failed for a {image.shape} frame")
    return data.tobytes()


def mjpeg_part(jpeg: bytes, index: int, captured_ms: float) -> bytes:
    head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
            f"X-Frame-Index: {index}\r\nX-Captured-Ms: {captured_ms:.1f}\r\n\r\n")
    return head.encode("ascii") + jpeg + b"\r\n"


class FrameHub:
    """See the module docstring.  `feed` may be called from any thread; everything
    else runs on the event loop the hub was attached to."""

    def __init__(self, jpeg_quality: int = 80) -> None:
        self.jpeg_quality = jpeg_quality
        self._inbox = LatestSlot()
        self._plan_lock = threading.Lock()
        self._widths: Counter = Counter()          # width key -> viewers
        self._rates: dict[int, float] = {}         # viewer -> frames per second
        self._viewer_ids = itertools.count(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick: asyncio.Event | None = None
        self.frame: StreamFrame | None = None      # newest encoded frame
        self.status: LiveStatus | None = None      # newest shown frame's status
        self.image: np.ndarray | None = None       # newest shown frame (snapshots)
        self.frames_encoded = 0
        self.frames_skipped = 0                    # frames a viewer did not get (slow or paced)
        self.closed = False

    # -- any thread ---------------------------------------------------------------

    def feed(self, image: np.ndarray, status: LiveStatus) -> None:
        """A shown frame (never blocks; replaces one the encoder has not taken yet)."""
        self._inbox.put((image, status))

    @property
    def viewers(self) -> int:
        with self._plan_lock:
            return len(self._rates)

    # -- lifecycle (event loop) -----------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop, self._tick = loop, asyncio.Event()
        self._thread = threading.Thread(target=self._encode_loop, name="web-encode", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop encoding and wake every waiting viewer (they end their streams)."""
        self.closed = True
        self._stop.set()
        self._wake()

    def join(self, timeout_s: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout_s)
            return not self._thread.is_alive()
        return True

    # -- viewers (event loop) ----------------------------------------------------------

    def add_viewer(self, width: int, fps: float) -> int:
        with self._plan_lock:
            viewer = next(self._viewer_ids)
            self._widths[width] += 1
            self._rates[viewer] = fps
        return viewer

    def remove_viewer(self, viewer: int, width: int) -> None:
        with self._plan_lock:
            self._rates.pop(viewer, None)
            self._widths[width] -= 1
            if self._widths[width] <= 0:
                del self._widths[width]

    async def next_frame(self, after_seq: int, width: int) -> StreamFrame | None:
        """The newest frame newer than `after_seq` with a part of `width`; None once closed."""
        while not self.closed:
            frame = self.frame
            if frame is not None and frame.seq > after_seq and width in frame.parts:
                return frame
            await self.changed()
        return None

    async def changed(self, timeout_s: float | None = None) -> None:
        """Return at the next update (a shown frame or an encoded one), or after the timeout."""
        try:
            await asyncio.wait_for(self._tick.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def snapshot(self) -> bytes | None:
        """The newest shown frame as a full-size JPEG (encoded now if no stream did)."""
        frame, status = self.frame, self.status
        if frame is not None and status is not None and frame.index == status.frame_index \
                and FULL in frame.jpegs:
            return frame.jpegs[FULL]
        if self.image is None:
            return None
        return await self._loop.run_in_executor(None, encode_jpeg, self.image,
                                                self.jpeg_quality)

    def _wake(self) -> None:
        if self._tick is not None:
            self._tick.set()
            self._tick = asyncio.Event()

    def _publish(self, image: np.ndarray, status: LiveStatus, frame: StreamFrame | None) -> None:
        self.image, self.status = image, status
        if frame is not None:
            self.frame = frame
        self._wake()

    # -- the encoder thread -------------------------------------------------------------

    def _plan(self) -> tuple[tuple[int, ...], float]:
        with self._plan_lock:
            return tuple(self._widths), max(self._rates.values(), default=0.0)

    def _encode_loop(self) -> None:
        next_due, seq = 0.0, 0
        while not self._stop.is_set():
            item = self._inbox.get(timeout_s=0.1)
            if item is None:
                continue
            widths, fps = self._plan()
            frame = None
            if widths:
                delay = next_due - time.monotonic()
                if delay > 0:   # faster than the fastest viewer wants: wait, take the newest
                    if self._stop.wait(delay):
                        return
                    item = self._inbox.get(timeout_s=0.0) or item
                next_due = max(next_due, time.monotonic() - 1.0 / fps) + 1.0 / fps
                seq += 1
                frame = self._encode(seq, *item, widths)
            try:
                self._loop.call_soon_threadsafe(self._publish, item[0], item[1], frame)
            except RuntimeError:   # the event loop is gone: the server is shutting down
                return

    def _encode(self, seq: int, image: np.ndarray, status: LiveStatus,
                widths: tuple[int, ...]) -> StreamFrame | None:
        captured_ms = wall_ms(status.captured_at)
        jpegs: dict[int, bytes] = {}
        parts: dict[int, bytes] = {}
        try:
            for width in widths:
                size = width if width and width < image.shape[1] else FULL
                if size not in jpegs:
                    jpegs[size] = encode_jpeg(image, self.jpeg_quality, size)
                    parts[size] = mjpeg_part(jpegs[size], status.frame_index, captured_ms)
                jpegs[width], parts[width] = jpegs[size], parts[size]
        except Exception as exc:  # one bad frame must not end the stream
            log.warning("frame %d not streamed: %s", status.frame_index, exc)
            return None
        self.frames_encoded += 1
        return StreamFrame(seq, status.frame_index, captured_ms, parts, jpegs)
