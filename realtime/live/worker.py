"""The inference stage: one thread owns the detector (and so the model and device).

It takes frames from its inbox - the newest one (a :class:`LatestSlot`, live
sources) or every one in order (a :class:`BoundedQueue`, files) - and puts a
:class:`Result`, tagged with the frame it belongs to, into its outbox.
Runtime changes are applied between frames, so the detector is only ever
touched by this thread: the threshold arrives on a small control queue, a new
prompt set through the :class:`~realtime.control.PromptController` (the
newest request wins; only prompts the detector has not seen are encoded).
Each result carries the generation of the prompt set it was detected with.
With a :class:`~realtime.track.Tracker` the detections are tracked here, in
frame order and on the source's timestamps, so the tracker too is only ever
touched by this thread.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..buffers import Buffer

from .capture import CaptureEnd, Frame
from ..control import PromptController
from ..detections import Detections
from ..track import Tracker

log = logging.getLogger(__name__)

MAX_FAILURES_IN_A_ROW = 3   # one bad frame is skipped; a detector that keeps failing is fatal


@dataclass(frozen=True, eq=False)
class Result:
    """The detections of one frame, and when they were ready (time.monotonic())."""

    frame: Frame
    detections: Detections
    finished_at: float
    generation: int = 0          # of the prompt set (see realtime.control.PromptSet)

    @property
    def latency_ms(self) -> float:
        """Capture-to-result latency."""
        return (self.finished_at - self.frame.captured_at) * 1000.0


@dataclass(frozen=True)
class WorkerError:
    """The detector kept failing; `message` is one line."""

    message: str


@dataclass(frozen=True)
class SetThreshold:
    value: float


class Worker:
    """The inference thread.  `detector` needs ``detect(image, index, timestamp_s)``,
    ``set_threshold`` and ``set_prompts``; `prompts` (optional) is where prompt
    changes come from; `tracker` (optional) tracks every result before it is
    passed on."""

    def __init__(self, detector, inbox: Buffer, outbox: Buffer, stop: threading.Event,
                 prompts: PromptController | None = None,
                 tracker: Tracker | None = None) -> None:
        self.detector, self.inbox, self.outbox, self.stop = detector, inbox, outbox, stop
        self.prompts, self.tracker = prompts, tracker
        self.control: queue.Queue = queue.Queue(maxsize=16)
        self.failed_frames = 0
        self.last_error = ""        # one line: why the last failed frame failed
        self._thread = threading.Thread(target=self._run, name="inference", daemon=True)

    def start(self) -> "Worker":
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def send(self, message: SetThreshold) -> bool:
        """Queue a runtime change; False (dropped) if the worker is far behind on them."""
        try:
            self.control.put_nowait(message)
            return True
        except queue.Full:
            return False

    def _run(self) -> None:
        try:
            self._loop()
        except Exception as exc:  # never leave the render loop waiting for a dead thread
            log.debug("inference thread failed", exc_info=True)
            self.outbox.put(WorkerError(f"inference thread failed: {type(exc).__name__}: "
                                        f"{exc}".splitlines()[0]), self.stop)

    def _loop(self) -> None:
        failures = 0
        while not self.stop.is_set():
            item = self.inbox.get(timeout_s=0.1)
            self._apply_controls()   # after the wait: a change sent meanwhile counts now
            if item is None:
                continue
            if isinstance(item, CaptureEnd):
                self.outbox.put(item, self.stop)
                return
            result, error = self._detect(item)
            if result is not None:
                failures = 0
                if not self.outbox.put(result, self.stop):
                    return
                continue
            failures += 1
            if failures >= MAX_FAILURES_IN_A_ROW:
                self.outbox.put(WorkerError(f"inference failed on {failures} frames in a row: "
                                            f"{error}"), self.stop)
                return

    def _detect(self, frame: Frame) -> tuple[Result | None, str]:
        try:
            detections = self.detector.detect(frame.image, frame.index, frame.timestamp_s)
            if self.tracker is not None:
                detections = self.tracker.update(detections)
        except Exception as exc:
            self.failed_frames += 1
            error = self.last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            log.warning("frame %d skipped: inference failed (%s)", frame.index, error)
            log.debug("inference failure", exc_info=True)
            return None, error
        generation = self.prompts.active.generation if self.prompts is not None else 0
        return Result(frame, detections, time.monotonic(), generation), ""

    def _apply_controls(self) -> None:
        self._apply_prompts()
        while True:
            try:
                message = self.control.get_nowait()
            except queue.Empty:
                return
            try:
                self._apply(message)
            except Exception as exc:  # a bad runtime change must not kill inference
                log.warning("could not apply %s: %s", message, exc)

    def _apply(self, message: Any) -> None:
        if isinstance(message, SetThreshold):
            self.detector.set_threshold(message.value)

    def _apply_prompts(self) -> None:
        """Swap in the newest requested prompt set, if any; a failure keeps the old one."""
        pending = self.prompts.take() if self.prompts is not None else None
        if pending is None:
            return
        try:
            warnings = self.detector.set_prompts(pending.prompts) or ()
        except Exception as exc:  # e.g. the text encoder ran out of memory
            message = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            log.warning("could not change the prompts: %s", message)
            self.prompts.failed(pending, message)
            return
        self.prompts.applied(pending, warnings)

