"""Sources: what `--source` names, opened and checked before any work starts.

A source is a webcam index, a stream URL, a video file, an image, a folder of
images, or the generated demo scene.  :func:`parse_source` decides which from
the text alone; :func:`open_reader` opens it and reads its first frame, so a
missing, unopenable or unsupported source is a :class:`SourceError` (one line,
an input error) before a model is loaded.

Every reader has the same small interface - ``read()``, ``reopen()``,
``close()`` and its ``fps``, ``width``, ``height``, ``frame_count`` and
``live`` - so the capture thread treats them alike and tests can pass fakes.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import cv2
import numpy as np

# FFmpeg prints a line per damaged packet and OpenCV a warning per failed
# open; the application reports both itself, once, in one line.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
if "OPENCV_LOG_LEVEL" not in os.environ:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".ts", ".mts", ".mjpeg", ".mjpg", ".gif", ".3gp", ".ogv")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                  ".pnm", ".jp2")
IMAGE_FPS = 1.0          # an image or a folder of images plays one image a second
DEMO_FPS = 30.0
DEMO_SIZE = (640, 480)
DEMO_SHAPES = 4
DEMO_SEED = 0
STREAM_TIMEOUT_S = 10.0  # FFmpeg's open and read timeouts: a silent server cannot hang a run
MAX_BAD_READS = 32       # least consecutive failed reads before a damaged file is given up
BAD_STRETCH_S = 10.0     # files of unknown length: longest damaged stretch read through


class SourceError(ValueError):
    """The source is missing, cannot be opened or is of an unsupported kind."""


@dataclass(frozen=True)
class SourceSpec:
    """What a `--source` text names: kind is camera, stream, video, image, folder or demo."""

    kind: str
    location: str | int

    @property
    def live(self) -> bool:
        """Cameras and streams run at their own pace, drop frames and may disconnect."""
        return self.kind in ("camera", "stream")


@dataclass(frozen=True)
class Grabbed:
    """One frame as read: `index` is its place in the source (None for live sources)."""

    index: int | None
    image: np.ndarray


def parse_source(text: str, demo: bool = False) -> SourceSpec:
    """Decide what kind of source `text` names; a missing or unsupported path is an error."""
    if demo:
        return SourceSpec("demo", "demo")
    text = str(text).strip()
    if re.fullmatch(r"\d+", text):
        return SourceSpec("camera", int(text))
    scheme = urlparse(text).scheme.lower()
    if scheme in STREAM_SCHEMES:
        return SourceSpec("stream", text)
    if not text:
        raise SourceError("--source: must not be empty (a webcam index, a path or a URL)")
    return _path_spec(Path(text).expanduser())


def _path_spec(path: Path) -> SourceSpec:
    if not path.exists():
        raise SourceError(f"--source {path}: no such file or folder")
    if path.is_dir():
        if not list_images(path):
            raise SourceError(f"--source {path}: folder holds no images "
                              f"({', '.join(IMAGE_SUFFIXES)})")
        return SourceSpec("folder", str(path))
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return SourceSpec("image", str(path))
    if suffix in VIDEO_SUFFIXES:
        return SourceSpec("video", str(path))
    raise SourceError(f"--source {path}: unsupported file type {suffix or '(no suffix)'!r} "
                      f"(videos: {', '.join(VIDEO_SUFFIXES)}; images: "
                      f"{', '.join(IMAGE_SUFFIXES)})")


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder in natural order (frame2 before frame10)."""
    natural = lambda p: [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return sorted(files, key=natural)


def open_reader(spec: SourceSpec, stop: threading.Event | None = None) -> "Reader | None":
    """Open a source and read its first frame; SourceError when that fails.

    With `stop`, opening runs in a helper thread and None is returned as soon
    as `stop` is set (Ctrl+C while a stream server keeps the connection silent):
    the open itself is only bounded by the stream timeouts.
    """
    if stop is None:
        return _open_reader(spec)
    return call_unless_stopped(lambda: _open_reader(spec), stop,
                               cleanup=lambda reader: reader.close())


def _open_reader(spec: SourceSpec) -> "Reader":
    if spec.kind == "stream":
        reader = _open_stream(spec)
    else:
        opener = {"camera": CaptureReader, "video": VideoReader, "image": FolderReader,
                  "folder": FolderReader, "demo": DemoReader}[spec.kind]
        reader = opener(spec)
    try:
        reader.peek_first()
    except Exception:
        reader.close()
        raise
    return reader


def _open_stream(spec: SourceSpec) -> "Reader":
    """A stream URL, or a video file served at one: a container that knows how many
    frames it holds is a file (every frame, in order, then the end), not a live stream."""
    cap = open_capture(spec)
    if cap is None:
        raise SourceError(f"--source {spec.location}: cannot open this stream (no answer "
                          f"within {STREAM_TIMEOUT_S:g} s, refused, or not a video)")
    if cap.get(cv2.CAP_PROP_FRAME_COUNT) > 0:
        return VideoReader(SourceSpec("video", spec.location), cap)
    return CaptureReader(spec, cap)


def open_capture(spec: SourceSpec) -> cv2.VideoCapture | None:
    """cv2.VideoCapture of a camera, stream or file, or None when it does not open.
    Streams get FFmpeg's open and read timeouts, so no server can block a run for long."""
    if spec.kind == "camera":
        cap = cv2.VideoCapture(int(spec.location))
    elif spec.kind == "stream":
        timeout_ms = int(STREAM_TIMEOUT_S * 1000)
        cap = cv2.VideoCapture(str(spec.location), cv2.CAP_FFMPEG,
                               [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout_ms,
                                cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout_ms])
    else:
        cap = cv2.VideoCapture(str(spec.location), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


def call_unless_stopped(fn, stop: threading.Event, cleanup=None, poll_s: float = 0.05):
    """fn() in a helper thread: its result (or its exception), or None once `stop` is set.

    A blocking C call (a stream open) cannot be interrupted, but it can be
    left to finish on its own: the waiting thread stays responsive (signal
    handlers run in it), and `cleanup(result)` releases what an abandoned call
    returns.
    """
    lock, box = threading.Lock(), {}

    def target() -> None:
        try:
            outcome = ("value", fn())
        except BaseException as exc:   # handed to the waiting thread
            outcome = ("error", exc)
        with lock:
            abandoned = box.setdefault("outcome", outcome) is not outcome
        if abandoned and outcome[0] == "value" and cleanup is not None:
            cleanup(outcome[1])

    worker = threading.Thread(target=target, name="source-open", daemon=True)
    worker.start()
    while not box.get("outcome") and not stop.is_set():
        worker.join(poll_s)
    with lock:
        kind, value = box.setdefault("outcome", ("stopped", None))
    if kind == "error":
        raise value
    return value if kind == "value" else None


class Reader:
    """Base of all readers: the first frame is read at open time and handed out first."""

    spec: SourceSpec
    fps: float = 30.0
    frame_count: int | None = None   # frames the source says it holds; None = unknown/live

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec
        self._first: Grabbed | None = None
        self.width = self.height = 0

    @property
    def live(self) -> bool:
        return self.spec.live

    @property
    def name(self) -> str:
        return f"{self.spec.kind} {self.spec.location}"

    def peek_first(self) -> None:
        first = self._read()
        if first is None:
            raise SourceError(f"--source {self.spec.location}: opened, but no frame could be "
                              "read from it (unsupported codec or damaged file?)")
        self._first = first
        self.height, self.width = first.image.shape[:2]

    def read(self) -> Grabbed | None:
        """The next frame, or None at the end of a file or when a live source is lost."""
        if self._first is not None:
            first, self._first = self._first, None
            return first
        return self._read()

    def _read(self) -> Grabbed | None:
        raise NotImplementedError

    def reopen(self) -> bool:
        """Try to open a live source again; True when it is open."""
        return False

    def close(self) -> None:
        pass


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Grey or BGRA images (PNG folders, some cameras) as 3-channel BGR uint8."""
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1.0, float(image.max())))
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


class CaptureReader(Reader):
    """A webcam or a live stream through cv2.VideoCapture; reopened after a failure."""

    def __init__(self, spec: SourceSpec, cap: cv2.VideoCapture | None = None) -> None:
        super().__init__(spec)
        self._cap = cap
        if self._cap is None and not self.reopen():
            what = "camera" if spec.kind == "camera" else "stream"
            raise SourceError(f"--source {spec.location}: cannot open this {what}")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        # Cameras often report 0 or nonsense; 30 is what nearly all deliver.
        self.fps = float(fps) if 1.0 <= fps <= 240.0 else 30.0

    def reopen(self) -> bool:
        self.close()
        self._cap = open_capture(self.spec)
        return self._cap is not None

    def _read(self) -> Grabbed | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        return Grabbed(None, _as_bgr(image)) if ok and image is not None else None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class VideoReader(Reader):
    """A video file (or one served at a URL); damaged frames are skipped and their
    indices left out.

    The index of a frame comes from its timestamp, not from counting reads,
    so after a damaged stretch the next good frame keeps its place in the
    source (the capture stage counts the gap as skipped frames).
    """

    def __init__(self, spec: SourceSpec, cap: cv2.VideoCapture | None = None) -> None:
        super().__init__(spec)
        self._cap = cap if cap is not None else open_capture(spec)
        if self._cap is None:
            raise SourceError(f"--source {spec.location}: cannot open this video (damaged, "
                              "truncated or an unsupported format)")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 0.1 <= fps <= 1000.0 else 30.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        self._last_index = -1

    def _read(self) -> Grabbed | None:
        failed, since = 0, time.monotonic()
        while failed < self._bad_reads_allowed():
            ok, image = self._cap.read()
            if ok and image is not None:
                return Grabbed(self._index_of_last_read(), _as_bgr(image))
            failed += 1
            if failed >= MAX_BAD_READS and time.monotonic() - since > BAD_STRETCH_S:
                return None   # reads that block (a stalled server), not damage
        return None

    def _bad_reads_allowed(self) -> int:
        """Failed reads in a row before the file counts as ended.

        Each failed read consumes one damaged frame, so while the container's
        frame count says frames remain, reading on reaches the good frames after
        a damaged stretch.  Without a count, a stretch of `BAD_STRETCH_S` is read
        through.
        """
        if self.frame_count is None:
            return max(MAX_BAD_READS, int(BAD_STRETCH_S * self.fps))
        remaining = self.frame_count - 1 - self._last_index
        return max(MAX_BAD_READS, remaining + 1) if remaining > 0 else 1

    def _index_of_last_read(self) -> int:
        pos_ms = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        index = int(round(pos_ms * self.fps / 1000.0)) if pos_ms >= 0 else self._last_index + 1
        index = max(index, self._last_index + 1)   # odd timestamps never reorder frames
        self._last_index = index
        return index

    def seek(self, index: int) -> None:
        """Read on from frame `index` (the archive indexer decodes one time chunk of a
        file): the next read() returns it, or the first readable frame after it."""
        if index <= 0 and self._first is not None and self._first.index == 0:
            return
        self._first = None
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, max(0, index))
        self._last_index = max(0, index) - 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()


class FolderReader(Reader):
    """An image, or a folder of images in natural order; unreadable images are skipped."""

    fps = IMAGE_FPS

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        path = Path(spec.location)
        self._files = list_images(path) if spec.kind == "folder" else [path]
        self.frame_count = len(self._files)
        self._next = 0

    def _read(self) -> Grabbed | None:
        while self._next < len(self._files):
            index, self._next = self._next, self._next + 1
            image = cv2.imread(str(self._files[index]), cv2.IMREAD_UNCHANGED)
            if image is not None and image.size:
                return Grabbed(index, _as_bgr(image))
            if self.spec.kind == "image":
                raise SourceError(f"--source {self.spec.location}: cannot read this image "
                                  "(damaged or unsupported)")
        return None


class DemoReader(Reader):
    """The generated moving-shapes scene: endless, deterministic, `DEMO_FPS` frames a second."""

    fps = DEMO_FPS

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.scene = demo_scene()
        self._next = 0

    @property
    def name(self) -> str:
        return "demo scene"

    def _read(self) -> Grabbed:
        index, self._next = self._next, self._next + 1
        return Grabbed(index, self.scene.frame(index).frame)


def demo_scene():
    """The scene `--demo` plays; its captions are the demo's default prompts."""
    from ..scenes import MovingScene

    return MovingScene(*DEMO_SIZE, n_shapes=DEMO_SHAPES, seed=DEMO_SEED)
