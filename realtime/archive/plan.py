"""Planning: the files named by ``--source``, probed and cut into time chunks.

A chunk is ``chunk_s`` seconds of one file (one image is one chunk of one
frame): the unit of work that one indexer decodes, encodes and writes as one
Parquet file, that the manifest records as ok or error, and that a retry or a
``--resume`` redoes.  Which frames are sampled is decided for the whole file
(the first frame at or after every ``1 / sample_fps`` seconds), so the chunk
boundaries never change which frames an index holds.
"""

from __future__ import annotations

import glob
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..live.source import (IMAGE_FPS, IMAGE_SUFFIXES, VIDEO_SUFFIXES, SourceError, open_reader,
                           parse_source)

_EPS = 1e-9


class PlanError(ValueError):
    """A --source names nothing to index (an input error)."""


@dataclass(frozen=True)
class Chunk:
    """Frames [start_frame, end_frame) of one file; end_frame None = to the end."""

    path: str
    size: int
    mtime: float
    kind: str                 # video or image
    chunk: int                # its place among the file's chunks
    start_frame: int
    end_frame: int | None
    fps: float                # 0.0: the file could not be probed (indexing it will say why)
    sample_fps: float
    chunk_s: float
    file_frames: int = 0      # frames the file says it holds (0 = unknown): progress only

    @property
    def key(self) -> tuple[str, int]:
        return self.path, self.chunk

    @property
    def expected_frames(self) -> int:
        """Frames this chunk should decode, for progress bars (0 = unknown)."""
        end = self.end_frame if self.end_frame is not None else self.file_frames
        return max(0, end - self.start_frame)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Chunk":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def expand_sources(sources: Sequence[str]) -> list[Path]:
    """Files to index: each source a file, a folder (searched recursively for videos and
    images) or a glob; in natural order, each file once.  PlanError when one names
    nothing."""
    found: dict[Path, None] = {}
    for source in sources:
        for path in _expand_one(str(source)):
            found.setdefault(path.resolve(), None)
    if not found:
        raise PlanError("--source: nothing to index")
    return list(found)


def _expand_one(source: str) -> list[Path]:
    path = Path(source).expanduser()
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and _indexable(p)]
        if not files:
            raise PlanError(f"--source {source}: folder holds no videos or images")
        return sorted(files, key=_natural)
    if path.is_file():
        if not _indexable(path):
            raise PlanError(f"--source {source}: unsupported file type {path.suffix or '(none)'!r} "
                            f"(videos: {', '.join(VIDEO_SUFFIXES)}; images: "
                            f"{', '.join(IMAGE_SUFFIXES)})")
        return [path]
    if glob.has_magic(source):
        files = [Path(p) for p in glob.glob(os.path.expanduser(source), recursive=True)]
        files = [p for p in files if p.is_file() and _indexable(p)]
        if not files:
            raise PlanError(f"--source {source}: the pattern matches no video or image")
        return sorted(files, key=_natural)
    raise PlanError(f"--source {source}: no such file or folder")


def _indexable(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES + IMAGE_SUFFIXES


def _natural(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def plan_file(path: Path, sample_fps: float, chunk_s: float) -> list[Chunk]:
    """The chunks of one file.  A file that cannot be opened gives one chunk with fps
    0, so that indexing it fails, is retried and ends as one manifest error."""
    stat = path.stat()
    common = dict(path=str(path), size=stat.st_size, mtime=stat.st_mtime,
                  sample_fps=sample_fps, chunk_s=chunk_s)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [Chunk(kind="image", chunk=0, start_frame=0, end_frame=1, fps=IMAGE_FPS,
                      file_frames=1, **common)]
    try:
        reader = open_reader(parse_source(str(path)))
    except SourceError:
        return [Chunk(kind="video", chunk=0, start_frame=0, end_frame=None, fps=0.0, **common)]
    fps, count = reader.fps, reader.frame_count
    reader.close()
    per_chunk = max(1, round(chunk_s * fps))
    n_chunks = max(1, math.ceil(count / per_chunk)) if count else 1
    return [Chunk(kind="video", chunk=k, start_frame=k * per_chunk,
                  # the last chunk reads to the end: a container's frame count is a hint
                  end_frame=None if k == n_chunks - 1 else (k + 1) * per_chunk,
                  fps=fps, file_frames=count or 0, **common)
            for k in range(n_chunks)]


def plan(paths: Iterable[Path], sample_fps: float, chunk_s: float) -> list[Chunk]:
    return [chunk for path in paths for chunk in plan_file(path, sample_fps, chunk_s)]


class Sampler:
    """Which frames of a file are indexed: the first frame at or after each multiple of
    1 / sample_fps seconds (every frame when the file has fewer frames a second).

    A frame the decoder skipped (damage) moves its sample to the next readable one.
    """

    def __init__(self, fps: float, sample_fps: float) -> None:
        self.rate = min(1.0, sample_fps / fps) if fps > 0 else 1.0   # samples per frame

    def target(self, sample: int) -> int:
        """Frame index of sample number `sample`."""
        return math.ceil(sample / self.rate - _EPS)

    def next_sample(self, frame: int) -> int:
        """The first sample number whose frame comes after `frame`."""
        return math.floor(frame * self.rate + _EPS) + 1

    def first_target(self, start_frame: int) -> int:
        return self.target(self.next_sample(start_frame - 1))

    def frames(self, start_frame: int, end_frame: int) -> list[int]:
        """The sampled frame indices in [start_frame, end_frame) of an undamaged file."""
        out, frame = [], self.first_target(start_frame)
        while frame < end_frame:
            out.append(frame)
            frame = self.target(self.next_sample(frame))
        return out
