"""The on-disk format: Parquet round trip by array name, atomic writes, the manifest,
resume decisions and the model/layout check (pyarrow, no model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from realtime.archive import store
from realtime.archive.plan import Chunk
from realtime.archive.store import (ChunkFrames, IndexStoreError, Manifest, check_layout,
                                    chunk_base, chunks_to_do, index_layout, load_arrays,
                                    load_frames, write_chunk)

LAYOUT = {"model": "m", "method": "windows", "tile_px": "auto"}


def chunk(path="/videos/a.mp4", index=0, size=10, mtime=1.0) -> Chunk:
    return Chunk(path, size, mtime, "video", index, index * 20, (index + 1) * 20, 10.0, 2.0, 2.0)


def frames(n=11, dim=8, names=("windows", "anything_new"), seed=0) -> ChunkFrames:
    rng = np.random.default_rng(seed)
    data = ChunkFrames()
    for i in range(n):
        arrays = {name: rng.standard_normal((3 + k, dim)) for k, name in enumerate(names)}
        data.add(i * 5, i * 0.5, (320, 240), rng.standard_normal(dim), arrays)
    return data


def ok_row(c: Chunk, written: dict) -> dict:
    return {**c.to_dict(), **written, "status": "ok", "frames": 11, "layout": LAYOUT}


def test_every_array_round_trips_by_name_in_fp16(tmp_path):
    c, data = chunk(), frames()
    written = write_chunk(tmp_path, chunk_base(c), c.path, data, {"layout": LAYOUT})
    table = load_frames(tmp_path, [ok_row(c, written)])
    assert table.embeddings.dtype == np.float32 and table.embeddings.shape == (11, 8)
    np.testing.assert_array_equal(table.embeddings, np.stack(data.embeddings).astype(np.float32))
    assert table.frames.tolist() == data.frames and table.times.tolist() == data.times
    for position in (0, 7, 8, 10):   # across the arrays file's row groups
        w, h, arrays = load_arrays(tmp_path, ok_row(c, written), position)
        assert (w, h) == (320, 240) and set(arrays) == {"windows", "anything_new"}
        for name in arrays:
            np.testing.assert_array_equal(arrays[name], data.arrays[name][position])
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_a_write_that_fails_leaves_no_file_that_looks_whole(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    real = pq.write_table

    def half_then_fail(table, where, **kw):
        real(table.slice(0, 1), where, **kw)     # a partial file on the temporary name
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_then_fail)
    c = chunk()
    with pytest.raises(OSError):
        write_chunk(tmp_path, chunk_base(c), c.path, frames(), {})
    assert not list(tmp_path.rglob("*.parquet")) and not list(tmp_path.rglob("*.tmp-*"))


def test_the_manifest_keeps_one_row_per_chunk_rewritten_whole(tmp_path):
    manifest = Manifest(tmp_path)
    a0, a1 = chunk(index=0), chunk(index=1)
    manifest.record({**a0.to_dict(), "status": "error", "error": "x", "attempts": 3})
    manifest.record({**a1.to_dict(), "status": "ok", "files": []})
    manifest.record({**a0.to_dict(), "status": "ok", "files": []})
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["status"] for line in lines] == ["ok", "ok"]
    assert Manifest.load(tmp_path).rows == manifest.rows
    (tmp_path / "manifest.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(IndexStoreError, match="line 2 is not a manifest row"):
        Manifest.load(tmp_path)


def test_resume_skips_complete_chunks_and_redoes_missing_and_changed_ones(tmp_path):
    manifest = Manifest(tmp_path)
    a = [chunk(index=i) for i in range(3)]
    b = chunk(path="/videos/b.mp4")
    for c in a + [b]:
        manifest.record(ok_row(c, write_chunk(tmp_path, chunk_base(c), c.path, frames(2), {})))
    (tmp_path / manifest.rows[a[1].key]["files"][0]).unlink()           # a deleted file
    todo, skipped = chunks_to_do(manifest, a + [b])
    assert todo == [a[1]] and skipped == 3
    changed = chunk(path="/videos/b.mp4", mtime=2.0)                     # b was re-recorded
    old_files = manifest.rows[b.key]["files"]
    todo, skipped = chunks_to_do(manifest, a + [changed])
    assert todo == [a[1], changed] and skipped == 2
    assert not any((tmp_path / name).exists() for name in old_files)
    assert b.key not in Manifest.load(tmp_path).rows


def test_another_model_or_layout_is_refused_with_what_differs(tmp_path):
    rows = [{"status": "ok", "layout": LAYOUT}, {"status": "error", "layout": {"model": "x"}}]
    assert index_layout(rows, tmp_path) == LAYOUT
    check_layout(LAYOUT, dict(LAYOUT), tmp_path, "search")
    with pytest.raises(IndexStoreError, match=r"model 'm' \(this search: 'other'\)"):
        check_layout(LAYOUT, {**LAYOUT, "model": "other"}, tmp_path, "search")
    with pytest.raises(IndexStoreError, match="tile_px"):
        check_layout(LAYOUT, {**LAYOUT, "tile_px": 80}, tmp_path, "index")
    with pytest.raises(IndexStoreError, match="2 different"):
        index_layout(rows + [{"status": "ok", "layout": {"model": "y"}}], tmp_path)


def test_temporaries_of_an_interrupted_job_are_removed(tmp_path):
    (tmp_path / "chunks").mkdir()
    stray = tmp_path / "chunks" / "a.frames.parquet.tmp-1-abc"
    stray.write_bytes(b"half")
    assert store.remove_temporaries(tmp_path) == 1 and not stray.exists()


def test_searches_read_a_cache_of_the_embeddings_that_follows_the_chunk_files(tmp_path):
    c = chunk()
    row = ok_row(c, write_chunk(tmp_path, chunk_base(c), c.path, frames(), {}))
    first = load_frames(tmp_path, [row])
    (entry,) = (tmp_path / "cache").iterdir()
    again = load_frames(tmp_path, [row])
    assert isinstance(again.embeddings, np.memmap)          # read from the cache
    np.testing.assert_array_equal(again.embeddings, first.embeddings)
    np.testing.assert_array_equal(again.times, first.times)
    row = ok_row(c, write_chunk(tmp_path, chunk_base(c), c.path, frames(seed=1), {}))
    changed = load_frames(tmp_path, [row])                  # the chunk was written again
    assert not isinstance(changed.embeddings, np.memmap)
    assert not np.array_equal(changed.embeddings, first.embeddings)
    assert [p.name for p in (tmp_path / "cache").iterdir()] != [entry.name]
