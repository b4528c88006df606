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
MAX_BAD_READS = 32       # consecutive failed reads that end a damaged video file


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


def open_reader(spec: SourceSpec) -> "Reader":
    """Open a source and read its first frame; SourceError when that fails."""
    opener = {"camera": CaptureReader, "stream": CaptureReader, "video": VideoReader,
              "image": FolderReader, "folder": FolderReader, "demo": DemoReader}[spec.kind]
    reader = opener(spec)
    try:
        reader.peek_first()
    except Exception:
        reader.close()
        raise
    return reader


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
    """A webcam or a stream through cv2.VideoCapture; reopened after a failure."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._cap: cv2.VideoCapture | None = None
        if not self.reopen():
            what = "camera" if spec.kind == "camera" else "stream"
            raise SourceError(f"--source {spec.location}: cannot open this {what}")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        # Cameras often report 0 or nonsense; 30 is what nearly all deliver.
        self.fps = float(fps) if 1.0 <= fps <= 240.0 else 30.0

    def reopen(self) -> bool:
        self.close()
        if self.spec.kind == "camera":
            cap = cv2.VideoCapture(int(self.spec.location))
        else:
            cap = cv2.VideoCapture(str(self.spec.location), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            return False
        self._cap = cap
        return True

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
    """A video file; damaged frames are skipped and their indices left out.

    The index of a frame comes from its timestamp, not from counting reads,
    so after a damaged stretch the next good frame keeps its place in the
    source (the capture stage counts the gap as skipped frames).
    """

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._cap = cv2.VideoCapture(str(spec.location), cv2.CAP_FFMPEG)
        if not self._cap.isOpened():
            self._cap.release()
            raise SourceError(f"--source {spec.location}: cannot open this video (damaged, "
                              "truncated or an unsupported format)")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if 0.1 <= fps <= 1000.0 else 30.0
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 else None
        self._last_index = -1

    def _read(self) -> Grabbed | None:
        for _ in range(MAX_BAD_READS):
            ok, image = self._cap.read()
            if ok and image is not None:
                return Grabbed(self._index_of_last_read(), _as_bgr(image))
            if self.frame_count is not None and self._last_index >= self.frame_count - 1:
                return None   # a clean end: no need to probe further
        return None

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
