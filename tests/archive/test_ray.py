"""The Ray path on ray.init(num_cpus=2): the same index as in-process, failing chunks
retried then recorded, dead workers replaced (one Ray session for all of them)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from archive_helpers import manifest_rows, run_main, short_video  # noqa: F401  (fixture)
from realtime.archive.store import Manifest, load_arrays, load_frames

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def ray_session():
    """One Ray for every Ray test; the commands use it, as any process where Ray is
    already initialised (they neither start nor stop it)."""
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


def index(video, out, model, *extra) -> int:
    return run_main("index", "--source", video, "--out", out, "--model", model,
                    "--chunk-s", 1, "--dtype", "float32", *extra)


def test_ray_gives_the_same_index_as_in_process(ray_session, short_video, tmp_path,
                                                tiny_model_dir):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert index(short_video, local, tiny_model_dir) == 0
    assert index(short_video, remote, tiny_model_dir, "--ray", "local", "--workers", 2) == 0
    a, b = Manifest.load(local).ok_rows(), Manifest.load(remote).ok_rows()
    assert len(a) == len(b) == 3
    assert len({r["worker"] for r in b}) == 2 and all(r["worker"] != a[0]["worker"] for r in b)
    ta, tb = load_frames(local, a), load_frames(remote, b)
    np.testing.assert_array_equal(ta.frames, tb.frames)
    np.testing.assert_array_equal(ta.times, tb.times)
    np.testing.assert_allclose(ta.embeddings, tb.embeddings, atol=2e-3)
    for i in range(len(ta.frames)):
        wa, ha, xa = load_arrays(local, a[ta.chunk_ids[i]], int(ta.positions[i]))
        wb, hb, xb = load_arrays(remote, b[tb.chunk_ids[i]], int(tb.positions[i]))
        assert (wa, ha) == (wb, hb) and set(xa) == set(xb)
        for name in xa:
            np.testing.assert_allclose(xa[name].astype(np.float32), xb[name].astype(np.float32),
                                       atol=2e-3)
    for key in ("layout", "frames", "start_s", "end_s", "files"):
        assert [r[key] for r in a] == [r[key] for r in b]


def test_on_ray_a_corrupt_file_is_one_error_after_its_retries_and_exit_3(
        ray_session, short_video, tmp_path, tiny_model_dir):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "good.mp4").write_bytes(short_video.read_bytes())
    (videos / "broken.mp4").write_bytes(os.urandom(5000))
    out = tmp_path / "idx"
    assert index(videos, out, tiny_model_dir, "--ray", "local", "--max-attempts", 3) == 3
    rows = manifest_rows(out)
    assert [(Path(r["path"]).name, r["status"], r["attempts"]) for r in rows] == [
        ("broken.mp4", "error", 3), ("good.mp4", "ok", 1), ("good.mp4", "ok", 1),
        ("good.mp4", "ok", 1)]


def test_a_worker_that_dies_is_replaced_and_its_chunk_retried(ray_session, short_video,
                                                              tmp_path, tiny_model_dir):
    from realtime.archive.index import ChunkIndexer, IndexSettings
    from realtime.archive.plan import plan_file
    from realtime.archive.ray_backend import RayBackend
    from realtime.config import ArchiveConfig, DetectorConfig, ModelConfig

    marker = tmp_path / "crashed-once"

    class CrashingIndexer(ChunkIndexer):
        """Kills its process (like a decoder crash) on chunk 1's first attempt, and on
        every attempt at chunk 2."""

        def __call__(self, chunk, attempt=1):
            if chunk["chunk"] == 1 and not marker.exists():
                marker.touch()
                os._exit(1)
            if chunk["chunk"] == 2:
                os._exit(1)
            return super().__call__(chunk, attempt)

    out = tmp_path / "idx"
    (out / "chunks").mkdir(parents=True)
    settings = IndexSettings(ModelConfig(name=str(tiny_model_dir), dtype="float32"),
                             DetectorConfig(), str(out))
    backend = RayBackend(settings, ArchiveConfig(ray="local", workers=2), threading.Event(),
                         indexer_class=CrashingIndexer)
    rows = []
    try:
        backend.run(plan_file(short_video, 2.0, 1.0), 2, rows.append, lambda n: None)
    finally:
        backend.close()
    outcome = {r["chunk"]: (r["status"], r["attempts"]) for r in rows}
    assert outcome == {0: ("ok", 1), 1: ("ok", 2), 2: ("error", 2)}
    assert "worker died" in next(r["error"] for r in rows if r["chunk"] == 2)
