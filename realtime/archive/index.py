"""Indexing one chunk: decode it, sample it, encode it, write it.

A :class:`ChunkIndexer` holds one model, loaded once, and indexes chunk after
chunk: it decodes its own chunk with the live app's OpenCV reader (seeking to
the chunk's first frame), keeps the sampled frames, and stores per frame

- the whole-frame embedding (the classify method's vision pass), which a
  search scores for every stored frame with one matrix product;
- every array of the detector's prompt-free vision pass
  (``Detector.encode``: window embeddings, refine patches, ...), by name,
  from which a search draws boxes with ``Detector.detect_encoded`` - the
  detector's own maps-to-boxes code and gate.

It returns the chunk's manifest row: ``ok``, or ``error`` with the reason (a
file that cannot be opened, a decoder failure, an exception while encoding).
The same class runs in-process and inside Ray actors.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import DetectorConfig, ModelConfig
from ..live.source import SourceError, SourceSpec, open_reader
from .plan import Chunk, Sampler
from .store import FORMAT_VERSION, ChunkFrames, chunk_base, write_chunk


class Interrupted(Exception):
    """The job was asked to stop; the chunk in hand is abandoned, not recorded."""


@dataclass(frozen=True)
class IndexSettings:
    """Everything an indexer needs, picklable (it travels to Ray actors)."""

    model: ModelConfig
    detector: DetectorConfig
    index_dir: str
    threads: int = 0          # torch CPU threads; 0 = torch's default


def error_text(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__


def manifest_row(chunk: Chunk, attempt: int, layout: dict, started: float, **outcome) -> dict:
    """A chunk's manifest row (docs/archive.md lists the fields)."""
    return {**chunk.to_dict(), **outcome, "attempts": attempt, "model": layout["model"],
            "layout": layout, "format": FORMAT_VERSION,
            "index_s": round(time.perf_counter() - started, 3),
            "worker": f"{socket.gethostname()}:{os.getpid()}"}


def error_row(chunk: Chunk, attempt: int, error: str, layout: dict, started: float) -> dict:
    return manifest_row(chunk, attempt, layout, started, status="error", error=error, frames=0,
                        files=[])


class ChunkIndexer:
    """One model, loaded once; ``indexer(chunk, attempt)`` -> the chunk's manifest row."""

    def __init__(self, settings: IndexSettings, model=None) -> None:
        import torch

        from ..engine.detector import Detector
        from ..engine.model import load_model

        if settings.threads:
            torch.set_num_threads(settings.threads)
        self.settings = settings
        self.index_dir = Path(settings.index_dir)
        model = model if model is not None else load_model(settings.model)
        # Indexing stores what search scores later, without pixels: nothing is fitted,
        # so the patch map is stored (refine as set) with no box check to run.
        self.detector = Detector((), dataclasses.replace(settings.detector, fit=False), model)
        # The whole-frame embedding comes from the classify method's vision pass,
        # on the same loaded model.
        self.frame_pass = self.detector if settings.detector.method == "classify" else Detector(
            (), dataclasses.replace(settings.detector, method="classify"), model)
        self.stop = threading.Event()
        self.on_frame: Callable[[int], None] | None = None   # progress: frames decoded

    def layout(self) -> dict:
        return self.detector.layout()

    def __call__(self, chunk: Chunk | dict, attempt: int = 1) -> dict:
        chunk = chunk if isinstance(chunk, Chunk) else Chunk.from_dict(chunk)
        started = time.perf_counter()
        try:
            data, span = self.encode(chunk)
            meta = {"format": FORMAT_VERSION, "layout": self.layout(), "chunk": chunk.to_dict()}
            written = write_chunk(self.index_dir, chunk_base(chunk), chunk.path, data, meta)
        except Interrupted:
            raise
        except Exception as exc:   # recorded in the manifest, retried by the caller
            return error_row(chunk, attempt, error_text(exc), self.layout(), started)
        return manifest_row(chunk, attempt, self.layout(), started, status="ok", error="",
                            frames=len(data), **span, **written)

    def encode(self, chunk: Chunk) -> tuple[ChunkFrames, dict]:
        """The sampled frames of the chunk, encoded; and the span of video it covered."""
        reader = open_reader(SourceSpec(chunk.kind, chunk.path))
        try:
            if chunk.start_frame:
                reader.seek(chunk.start_frame)
            return self._encode_frames(reader, chunk)
        finally:
            reader.close()

    def _encode_frames(self, reader, chunk: Chunk) -> tuple[ChunkFrames, dict]:
        fps = reader.fps
        sampler = Sampler(fps, chunk.sample_fps)
        target = sampler.first_target(chunk.start_frame)
        data, last, size = ChunkFrames(), None, (0, 0)
        while (grabbed := reader.read()) is not None:
            if self.stop.is_set():
                raise Interrupted()
            index = grabbed.index   # files and images always know their frame's place
            if chunk.end_frame is not None and index >= chunk.end_frame:
                break
            if index < chunk.start_frame:
                continue
            last = index
            size = (grabbed.image.shape[1], grabbed.image.shape[0])
            if index >= target:
                self._add(data, grabbed.image, index, index / fps)
                target = sampler.target(sampler.next_sample(index))
            if self.on_frame is not None:
                self.on_frame(1)
        if last is None and chunk.start_frame == 0:
            raise SourceError(f"{chunk.path}: no frame could be decoded")
        end = (last + 1) if last is not None else chunk.start_frame
        return data, {"start_s": round(chunk.start_frame / fps, 6), "end_s": round(end / fps, 6),
                      "seconds": round((end - chunk.start_frame) / fps, 6), "width": size[0],
                      "height": size[1], "decoded_fps": fps}

    def _add(self, data: ChunkFrames, image, index: int, t: float) -> None:
        encoded = self.detector.encode(image)
        whole = encoded if self.frame_pass is self.detector else self.frame_pass.encode(image)
        frame = whole.arrays["frame"]
        data.add(index, t, (encoded.frame_w, encoded.frame_h), frame.half().cpu().numpy(),
                 {name: value.half().cpu().numpy() for name, value in encoded.arrays.items()})
