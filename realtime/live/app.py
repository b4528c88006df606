"""The application: checks, wiring, the render loop, keys, signals and exit codes.

Data flow (each arrow a bounded buffer, see realtime.buffers)::

    capture thread --frames--> inference thread --results--> main thread
          \\______________________frames____________________/  (live only)

- Files (and the headless demo): every frame, in order, with back-pressure.
  The main thread draws each result on its own frame, so the output video and
  the JSON Lines file pair every frame with its own detections.
- Live sources (cameras, streams, ``--realtime``, the demo in a window):
  latest-frame-wins slots.  The main thread shows every captured frame at the
  capture rate with the latest detections; inference takes the newest frame.
- Run-time changes (realtime.control): the prompt edit line (``p``/Tab) and
  the browser view (``--serve``, realtime.serve: a server thread fed with
  every shown frame) ask the prompt controller, which the inference thread
  reads between frames, and the view control, which this loop reads.

Exit codes: 0 finished (end of source, --max-frames, q/Esc, window closed);
1 runtime failure (source lost for good, inference failing, an output that
stops being writable); 2 input error, found before any work starts;
130 SIGINT (Ctrl+C) and 143 SIGTERM, after an orderly stop.  Every exit
after the start joins the threads (2 s bound each), finalises the video and
closes the JSON Lines file, then prints one summary line on stderr.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..buffers import BoundedQueue, LatestSlot

from .capture import Backoff, Capture, CaptureEnd, Frame
from ..config import DEFAULT_MODEL, Config, ConfigError
from ..control import LiveStatus, PromptController, ViewControl
from ..detections import Detections
from ..engine.model import ModelLoadError
from .outputs import (VIDEO_CODECS, OutputError, Outputs, check_distinct, check_output_path,
                      open_outputs)
from ..engine.prompts import PromptError, clean_prompts, read_prompts_file
from ..track import MAX_AHEAD_S, TrackSummary, Tracker, advance
from .prompt_edit import OPEN_KEYS, EditLine, open_line, press
from .render import Overlay, compose, hud_text
from .source import (Reader, SourceError, SourceSpec, call_unless_stopped, demo_scene,
                     list_images, open_reader, parse_source)
from .worker import SetThreshold, Worker, WorkerError

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 130, 143
INPUT_ERRORS = (ConfigError, PromptError, SourceError, OutputError, ModelLoadError)
JOIN_TIMEOUT_S = 2.0
THRESHOLD_STEP = 0.05
QUEUE_FRAMES = 4            # file mode: frames waiting for inference, results waiting to draw
RESULTS_LIVE = 16           # live mode: results waiting to be logged (drained every frame)
WINDOW_TITLE = "realtime detector"
MAX_TRACK_LINES = 20        # tracks named in the end-of-run summary
SHAPES_MODEL = Path(__file__).resolve().parents[2] / "models" / "shapes-clip"
KEY_QUIT, KEY_ESC, KEY_PAUSE, KEY_HEAT, KEY_SNAP = ord("q"), 27, ord(" "), ord("h"), ord("s")
KEYS_UP, KEYS_DOWN = (ord("+"), ord("=")), (ord("-"), ord("_"))


# --------------------------------------------------------------------------- checks


def with_demo_defaults(config: Config) -> Config:
    """--demo plays the shapes scene with models/shapes-clip unless a model is given."""
    if not config.app.demo or config.model.name != DEFAULT_MODEL:
        return config
    return dataclasses.replace(config, model=dataclasses.replace(config.model,
                                                                 name=str(SHAPES_MODEL)))


def check_demo_model(config: Config) -> None:
    """The demo's own model is trained into the repository; say so when it is missing."""
    if config.app.demo and Path(config.model.name) == SHAPES_MODEL and not (
            SHAPES_MODEL / "config.json").is_file():
        raise ModelLoadError(f"--demo: {SHAPES_MODEL} is missing; train it with "
                             "python tools/train_shapes_clip.py, or pass --model DIR")


def resolve_prompts(config: Config) -> tuple[str, ...]:
    """app.prompts plus the prompts file; the demo scene's captions when there are none."""
    texts = list(config.app.prompts)
    if config.app.prompts_file:
        texts += read_prompts_file(config.app.prompts_file)
    if not texts and config.app.demo:
        texts = list(demo_scene().prompts)
    return clean_prompts(texts)


def paths_read(config: Config, spec: SourceSpec) -> list[tuple[str, str]]:
    """(flag, path) of every file the run reads: outputs must not name any of them."""
    reads = [("--prompts-file", config.app.prompts_file)] if config.app.prompts_file else []
    if spec.kind in ("video", "image"):
        reads.append(("--source", str(spec.location)))
    elif spec.kind == "folder":
        reads += [("--source", str(image)) for image in list_images(Path(spec.location))]
    return reads


def check_outputs(config: Config, reads: Sequence[tuple[str, str]] = ()) -> None:
    """Outputs that can be written and destroy nothing the run reads (before any is opened)."""
    writes = [(flag, path) for flag, path in (("--output", config.app.output),
                                              ("--detections", config.app.detections)) if path]
    check_distinct(writes, reads)
    if config.app.output:
        check_output_path(config.app.output, "--output", tuple(VIDEO_CODECS))
    if config.app.detections:
        check_output_path(config.app.detections, "--detections")
    snapshots = Path(config.app.snapshot_dir).expanduser()
    if not config.app.headless and not snapshots.is_dir():   # found at the s key, too late
        raise OutputError(f"--snapshot-dir {config.app.snapshot_dir}: no such folder (the s "
                          "key writes its PNG snapshots there)")


def check_display(config: Config) -> None:
    """A window needs a display; without one Qt would abort the process later."""
    if config.app.headless or not sys.platform.startswith("linux"):
        return
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise ConfigError("app.headless: no display to open a window on ($DISPLAY is not "
                          "set); pass --headless, or run under a desktop or Xvfb")
    platform = os.environ.get("QT_QPA_PLATFORM", "xcb")
    if os.environ.get("DISPLAY") and platform.startswith("xcb") and (
            x11_display_answers() is False):
        raise ConfigError(f"app.headless: no X server answers at DISPLAY="
                          f"{os.environ['DISPLAY']} (stale after ssh -X, or Xvfb not "
                          "running); pass --headless, or start the X server")


def check_grid(reader: Reader, config: Config) -> None:
    """The sliding-window grid must fit the frame (ConfigError names the key)."""
    if config.detector.method == "windows":
        from ..engine.tiles import grid_for_frame

        grid_for_frame(reader.width, reader.height, config.detector)


def tracking_config(config: Config, source_kind: str) -> tuple[Config, Tracker | None]:
    """The config the detector is built with, and the tracker (None: raw detections).

    While tracking, the detector reports boxes down to track.keep_score, so that a
    weaker box can keep a shown object alive; only boxes that pass detector.gate
    start a track (the tracker's start score), so nothing new appears below it.
    """
    if not config.track.active(source_kind):
        return config, None
    tracker = Tracker.from_config(config.track, start_score=config.detector.gate)
    gate = min(config.detector.gate, config.track.keep_score)
    return dataclasses.replace(config, detector=dataclasses.replace(config.detector,
                                                                    gate=gate)), tracker


def load_detector(prompts: tuple[str, ...], config: Config):
    """The real detector: CLIP loaded onto its device (ModelLoadError on failure)."""
    from transformers.utils import logging as hf_logging

    from ..engine.detector import Detector
    from ..engine.model import load_model
    from ..engine.boxcheck import default_cache_dir

    hf_logging.disable_progress_bar()   # the app's own progress bar is the one that matters
    detector = Detector(prompts, config.detector, load_model(config.model),
                        check_cache_dir=default_cache_dir())
    if detector.box_check is not None:
        print(detector.box_check.line(), file=sys.stderr)
    return detector


# --------------------------------------------------------------------------- displays


class NullDisplay:
    """Headless: nothing is shown and no key is ever pressed."""

    def show(self, image: np.ndarray) -> int:
        return -1

    def poll(self) -> int:
        return -1

    def closed(self) -> bool:
        return False

    def close(self) -> None:
        pass


class WindowDisplay:
    """The OpenCV window; every call happens in the main thread."""

    def __init__(self, title: str = WINDOW_TITLE, fullscreen: bool = False) -> None:
        self.title, self.fullscreen, self._open = title, fullscreen, False

    def _create(self, image: np.ndarray) -> None:
        import cv2

        # GUI_NORMAL: no Qt toolbar, so the frame fills the window (and kiosks).
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO
                        | cv2.WINDOW_GUI_NORMAL)
        if self.fullscreen:
            cv2.setWindowProperty(self.title, cv2.WND_PROP_FULLSCREEN, cv2.WINDOW_FULLSCREEN)
            screen = x11_screen_size()
            if screen is not None:
                # A bare X kiosk has no window manager to honour "fullscreen": cover
                # the screen ourselves (harmless where a window manager did it).
                cv2.moveWindow(self.title, 0, 0)
                cv2.resizeWindow(self.title, *screen)
        else:
            cv2.resizeWindow(self.title, image.shape[1], image.shape[0])
        self._open = True

    def show(self, image: np.ndarray) -> int:
        import cv2

        if not self._open:
            self._create(image)
        cv2.imshow(self.title, image)
        return cv2.waitKeyEx(1)     # full key codes: the prompt edit line takes any character

    def poll(self) -> int:
        import cv2

        return cv2.waitKeyEx(1) if self._open else -1

    def closed(self) -> bool:
        """True once the user closed the window with its close button."""
        import cv2

        return self._open and cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1

    def close(self) -> None:
        import cv2

        if self._open:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)   # let the GUI process the destruction
            self._open = False


def x11_screen_size() -> tuple[int, int] | None:
    """(width, height) of the default X screen, or None (no X, no libX11)."""
    found, size = _x11_probe()
    return size if found == "ok" else None


def x11_display_answers() -> bool | None:
    """Whether an X server answers at $DISPLAY; None when libX11 is not there to ask."""
    found, _ = _x11_probe()
    return None if found == "no-libx11" else found == "ok"


def _x11_probe() -> tuple[str, tuple[int, int] | None]:
    """("ok", screen size), ("no-answer", None) or ("no-libx11", None): one X
    connection attempt at $DISPLAY, as Qt's would be (which aborts on failure)."""
    import ctypes
    import ctypes.util

    if not os.environ.get("DISPLAY"):
        return "no-answer", None
    name = ctypes.util.find_library("X11")
    if not name:
        return "no-libx11", None
    try:
        x11 = ctypes.CDLL(name)
        x11.XOpenDisplay.restype, x11.XOpenDisplay.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
        x11.XDefaultScreen.argtypes = [ctypes.c_void_p]
        x11.XDisplayWidth.argtypes = x11.XDisplayHeight.argtypes = [ctypes.c_void_p,
                                                                   ctypes.c_int]
        x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        display = x11.XOpenDisplay(None)
        if not display:
            return "no-answer", None
        try:
            screen = x11.XDefaultScreen(display)
            size = x11.XDisplayWidth(display, screen), x11.XDisplayHeight(display, screen)
        finally:
            x11.XCloseDisplay(display)
    except (OSError, AttributeError):
        return "no-libx11", None
    return ("ok", size) if min(size) > 0 else ("no-answer", None)


# --------------------------------------------------------------------------- the loop


class RateMeter:
    """Events per second, smoothed (exponential moving average of intervals)."""

    def __init__(self, smoothing: float = 0.1) -> None:
        self.smoothing, self._last, self._interval_s = smoothing, None, None

    def tick(self, at: float, count: int = 1) -> None:
        if self._last is not None and at > self._last and count > 0:
            interval = (at - self._last) / count
            self._interval_s = interval if self._interval_s is None else (
                self._interval_s + self.smoothing * (interval - self._interval_s))
        self._last = at

    @property
    def fps(self) -> float:
        return 1.0 / self._interval_s if self._interval_s else 0.0


@dataclass(frozen=True)
class Summary:
    """How a run ended.  reason: end, max_frames, quit, lost, error, SIGINT or SIGTERM."""

    reason: str
    frames_processed: int
    frames_skipped: int = 0
    reconnects: int = 0
    failed_frames: int = 0
    error: str = ""
    frames_shown: int = 0
    elapsed_s: float = 0.0
    tracks: tuple[TrackSummary, ...] | None = None    # None: the run was not tracked

    @property
    def exit_code(self) -> int:
        return {"end": EXIT_OK, "max_frames": EXIT_OK, "quit": EXIT_OK,
                "SIGINT": EXIT_SIGINT, "SIGTERM": EXIT_SIGTERM}.get(self.reason, EXIT_FAILURE)

    def line(self) -> str:
        counts = (f"{self.frames_processed} frames processed, {self.frames_skipped} unreadable "
                  f"frames skipped, {self.reconnects} reconnects")
        if self.elapsed_s > 0:
            counts += (f", {self.frames_shown} frames shown in {self.elapsed_s:.1f} s "
                       f"({self.frames_shown / self.elapsed_s:.1f} fps; inference "
                       f"{self.frames_processed / self.elapsed_s:.1f} fps)")
        if self.failed_frames:
            counts += f", {self.failed_frames} frames failed inference"
        if self.exit_code == EXIT_FAILURE:
            return f"error: {self.error or self.reason} ({counts})"
        if self.reason in ("SIGINT", "SIGTERM"):
            return f"stopped by {self.reason}: {counts}"
        return f"done: {counts}"

    def track_lines(self, most: int = MAX_TRACK_LINES) -> list[str]:
        """The tracks shown in the run, one line each (the first `most`, then a count)."""
        if self.tracks is None:
            return []
        lines = [f"tracks: {len(self.tracks)} shown"]
        lines += [f"  {track.line()}" for track in self.tracks[:most]]
        if len(self.tracks) > most:
            lines.append(f"  ... and {len(self.tracks) - most} more")
        return lines


@dataclass
class View:
    """Main-thread state of the window: what is shown and how."""

    heatmap: bool
    hud: bool
    threshold: float
    device: str
    paused: bool = False
    frame: Frame | None = None
    detections: Detections | None = None
    shown: np.ndarray | None = None
    capture_rate: RateMeter = dataclasses.field(default_factory=RateMeter)
    inference_rate: RateMeter = dataclasses.field(default_factory=RateMeter)
    latency_ms: float | None = None


class RenderLoop:
    """Runs in the main thread until the capture ends, a key quits or `stop` is set."""

    def __init__(self, *, capture: Capture, worker: Worker, results, frames, outputs: Outputs,
                 display, stop: threading.Event, view: View, snapshot_dir: str = ".",
                 progress=None, prompts: PromptController, view_control: ViewControl) -> None:
        self.capture, self.worker, self.results, self.frames = capture, worker, results, frames
        self.outputs, self.display, self.stop, self.view = outputs, display, stop, view
        self.snapshot_dir, self.progress = snapshot_dir, progress
        self.prompts, self.view_control = prompts, view_control
        self.edit: EditLine | None = None    # the prompt edit line, while it is open
        self.recorded_generation = -1        # prompt set last written to the JSON Lines
        self.feed: Callable[[np.ndarray, LiveStatus], None] | None = None   # e.g. the web view
        self.processed = 0
        self.frames_shown = 0           # frames drawn (and written) at the capture rate
        self.end: CaptureEnd | None = None
        self.worker_ended = False       # the worker passed the CaptureEnd on: nothing follows
        self.failure = ""
        self.quit = False
        self.on_frame: Callable[["RenderLoop"], None] | None = None   # test and tool hook

    # -- the two modes ----------------------------------------------------------

    def run_in_order(self) -> None:
        """Files: each result, in frame order, drawn on its own frame."""
        while not self._done():
            self._apply_view_changes()
            if self.view.paused:
                self._handle_key(self.display.show(self._compose()) if self.view.frame
                                 else self.display.poll())
                self.stop.wait(0.03)
                continue
            item = self.results.get(timeout_s=0.05)
            if item is None:
                self._handle_key(self.display.poll())
                continue
            if self._take_result(item):
                self.view.frame = item.frame
                self.view.capture_rate.tick(item.frame.captured_at)
                self._render(write=True)

    def run_latest(self) -> None:
        """Live: every captured frame shown with the newest detections."""
        while not self._done():
            self._apply_view_changes()
            self._drain_results()
            item = self.frames.get(timeout_s=0.01 if self._windowed else 0.1)
            if isinstance(item, CaptureEnd):
                self.end = item
                self._drain_results_until_worker_ends()
                return
            if item is not None and not self.view.paused:
                previous = self.view.frame
                self.view.capture_rate.tick(item.captured_at,
                                            item.index - previous.index if previous else 1)
                self.view.frame = item
                self._render(write=True)
            elif self.view.frame is not None and (self.view.paused
                                                  or self.capture.reconnecting.is_set()):
                self._render(write=False)   # keep the last frame up, with its banner
                self.stop.wait(0.03)
            else:
                self._handle_key(self.display.poll())

    # -- steps --------------------------------------------------------------------

    @property
    def _windowed(self) -> bool:
        return not isinstance(self.display, NullDisplay)

    def _done(self) -> bool:
        return (self.stop.is_set() or self.quit or bool(self.failure) or self.end is not None
                or self.display.closed())

    def _take_result(self, item) -> bool:
        """Record a result (JSON Lines, rates); False for end and error markers."""
        if isinstance(item, CaptureEnd):
            self.end, self.worker_ended = item, True
            return False
        if isinstance(item, WorkerError):
            self.failure = item.message
            return False
        self.outputs.write_record(self._record(item))
        self.processed += 1
        self.view.detections = item.detections
        self.view.inference_rate.tick(item.finished_at)
        self.view.latency_ms = item.latency_ms
        if self.progress is not None:
            self.progress.update(1)
        return True

    def _record(self, item) -> dict:
        """The frame's JSON Lines record; the first one with a prompt set names it."""
        record = item.detections.to_record()
        if item.generation != self.recorded_generation:
            record.update(prompts=list(item.detections.labels), generation=item.generation)
            self.recorded_generation = item.generation
        return record

    def _drain_results(self) -> None:
        while not self.failure:
            item = self.results.get(timeout_s=0.0)
            if item is None or not self._take_result(item):
                return

    def _drain_results_until_worker_ends(self) -> None:
        """After the capture ended, log what inference still finishes (bounded wait)."""
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while (not self.worker_ended and time.monotonic() < deadline
               and not self.stop.is_set() and not self.failure):
            item = self.results.get(timeout_s=0.05)
            if item is not None:
                self._take_result(item)

    def _overlay(self) -> Overlay:
        view = self.view
        hud = ""
        if view.hud:
            hud = hud_text(view.capture_rate.fps, view.inference_rate.fps, view.latency_ms,
                           view.device, view.threshold)
        banner = "reconnecting..." if self.capture.reconnecting.is_set() else ""
        if view.paused:
            banner = banner or "paused"
        prompts = ("prompts: " + ", ".join(self.prompts.active.prompts)) if view.hud else ""
        edit = self.edit.text if self.edit is not None else None
        return Overlay(heatmap=view.heatmap, hud=hud, banner=banner, prompts=prompts, edit=edit,
                       edit_error=self.edit.error if self.edit is not None else "")

    def _compose(self) -> np.ndarray:
        return compose(self.view.frame.image, self._detections_now(), self._overlay())

    def _detections_now(self) -> Detections | None:
        """The newest detections; tracked ones moved along their velocities to the
        shown frame's time, so that boxes glide between inference results (live) and
        stay put on their own frame (files: the same time)."""
        detections, frame = self.view.detections, self.view.frame
        if detections is None or not detections.tracked:
            return detections
        height, width = frame.image.shape[:2]
        return advance(detections, frame.timestamp_s, MAX_AHEAD_S, (width, height))

    def _render(self, write: bool) -> None:
        image = self._compose()
        self.view.shown = image
        if write:
            self.frames_shown += 1
            self.outputs.write_frame(image)
        if self.feed is not None:
            self.feed(image, self._status())
        self._handle_key(self.display.show(image))
        if self.on_frame is not None:
            self.on_frame(self)

    def _status(self) -> LiveStatus:
        view = self.view
        return LiveStatus(view.frame.index, view.frame.captured_at, view.capture_rate.fps,
                          view.inference_rate.fps, view.latency_ms, view.threshold, view.paused,
                          view.heatmap, getattr(self.worker.inbox, "replaced", 0),
                          view.detections)

    def _apply_view_changes(self) -> None:
        """Threshold, pause and heat map asked for by another front end (the web view)."""
        for name, value in self.view_control.take().items():
            if name == "threshold":
                self._set_threshold(value)
            else:
                setattr(self.view, name, value)

    def _set_threshold(self, value: float) -> None:
        self.view.threshold = round(min(1.0, max(0.0, value)), 2)
        self.worker.send(SetThreshold(self.view.threshold))

    # -- keys -----------------------------------------------------------------------

    def _handle_key(self, key: int) -> None:
        if key is None or key == -1:
            return
        if self.edit is not None:
            self._edit_key(key)
            return
        if not 0 <= key <= 0xFF:       # arrows, modifiers, non-Latin text: no hotkey
            return
        if key in OPEN_KEYS:
            self.edit = open_line(self.prompts.active.prompts)
        elif key in (KEY_QUIT, KEY_ESC):
            self.quit = True
        elif key == KEY_PAUSE:
            self.view.paused = not self.view.paused
        elif key == KEY_HEAT:
            self.view.heatmap = not self.view.heatmap
        elif key in KEYS_UP or key in KEYS_DOWN:
            self._set_threshold(self.view.threshold
                                + (THRESHOLD_STEP if key in KEYS_UP else -THRESHOLD_STEP))
        elif key == KEY_SNAP:
            self._snapshot()

    def _edit_key(self, key: int) -> None:
        """A key while the edit line is open: every key edits it (no hotkeys)."""
        self.edit, submitted = press(self.edit, key)
        if submitted is None:
            return
        try:
            self.prompts.request(submitted)
        except PromptError as exc:
            self.edit = EditLine(self.edit.text, str(exc))
            return
        self.edit = None

    def _snapshot(self) -> None:
        import cv2

        if self.view.frame is None:
            return
        image = self.view.shown if self.view.shown is not None else self._compose()
        path = Path(self.snapshot_dir) / f"snapshot-{time.strftime('%Y%m%d-%H%M%S')}-" \
                                         f"{self.view.frame.index:06d}.png"
        if cv2.imwrite(str(path), image):
            log.warning("snapshot written to %s", path)
        else:
            log.warning("could not write snapshot %s", path)


# --------------------------------------------------------------------------- wiring


class SignalStop:
    """SIGINT and SIGTERM set the stop event (no exception in the middle of a write)."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop, self.received, self._previous = stop, "", {}

    def __enter__(self) -> "SignalStop":
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        self.received = self.received or signal.Signals(signum).name
        self.stop.set()

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def run(config: Config, *, detector_factory: Callable = load_detector, display=None,
        reader: Reader | None = None, stop: threading.Event | None = None,
        backoff: Backoff | None = None,
        on_frame: Callable[[RenderLoop], None] | None = None,
        also_reads: Sequence[tuple[str, str]] = ()) -> int:
    """Everything `python main.py` does once the arguments are parsed; the exit code.

    `detector_factory(prompts, config)`, `display`, `reader` (instead of
    opening app.source) and `on_frame` let tests run the whole pipeline with
    fakes and watch it frame by frame.  `also_reads` names files read before
    (flag, path: the --config file) that the outputs must not overwrite.
    """
    stop = stop or threading.Event()
    with SignalStop(stop) as signals:
        try:
            config = with_demo_defaults(config)
            check_demo_model(config)
            prompts = resolve_prompts(config)
            spec = reader.spec if reader is not None else parse_source(config.app.source,
                                                                       config.app.demo)
            check_outputs(config, [*also_reads, *paths_read(config, spec)])
            if display is None:
                check_display(config)
            if reader is None:
                reader = open_reader(spec, stop)
        except INPUT_ERRORS as exc:
            if stop.is_set():
                return _interrupted(signals.received)
            return _input_error(exc)
        if stop.is_set():   # Ctrl+C while the source opened (a stream that does not answer)
            if reader is not None:
                reader.close()
            return _interrupted(signals.received)
        controls, web = Controls(PromptController(prompts), ViewControl()), None
        try:
            check_grid(reader, config)
            web = _start_web(config, controls)     # up while the model loads
            detector_config, tracker = tracking_config(config, spec.kind)
            # In a helper thread, so that Ctrl+C during a long load stops at once.
            detector = call_unless_stopped(lambda: detector_factory(prompts, detector_config),
                                           stop)
            if stop.is_set():   # interrupted while the model loaded
                reader.close()
                _close_web(web)
                return _interrupted(signals.received)
            check_frame_size = getattr(detector, "check_frame_size", None)
            if check_frame_size is not None:   # the memory budget, before the first frame
                check_frame_size(reader.width, reader.height)
            outputs = open_outputs(config.app.output, config.app.detections, reader.fps,
                                   reader.width, reader.height)
        except INPUT_ERRORS as exc:
            reader.close()
            _close_web(web)
            return _input_error(exc)
        except BaseException:
            reader.close()
            _close_web(web)
            raise
        if display is None:
            display = NullDisplay() if config.app.headless else WindowDisplay(
                fullscreen=config.app.fullscreen)
        summary = _run_pipeline(config, reader, detector, outputs, display, stop, signals,
                                backoff or Backoff(max_s=config.app.reconnect_delay_max_s),
                                on_frame, controls, web, tracker)
    for line in summary.track_lines():
        print(line, file=sys.stderr)
    print(summary.line(), file=sys.stderr)
    return summary.exit_code


@dataclass(frozen=True)
class Controls:
    """What front ends other than the keys may change while it runs (realtime.control)."""

    prompts: PromptController
    view: ViewControl


def _start_web(config: Config, controls: Controls):
    """The browser view's server on its own thread, or None (serve.address empty)."""
    if not config.serve.address:
        return None
    from ..serve import start_web

    return start_web(config.serve, controls.prompts, controls.view)


def _close_web(web) -> None:
    if web is not None:
        _join(web, "web server")


def _input_error(exc: Exception) -> int:
    print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
    return EXIT_INPUT


def _interrupted(received: str) -> int:
    print(f"stopped by {received or 'SIGINT'} before the run started", file=sys.stderr)
    return EXIT_SIGTERM if received == "SIGTERM" else EXIT_SIGINT


def _run_pipeline(config: Config, reader: Reader, detector, outputs: Outputs, display,
                  stop: threading.Event, signals: SignalStop, backoff: Backoff,
                  on_frame, controls: Controls, web, tracker: Tracker | None = None) -> Summary:
    app = config.app
    live = reader.live or app.realtime or (app.demo and not app.headless)
    if live:
        to_worker, to_render = LatestSlot(), LatestSlot()
        results = BoundedQueue(RESULTS_LIVE)
        sinks = (to_worker, to_render)
    else:
        to_worker, to_render, results = BoundedQueue(QUEUE_FRAMES), None, BoundedQueue(QUEUE_FRAMES)
        sinks = (to_worker,)
    capture = Capture(reader, sinks, stop, pace=live and not reader.live,
                      max_frames=app.max_frames, max_reconnects=app.max_reconnects,
                      backoff=backoff)
    worker = Worker(detector, to_worker, results, stop, controls.prompts, tracker)
    view = View(heatmap=app.heatmap, hud=app.hud, threshold=config.detector.threshold,
                device=_device_name(detector))
    progress = None if live else _progress_bar(reader, app.max_frames)
    loop = RenderLoop(capture=capture, worker=worker, results=results, frames=to_render,
                      outputs=outputs, display=display, stop=stop, view=view,
                      snapshot_dir=app.snapshot_dir, progress=progress,
                      prompts=controls.prompts, view_control=controls.view)
    loop.on_frame = on_frame
    loop.feed = web.feed if web is not None else None
    error = ""
    started = time.monotonic()
    with _logs_above(progress):
        try:
            worker.start()
            capture.start()
            loop.run_latest() if live else loop.run_in_order()
        except Exception as exc:  # e.g. the disk filled up: stop cleanly, keep what was written
            log.debug("render loop failed", exc_info=True)
            error = _one_line(exc)
        finally:
            stop.set()
            _join(capture, "capture")
            _join(worker, "inference")
            _close_web(web)
            closing_error = _close_outputs(outputs)
            display.close()
            if progress is not None:
                progress.close()   # before the summary: it gets a line of its own
    error = error or closing_error
    summary = _summary(loop, capture, worker, signals.received, error,
                       time.monotonic() - started)
    if tracker is not None:   # the worker has stopped (or is left behind): a read is safe
        summary = dataclasses.replace(summary, tracks=tuple(tracker.summary()))
    return summary


def _one_line(exc: Exception) -> str:
    """An exception as one line; an OutputError already says which output and why."""
    text = str(exc) if isinstance(exc, OutputError) else f"{type(exc).__name__}: {exc}"
    return text.splitlines()[0] if text else type(exc).__name__


def _close_outputs(outputs: Outputs) -> str:
    """Close (finalise) both outputs; what went wrong, as one line, or ""."""
    try:
        outputs.close()
    except Exception as exc:  # a video that does not play back, a disk that failed
        log.debug("closing the outputs failed", exc_info=True)
        return _one_line(exc)
    return ""


def _logs_above(progress):
    """Warnings during a run print above the progress bar, not glued onto its line."""
    if progress is None:
        return contextlib.nullcontext()
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm()


def _join(thread, name: str) -> None:
    if not thread.join(JOIN_TIMEOUT_S):
        # A daemon thread inside a blocking call (a stream read, a model pass); the
        # outputs are the main thread's, so leaving it loses nothing.
        log.info("%s thread did not stop within %.0f s; leaving it behind", name,
                 JOIN_TIMEOUT_S)


def _summary(loop: RenderLoop, capture: Capture, worker: Worker, received: str, error: str,
             elapsed_s: float) -> Summary:
    # The counts come from the capture itself: after a signal or a quit the render
    # loop never takes the CaptureEnd that carries them.
    end = loop.end or capture.outcome()
    if error or loop.failure:
        reason, error = "error", error or loop.failure
    elif received:
        reason = received
    elif loop.quit or loop.end is None:
        reason = "quit"
    else:
        reason = end.reason
        if reason in ("lost", "error"):
            error = f"source {'lost' if reason == 'lost' else 'failed'}: {end.error}"
        elif worker.failed_frames and not loop.processed:   # a short source, all failed
            reason, error = "error", (f"inference failed on all {worker.failed_frames} "
                                      f"frames: {worker.last_error}")
    return Summary(reason, loop.processed, end.frames_skipped, end.reconnects,
                   worker.failed_frames, error, loop.frames_shown, elapsed_s)


def _device_name(detector) -> str:
    """'cpu bfloat16', 'cuda:0 float16': the HUD says what precision runs, since
    `--dtype auto` depends on the machine."""
    model = getattr(detector, "model", None)
    dtype = getattr(model, "dtype", None)
    device = str(getattr(model, "device", "cpu"))
    return f"{device} {str(dtype).removeprefix('torch.')}" if dtype is not None else device


def _progress_bar(reader: Reader, max_frames: int):
    from tqdm import tqdm

    total = reader.frame_count
    if max_frames:
        total = min(total, max_frames) if total else max_frames
    # Only on a terminal (disable=None): in a log or a pipe, a bar redrawn with
    # carriage returns would only garble the lines around it.
    return tqdm(total=total, unit="frame", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5, leave=False, disable=None)
