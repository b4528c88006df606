"""The index on disk: ``manifest.jsonl`` and two Parquet files per chunk.

INDEX_DIR/
  manifest.jsonl                 one JSON row per chunk (ok or error), rewritten
                                 whole through a temporary file and a rename
  chunks/<name>.frames.parquet   per sampled frame: video, frame, t, frame_w,
                                 frame_h and the whole-frame embedding (fp16);
                                 what a search reads for every frame
  chunks/<name>.arrays.parquet   per sampled frame: every array the detector's
                                 vision pass returned (array_windows, array_fine,
                                 ...), fp16, in small row groups; read only for
                                 the few frames a search draws boxes on
  cache/<key>/                   the frames files' embeddings as one float32
                                 .npy matrix, for searches (derived, disposable)

Every file is written under a temporary name and renamed when complete, the
manifest row last, so an interrupted job never leaves a half file that looks
whole: a chunk counts only when its row says ok and both files exist.  The
format is documented for pandas and DuckDB in docs/archive.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from . import require
from .plan import Chunk

MANIFEST = "manifest.jsonl"
CHUNKS_DIR = "chunks"
FRAMES_SUFFIX = ".frames.parquet"
ARRAYS_SUFFIX = ".arrays.parquet"
ARRAY_PREFIX = "array_"
FORMAT_VERSION = 1
CACHE_DIR = "cache"       # derived from the frames files; safe to delete
CACHE_COLUMNS = ("video_ids", "frames", "times", "chunk_ids", "positions")
ARRAYS_ROW_GROUP = 8     # frames per row group of an arrays file: a box reads one group


class IndexStoreError(ValueError):
    """The index directory is not a usable index for this job (an input error)."""


def check_pyarrow():
    """pyarrow, or MissingExtra with the line that says what to install (checked before
    any work starts, not at the first write)."""
    return _pyarrow()


def _pyarrow():
    pa = require("pyarrow", "the archive index")
    require("pyarrow.parquet", "the archive index")
    return pa


# --------------------------------------------------------------------------- atomic writes


def temporary_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, sync it, rename it over `path`."""
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove_temporaries(index_dir: Path) -> int:
    """Files an interrupted job left under temporary names; never part of the index."""
    removed = 0
    for tmp in list(index_dir.glob("*.tmp-*")) + list((index_dir / CHUNKS_DIR).glob("*.tmp-*")):
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


# --------------------------------------------------------------------------- chunk files


def chunk_base(chunk: Chunk) -> str:
    """chunks/<file stem>-<hash of the path>-<chunk>: unique per file and chunk, readable."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(chunk.path).stem)[:40] or "file"
    digest = hashlib.sha1(chunk.path.encode("utf-8")).hexdigest()[:10]
    return f"{CHUNKS_DIR}/{stem}-{digest}-{chunk.chunk:05d}"


@dataclass
class ChunkFrames:
    """What an indexer collected for one chunk, frame by frame."""

    frames: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)        # (frame_w, frame_h)
    embeddings: list[np.ndarray] = field(default_factory=list)        # (D,) fp16 each
    arrays: dict[str, list[np.ndarray]] = field(default_factory=dict)  # name -> (N, D) each

    def add(self, frame: int, t: float, size: tuple[int, int], embedding: np.ndarray,
            arrays: dict[str, np.ndarray]) -> None:
        if self.frames and set(arrays) != set(self.arrays):
            raise ValueError(f"the vision pass returned arrays {sorted(arrays)} after "
                             f"{sorted(self.arrays)}")
        self.frames.append(frame)
        self.times.append(t)
        self.sizes.append(size)
        self.embeddings.append(np.asarray(embedding, np.float16).reshape(-1))
        for name, value in arrays.items():
            self.arrays.setdefault(name, []).append(np.asarray(value, np.float16))

    def __len__(self) -> int:
        return len(self.frames)


def _fixed_lists(pa, rows: np.ndarray):
    """(n, D) -> fixed_size_list<halffloat>[D], zero-copy from the numpy buffer."""
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[-1])


def _nested_lists(pa, per_frame: list[np.ndarray]):
    """[(N_i, D)] -> list<fixed_size_list<halffloat>[D]>: N_i embeddings per frame."""
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in per_frame])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), _fixed_lists(pa, np.concatenate(per_frame)))


def write_chunk(index_dir: Path, base: str, video: str, data: ChunkFrames,
                meta: dict) -> dict:
    """Both Parquet files of a chunk, each atomically; their names and sizes."""
    pa = _pyarrow()
    import pyarrow.parquet as pq

    frames_path = index_dir / (base + FRAMES_SUFFIX)
    arrays_path = index_dir / (base + ARRAYS_SUFFIX)
    frames_path.parent.mkdir(parents=True, exist_ok=True)
    n = len(data)
    dim = data.embeddings[0].shape[0] if n else 0
    embedding = np.stack(data.embeddings) if n else np.zeros((0, dim), np.float16)
    scalars = {
        "video": pa.array([video] * n, pa.string()),
        "frame": pa.array(data.frames, pa.int64()),
        "t": pa.array(data.times, pa.float64()),
        "frame_w": pa.array([w for w, _ in data.sizes], pa.int32()),
        "frame_h": pa.array([h for _, h in data.sizes], pa.int32()),
    }
    metadata = {b"realtime.archive": json.dumps(meta).encode("utf-8")}
    frames = pa.table({**scalars, "embedding": _fixed_lists(pa, embedding)}
                      ).replace_schema_metadata(metadata)
    arrays = pa.table({"frame": scalars["frame"], "frame_w": scalars["frame_w"],
                       "frame_h": scalars["frame_h"],
                       **{ARRAY_PREFIX + name: _nested_lists(pa, values)
                          for name, values in data.arrays.items()}}
                      ).replace_schema_metadata(metadata)
    # Arrays first, frames second, the manifest row last: whatever exists is whole.
    _write_table(pq, arrays, arrays_path, ARRAYS_ROW_GROUP, "zstd")
    # Search reads every whole-frame embedding: one row group, no decompression.
    _write_table(pq, frames, frames_path, max(1, n), "none")
    return {"files": [base + FRAMES_SUFFIX, base + ARRAYS_SUFFIX],
            "bytes": frames_path.stat().st_size + arrays_path.stat().st_size}


def _write_table(pq, table, path: Path, row_group_size: int, compression: str) -> None:
    tmp = temporary_name(path)
    try:
        pq.write_table(table, tmp, row_group_size=row_group_size, compression=compression,
                       use_dictionary=["video"])
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- manifest


def row_key(row: dict) -> tuple[str, int]:
    return row["path"], int(row["chunk"])


class Manifest:
    """The rows of manifest.jsonl by chunk; every change rewrites the file atomically."""

    def __init__(self, index_dir: Path, rows: Iterable[dict] = ()) -> None:
        self.index_dir = Path(index_dir)
        self.rows: dict[tuple[str, int], dict] = {row_key(r): r for r in rows}

    @property
    def path(self) -> Path:
        return self.index_dir / MANIFEST

    @classmethod
    def load(cls, index_dir: Path) -> "Manifest":
        path = Path(index_dir) / MANIFEST
        rows = []
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            lines = []
        except OSError as exc:
            raise IndexStoreError(f"{path}: cannot read ({exc.strerror or exc})") from None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                row_key(row)
            except (ValueError, KeyError, TypeError):
                raise IndexStoreError(f"{path}: line {number} is not a manifest row") from None
            rows.append(row)
        return cls(index_dir, rows)

    def record(self, row: dict) -> None:
        self.rows[row_key(row)] = row
        self.save()

    def forget_file(self, path: str) -> None:
        """Drop a file's rows and chunk files (the file changed: it is indexed again)."""
        for key in [k for k in self.rows if k[0] == path]:
            for name in self.rows.pop(key).get("files", []):
                (self.index_dir / name).unlink(missing_ok=True)
        self.save()

    def save(self) -> None:
        self.index_dir.mkdir(parents=True, exist_ok=True)
        ordered = sorted(self.rows.values(), key=row_key)
        text = "".join(json.dumps(row, sort_keys=True) + "\n" for row in ordered)
        atomic_write_bytes(self.path, text.encode("utf-8"))

    def complete(self, row: dict) -> bool:
        """An ok row whose files are all there."""
        return row.get("status") == "ok" and all(
            (self.index_dir / name).is_file() for name in row.get("files", []))

    def ok_rows(self) -> list[dict]:
        return [row for key, row in sorted(self.rows.items()) if self.complete(row)]

    def errors(self) -> list[dict]:
        return [row for key, row in sorted(self.rows.items()) if row.get("status") == "error"]


def same_file(row: dict, chunk: Chunk) -> bool:
    return row.get("size") == chunk.size and row.get("mtime") == chunk.mtime


def chunks_to_do(manifest: Manifest, chunks: list[Chunk]) -> tuple[list[Chunk], int]:
    """--resume: the chunks not complete yet; a file whose size or mtime changed is
    forgotten and indexed again.  Returns (to do, skipped)."""
    changed = {c.path for c in chunks
               if any(k[0] == c.path and not same_file(r, c) for k, r in manifest.rows.items())}
    for path in sorted(changed):
        manifest.forget_file(path)
    todo = [c for c in chunks
            if not (c.key in manifest.rows and manifest.complete(manifest.rows[c.key]))]
    return todo, len(chunks) - len(todo)


# --------------------------------------------------------------------------- layout check


def index_layout(rows: Iterable[dict], index_dir: Path) -> dict | None:
    """The one layout the ok rows of an index were made with (None: no ok row yet)."""
    layouts = {json.dumps(r["layout"], sort_keys=True) for r in rows if r.get("status") == "ok"}
    if len(layouts) > 1:
        raise IndexStoreError(f"{index_dir}: chunks were made with {len(layouts)} different "
                              "models or layouts; index into a new --out")
    return json.loads(layouts.pop()) if layouts else None


def check_layout(recorded: dict | None, layout: dict, index_dir: Path, doing: str) -> None:
    """Embeddings of another model or layout cannot be compared: one clear line."""
    if recorded is None or recorded == layout:
        return
    differ = [k for k in sorted(set(recorded) | set(layout)) if recorded.get(k) != layout.get(k)]
    what = ", ".join(f"{k} {recorded.get(k)!r} (this {doing}: {layout.get(k)!r})"
                     for k in differ)
    raise IndexStoreError(f"{index_dir}: index was built with another model or layout: {what}; "
                          f"{doing} with the index's settings, or index again into a new --out")


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class FrameTable:
    """Every stored frame of an index, one row each, sorted by video then time."""

    embeddings: np.ndarray     # (N, D) float32, unit norm
    video_ids: np.ndarray      # (N,) int32 into `videos`
    frames: np.ndarray         # (N,) int64 frame index in its video
    times: np.ndarray          # (N,) float64 seconds from the video's start
    chunk_ids: np.ndarray      # (N,) int32 into `rows`
    positions: np.ndarray      # (N,) int32 row in its chunk's files
    videos: tuple[str, ...]
    rows: tuple[dict, ...]


def load_frames(index_dir: Path, rows: list[dict]) -> FrameTable:
    """One float32 matrix of every whole-frame embedding, plus where each came from.

    Read from the frames files once, then kept in INDEX_DIR/cache/<key>/ as .npy
    files (memory-mapped by later searches, no parsing or fp16 conversion); the key
    changes with any chunk file, so a stale cache is never read.
    """
    rows = sorted(rows, key=row_key)
    key = _cache_key(index_dir, rows)
    cached = index_dir / CACHE_DIR / key
    try:
        return _read_cache(cached, rows)
    except (OSError, ValueError, KeyError):
        pass
    table = _read_frames_files(index_dir, rows)
    _write_cache(index_dir, key, table)
    return table


def _cache_key(index_dir: Path, rows: list[dict]) -> str:
    parts = []
    for row in rows:
        stat = (index_dir / row["files"][0]).stat()
        parts.append([row["files"][0], stat.st_size, stat.st_mtime_ns])
    return hashlib.sha1(json.dumps(parts).encode("utf-8")).hexdigest()[:20]


def _read_cache(cached: Path, rows: list[dict]) -> FrameTable:
    embeddings = np.load(cached / "embeddings.npy", mmap_mode="r")
    with np.load(cached / "meta.npz") as meta:
        columns = [meta[name] for name in CACHE_COLUMNS]
    return FrameTable(embeddings, *columns, videos=_videos(rows), rows=tuple(rows))


def _write_cache(index_dir: Path, key: str, table: FrameTable) -> None:
    """Best effort (a read-only index is searched without a cache)."""
    cache = index_dir / CACHE_DIR
    tmp = cache / f"{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir(parents=True)
        np.save(tmp / "embeddings.npy", np.ascontiguousarray(table.embeddings))
        np.savez(tmp / "meta.npz", **{name: getattr(table, name) for name in CACHE_COLUMNS})
        for stale in cache.iterdir():
            if stale != tmp:
                shutil.rmtree(stale, ignore_errors=True)
        tmp.rename(cache / key)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _videos(rows: list[dict]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(r["path"] for r in rows))


def _read_frames_files(index_dir: Path, rows: list[dict]) -> FrameTable:
    _pyarrow()
    import pyarrow.parquet as pq

    videos = _videos(rows)
    video_of = {v: i for i, v in enumerate(videos)}
    parts, meta = [], []
    for chunk_id, row in enumerate(rows):
        table = pq.read_table(index_dir / row["files"][0], columns=["frame", "t", "embedding"])
        n = table.num_rows
        if n == 0:
            continue
        column = table.column("embedding").combine_chunks()
        parts.append(column.values.to_numpy(zero_copy_only=False).reshape(n, -1))
        meta.append((np.full(n, video_of[row["path"]], np.int32),
                     table.column("frame").to_numpy(), table.column("t").to_numpy(),
                     np.full(n, chunk_id, np.int32), np.arange(n, dtype=np.int32)))
    if not parts:
        empty = np.zeros(0)
        return FrameTable(np.zeros((0, 0), np.float32), empty.astype(np.int32),
                          empty.astype(np.int64), empty, empty.astype(np.int32),
                          empty.astype(np.int32), videos, tuple(rows))
    embeddings = np.concatenate(parts).astype(np.float32)
    columns = [np.concatenate(c) for c in zip(*meta)]
    return FrameTable(embeddings, *columns, videos=videos, rows=tuple(rows))


def load_arrays(index_dir: Path, row: dict,
                position: int) -> tuple[int, int, dict[str, np.ndarray]]:
    """(frame_w, frame_h, {name: (N, D) fp16}) of one stored frame: one row group read."""
    _pyarrow()
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(index_dir / row["files"][1])
    group, offset = 0, position
    while offset >= parquet.metadata.row_group(group).num_rows:
        offset -= parquet.metadata.row_group(group).num_rows
        group += 1
    table = parquet.read_row_group(group).slice(offset, 1)
    arrays = {}
    for name in table.column_names:
        if name.startswith(ARRAY_PREFIX):
            values = table.column(name).combine_chunks().flatten()   # (N,) fixed lists
            # a writable copy: torch refuses to wrap Arrow's read-only buffers silently
            arrays[name[len(ARRAY_PREFIX):]] = np.array(values.values.to_numpy(
                zero_copy_only=False).reshape(len(values), -1))
    return (int(table.column("frame_w")[0].as_py()), int(table.column("frame_h")[0].as_py()),
            arrays)
