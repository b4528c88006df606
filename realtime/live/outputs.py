"""Outputs: the annotated video and the JSON Lines file, safe on every exit path.

Both writers are context managers and are closed in a ``finally``: the video
is finalised (an mp4 only plays once its index is written on release) and the
JSON Lines file holds whole lines only - each line is written unbuffered and
at once, so whatever stops the run, every line already produced is complete
and on disk.

A write that fails (a full disk, a removed drive) is an :class:`OutputError`
at the writer, with one line: the JSON Lines file is cut back to its last
complete line; the video writer, which fails silently inside FFmpeg, is
watched through its return value, the free space under it, and by opening
the finished file again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

# Containers and the codec each is written with: mp4v is in every OpenCV
# build with FFmpeg (H.264 encoders often are not), MJPG in every build.
VIDEO_CODECS = {".mp4": "mp4v", ".mov": "mp4v", ".m4v": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


class OutputError(ValueError):
    """An output path cannot be written (an input error when found before the run)."""


def check_distinct(writes: Sequence[tuple[str, str]], reads: Sequence[tuple[str, str]]) -> None:
    """OutputError when an output names a file the run reads, or both outputs one file.

    `writes` and `reads` are (flag, path) pairs.  Existing files are compared by
    device and inode, so symlinks, hard links and ``./a.mp4`` against ``a.mp4``
    all count; paths that do not exist yet by their resolved absolute path.
    Call it before anything is opened for writing: opening would truncate.
    """
    seen = [(flag, path, _file_key(path)) for flag, path in reads]
    for flag, path in writes:
        key = _file_key(path)
        for other_flag, other_path, other_key in seen:
            if key == other_key:
                raise OutputError(f"{flag} {path}: is the same file as {other_flag} "
                                  f"{other_path}; writing it would destroy that "
                                  "(give another path)")
        seen.append((flag, path, key))


def _file_key(path: str) -> tuple[int, int] | str:
    expanded = os.path.expanduser(path)
    try:
        info = os.stat(expanded)
        return info.st_dev, info.st_ino
    except OSError:
        return os.path.normcase(os.path.realpath(expanded))


def check_output_path(path: str, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """Fail now, with one line, if `path` could not be written later.

    The check creates the file for a moment (and removes it again when it did
    not exist), because permission bits alone do not tell: root ignores them
    and read-only mounts do not show in them.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give a file name")
    if suffixes is not None and target.suffix.lower() not in suffixes:
        raise OutputError(f"{flag} {path}: unsupported file type "
                          f"{target.suffix or '(no suffix)'!r} (allowed: {', '.join(suffixes)})")
    if not target.parent.is_dir():
        raise OutputError(f"{flag} {path}: folder {target.parent} does not exist")
    existed = target.exists()
    try:
        with open(target, "ab"):
            pass
    except OSError as exc:
        raise OutputError(f"{flag} {path}: cannot write ({exc.strerror or exc})") from None
    if not existed:
        target.unlink(missing_ok=True)
    return target


FREE_CHECK_FRAMES = 30     # the video's disk is checked for space every this many frames
FREE_MIN_BYTES = 64 * 1024  # below this, FFmpeg's next buffer flush fails (silently)


def free_bytes(path: Path) -> int | None:
    """Bytes this process may still write on the file system holding `path`."""
    try:
        info = os.statvfs(path.parent)
    except (OSError, AttributeError):   # no statvfs: Windows
        return None
    blocks = info.f_bfree if hasattr(os, "geteuid") and os.geteuid() == 0 else info.f_bavail
    return blocks * info.f_frsize


class VideoOutput:
    """An annotated video of the source's size and frame rate.

    Frames of another size (a folder of mixed images) are scaled to it, since
    a video has one frame size.
    """

    def __init__(self, path: str | Path, fps: float, width: int, height: int) -> None:
        self.path = Path(path)
        self.size = (int(width), int(height))
        self.frames_written = 0
        codec = VIDEO_CODECS.get(self.path.suffix.lower(), "mp4v")
        self._writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec),
                                       float(fps), self.size)
        if not self._writer.isOpened():
            self._writer.release()
            raise OutputError(f"--output {path}: cannot open a {codec} video writer for "
                              f"{width}x{height} at {fps:g} fps")

    def write(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.size:
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        if self._writer.write(image) is False:      # OpenCV's own AVI writer says so
            raise OutputError(f"--output {self.path}: cannot write frame "
                              f"{self.frames_written + 1} (disk full or removed?)")
        self.frames_written += 1
        if self.frames_written % FREE_CHECK_FRAMES == 0:
            free = free_bytes(self.path)
            if free is not None and free < FREE_MIN_BYTES:
                raise OutputError(f"--output {self.path}: the disk is full ({free // 1024} "
                                  f"KiB free) after {self.frames_written} frames")

    def close(self) -> None:
        """Finalise the file; OutputError when what was written does not play back."""
        if self._writer is None:
            return
        self._writer.release()
        self._writer = None
        if self.frames_written and not _plays(self.path):
            raise OutputError(f"--output {self.path}: the finished video does not play "
                              f"({self.frames_written} frames were written; disk full?)")

    def __enter__(self) -> "VideoOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _plays(path: Path) -> bool:
    """Whether a finished video opens and its first frame decodes (an mp4 whose index
    could not be written on release does not)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return cap.isOpened() and cap.read()[0]
    finally:
        cap.release()


class JsonlOutput:
    """One JSON object a line, one line per processed frame, on disk as it goes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lines_written = 0
        self._complete_bytes = 0    # file length up to the end of the last whole line
        try:
            self._file = open(self.path, "wb", buffering=0)
        except OSError as exc:
            raise OutputError(f"--detections {path}: cannot write "
                              f"({exc.strerror or exc})") from None

    def write(self, record: dict[str, Any]) -> None:
        # Unbuffered, a whole line at once: a stop between two records never
        # leaves half a line behind, and a failed write is seen here.
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        try:
            left = memoryview(data)
            while left:                  # a short write (a disk filling up) writes on
                left = left[self._file.write(left):]
        except OSError as exc:
            self._cut_to_complete_lines()
            raise OutputError(f"--detections {self.path}: cannot write "
                              f"({exc.strerror or exc}); it keeps the {self.lines_written} "
                              "complete lines written") from None
        self._complete_bytes += len(data)
        self.lines_written += 1

    def _cut_to_complete_lines(self) -> None:
        """Drop the start of a line a failed write may have left (truncating needs no space)."""
        try:
            os.ftruncate(self._file.fileno(), self._complete_bytes)
        except OSError:
            pass   # not a regular file (/dev/full, a pipe): nothing to cut

    def close(self) -> None:
        if self._file is not None and not self._file.closed:
            try:
                os.fsync(self._file.fileno())
            except OSError:
                pass   # not every file system syncs (pipes, /dev/null)
            self._file.close()

    def __enter__(self) -> "JsonlOutput":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Outputs:
    """The optional video and JSON Lines outputs of a run, written and closed together."""

    def __init__(self, video: VideoOutput | None = None, jsonl: JsonlOutput | None = None) -> None:
        self.video, self.jsonl = video, jsonl

    def write_frame(self, image: np.ndarray) -> None:
        if self.video is not None:
            self.video.write(image)

    def write_record(self, record: dict[str, Any]) -> None:
        if self.jsonl is not None:
            self.jsonl.write(record)

    def close(self) -> None:
        """Close both, even when closing the first fails."""
        try:
            if self.video is not None:
                self.video.close()
        finally:
            if self.jsonl is not None:
                self.jsonl.close()

    def __enter__(self) -> "Outputs":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_outputs(video_path: str, jsonl_path: str, fps: float, width: int,
                 height: int) -> Outputs:
    """Open the outputs asked for ("" = none); nothing stays open if one fails."""
    video = VideoOutput(video_path, fps, width, height) if video_path else None
    try:
        jsonl = JsonlOutput(jsonl_path) if jsonl_path else None
    except Exception:
        if video is not None:
            video.close()
        raise
    return Outputs(video, jsonl)
