"""The capture stage: a thread that reads a source into bounded buffers.

It feeds :mod:`realtime.buffers`: a latest-wins slot for live sources (so
inference never works on a stale frame), a bounded queue for files (every
frame, in order, with back-pressure).

The capture thread ends by putting one :class:`CaptureEnd` - why it ended and
what it counted - into every buffer it feeds.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..buffers import Buffer
from .source import call_unless_stopped

log = logging.getLogger(__name__)

STABLE_S = 5.0   # a reopened source must deliver this long before its failed attempts reset


@dataclass(frozen=True, eq=False)
class Frame:
    """One captured frame.

    `index` is the frame's 0-based place in the source (files) or in the
    capture (live); `timestamp_s` is seconds from the start of the source
    (files: index / fps) or of the capture (live); `captured_at` is the
    time.monotonic() at which it was read, for latency.  Nobody draws on
    `image`: renderers copy it.
    """

    index: int
    timestamp_s: float
    image: np.ndarray
    captured_at: float


@dataclass(frozen=True)
class CaptureEnd:
    """The capture is over.  reason: end, max_frames, lost, stopped or error."""

    reason: str
    frames_read: int = 0
    frames_skipped: int = 0
    reconnects: int = 0
    error: str = ""


@dataclass(frozen=True)
class Backoff:
    """Waits between reopen attempts: doubling from `first_s`, capped at `max_s`."""

    first_s: float = 0.25
    max_s: float = 4.0

    def delay_s(self, attempt: int) -> float:
        return min(self.max_s, self.first_s * 2 ** max(0, attempt - 1))


class Capture:
    """The capture thread: reads `reader` and feeds every buffer in `sinks`.

    `pace` plays a file (or the demo) at its own frame rate, as a camera
    would deliver it; `max_frames` > 0 stops after that many frames.  A live source
    that fails is reopened with back-off; `reconnecting` is set meanwhile, and
    after `max_reconnects` failed attempts in a row (0 = never give up) the
    capture ends with reason "lost".  A reopen that brings frames but fails
    again within `STABLE_S` counts as failed too: a source that keeps coming
    back for a moment (a file served at a URL, a flapping link) uses up the
    budget instead of cycling forever.
    """

    def __init__(self, reader, sinks: Sequence[Buffer], stop: threading.Event, *,
                 pace: bool = False, max_frames: int = 0, max_reconnects: int = 0,
                 backoff: Backoff = Backoff(), clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.reader, self.sinks, self.stop = reader, tuple(sinks), stop
        self.pace, self.max_frames = pace, max_frames
        self.max_reconnects, self.backoff, self.clock = max_reconnects, backoff, clock
        self.reconnecting = threading.Event()
        self._thread = threading.Thread(target=self._run, name="capture", daemon=True)
        self._read = self._skipped = self._reconnects = 0
        self._end: CaptureEnd | None = None

    def start(self) -> "Capture":
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> bool:
        """True when the thread has ended within the timeout."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def outcome(self) -> CaptureEnd:
        """How the capture ended, with its counts; while it still runs (or was left
        behind), the counts so far.  Every exit path reports these, signals included."""
        if self._end is not None:
            return self._end
        return CaptureEnd("stopped", self._read, self._skipped, self._reconnects)

    def _run(self) -> None:
        try:
            reason, error = self._loop(), ""
            if reason == "lost":
                error = f"no frame after {self.max_reconnects} reconnect attempts"
        except Exception as exc:  # a broken source must end the run, not hang it
            log.debug("capture failed", exc_info=True)
            reason, error = "error", f"{type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            self.reader.close()
            self.reconnecting.clear()
        end = self._end = CaptureEnd(reason, self._read, self._skipped, self._reconnects, error)
        for sink in self.sinks:
            sink.put(end, self.stop)

    def _loop(self) -> str:
        start = self.clock()
        last_index, failed_attempts, up_since = -1, 0, None
        while not self.stop.is_set():
            if self.max_frames and self._read >= self.max_frames:
                return "max_frames"
            grabbed = self.reader.read()
            if grabbed is None:
                if not self.reader.live:
                    self._count_missing_tail(last_index)
                    return "end"
                failed_attempts, up_since = failed_attempts + 1, None
                if not self._reopen(failed_attempts):
                    return "lost" if not self.stop.is_set() else "stopped"
                continue
            if failed_attempts:
                up_since = self.clock() if up_since is None else up_since
                if self.clock() - up_since >= STABLE_S:
                    failed_attempts = 0
            self.reconnecting.clear()
            index = grabbed.index if grabbed.index is not None else last_index + 1
            self._skipped += max(0, index - last_index - 1)
            last_index = index
            if not self._deliver(self._frame(index, grabbed.image, start)):
                return "stopped"
        return "stopped"

    def _frame(self, index: int, image: np.ndarray, start: float) -> Frame:
        if self.reader.live:
            return Frame(index, self.clock() - start, image, self.clock())
        timestamp_s = index / self.reader.fps
        if self.pace:
            # Play at the source's own rate; waiting on `stop` keeps quitting instant.
            self.stop.wait(max(0.0, start + timestamp_s - self.clock()))
        return Frame(index, timestamp_s, image, self.clock())

    def _deliver(self, frame: Frame) -> bool:
        for sink in self.sinks:
            if not sink.put(frame, self.stop):
                return False
        self._read += 1
        return True

    def _reopen(self, attempt: int) -> bool:
        """One reopen attempt after a wait; False when attempts are used up or stopped."""
        self.reconnecting.set()
        if self.max_reconnects and attempt > self.max_reconnects:
            return False
        delay_s = self.backoff.delay_s(attempt)
        if attempt == 1 or attempt % 10 == 0:   # a kiosk may retry for hours: keep logs short
            log.warning("source lost; reopening in %.2f s (attempt %d%s)", delay_s, attempt,
                        f" of {self.max_reconnects}" if self.max_reconnects else "")
        if self.stop.wait(delay_s):
            return False
        self._reconnects += 1
        # Whether it worked, the next read tells.  In a helper thread: a stream
        # open blocks up to its timeout, and a stop must not wait for that.
        call_unless_stopped(self.reader.reopen, self.stop,
                            cleanup=lambda _: self.reader.close())
        return not self.stop.is_set()

    def _count_missing_tail(self, last_index: int) -> None:
        """Frames a file says it holds but that could not be read (truncated files)."""
        count = getattr(self.reader, "frame_count", None)
        if count is not None and last_index >= 0:
            self._skipped += max(0, count - last_index - 1)
