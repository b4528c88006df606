"""Benchmarks of the archive commands (docs/benchmarks.md, "Archive index and search").

    python tools/bench_archive.py index --model models/shapes-clip --workers 1,2
    python tools/bench_archive.py search --frames 10000,100000

`index` writes a generated video (realtime.scenes.MovingScene), indexes it
in-process and on a local Ray with each number of workers, and reports stored
frames per second of the indexing phase (model loading and Ray start-up
excluded, reported apart), the whole wall time and the index bytes per stored
frame.  `search` synthesises indexes of N frames (random unit whole-frame
embeddings with planted runs that match the prompt; the arrays of one real
frame under a small layout, so the files stay small) and times a search:
loading the embeddings (the first search reads the Parquet files and writes
the cache; later ones memory-map it), the search itself (prompt encoding,
scoring, segments, boxes of the 20 best segments) and, within it, the scoring
matrix product alone.  Without --model the random ViT-B/32 of realtime.bench is used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime.config import ArchiveConfig, Config, DetectorConfig, ModelConfig  # noqa: E402


def default_model() -> str:
    from realtime.bench import RANDOM_CLIP_DIR, build_random_clip

    return str(build_random_clip(Path.home() / ".cache" / "realtime-bench" / RANDOM_CLIP_DIR))


def write_scene_video(path: Path, seconds: float, fps: float, size: tuple[int, int]) -> Path:
    from realtime.bench import write_video
    from realtime.scenes import MovingScene

    scene = MovingScene(*size, n_shapes=3, seed=0)
    return write_video([scene.frame(i).frame for i in range(int(seconds * fps))], path, fps)


def time_index(config: Config, video: Path, out: Path) -> dict:
    from realtime.archive.jobs import IndexJob

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    job = IndexJob.prepare(config, [str(video)], out, False, threading.Event())
    ready = time.perf_counter()
    try:
        job.run()
    finally:
        job.close()
    done = time.perf_counter()
    frames = sum(r["frames"] for r in job.ok)
    return {"chunks": len(job.ok), "failed": len(job.failed), "frames": frames,
            "setup_s": round(ready - started, 2), "index_s": round(done - ready, 2),
            "frames_per_s": round(frames / (done - ready), 3),
            "bytes_per_frame": round(sum(r["bytes"] for r in job.ok) / max(1, frames))}


def bench_index(args) -> dict:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.split("x"))
    video = write_scene_video(out / "scene.mp4", args.seconds, args.fps, size)
    base = Config(model=ModelConfig(name=args.model, dtype=args.dtype),
                  archive=ArchiveConfig(sample_fps=args.sample_fps, chunk_s=args.chunk_s))
    from realtime.archive.jobs import with_model_id

    base = with_model_id(base)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    name = f"in-process, {torch.get_num_threads()} torch threads"
    rows = {name: time_index(base, video, out / "index-local")}
    print(name, rows[name], file=sys.stderr)
    import ray

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    try:
        for workers in args.workers:
            archive = dataclasses.replace(base.archive, ray="local", workers=workers,
                                          worker_cpus=args.worker_cpus)
            name = f"ray {workers} worker{'s' * (workers > 1)} x {args.worker_cpus} cpu"
            rows[name] = time_index(dataclasses.replace(base, archive=archive), video,
                                    out / f"index-ray{workers}")
            print(name, rows[name], file=sys.stderr)
    finally:
        ray.shutdown()
    return {"video": f"{size[0]}x{size[1]}, {args.seconds} s at {args.fps} fps",
            "sample_fps": args.sample_fps, "chunk_s": args.chunk_s, "model": args.model,
            "rows": rows}


# --------------------------------------------------------------------------- search


# A small layout keeps the synthetic arrays files small; the gate is low because a
# random model's text embeddings are all alike (the planted runs still stand out).
SMALL_LAYOUT = DetectorConfig(tiles_per_side=3, refine=False, verify=False, gate=0.2)


def synthesise(index: Path, detector, frames: int, prompt: str, per_chunk: int = 2000,
               seed: int = 0) -> None:
    """An index of `frames` frames: random unit embeddings, 1 % of frames in runs of 10
    that match `prompt`, the arrays of one real frame (its box is what it is)."""
    from realtime.archive.plan import Chunk
    from realtime.archive.store import ChunkFrames, Manifest, chunk_base, write_chunk
    from realtime.scenes import MovingScene

    rng = np.random.default_rng(seed)
    encoded = detector.encode(MovingScene(640, 360, 3, seed=0).frame(0).frame)
    arrays = {k: v.half().cpu().numpy() for k, v in encoded.arrays.items()}
    texts = detector.bank.with_background([prompt]).float().cpu().numpy()
    # planted frames: the prompt's component orthogonal to every background prompt
    basis, _ = np.linalg.qr(texts[1:].T)
    text = texts[0] - basis @ (basis.T @ texts[0])
    text /= np.linalg.norm(text)
    manifest = Manifest(index)
    for c, start in enumerate(range(0, frames, per_chunk)):
        n = min(per_chunk, frames - start)
        emb = rng.standard_normal((n, text.shape[0])).astype(np.float32)
        for run in range(0, n, 1000):               # 10 matching frames every 1000
            emb[run + 500:run + 510] = text * 8 + emb[run + 500:run + 510] * 0.05
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        data = ChunkFrames()
        for i in range(n):
            data.add(i * 15, i * 0.5, (encoded.frame_w, encoded.frame_h), emb[i], arrays)
        chunk = Chunk(f"/synthetic/video{c:03d}.mp4", 0, 0.0, "video", 0, 0, None, 30.0, 2.0,
                      600.0)
        written = write_chunk(index, chunk_base(chunk), chunk.path, data, {})
        manifest.rows[chunk.key] = {**chunk.to_dict(), **written, "status": "ok", "frames": n,
                                    "end_s": n * 0.5, "layout": detector.layout()}
    manifest.save()


def bench_search(args) -> dict:
    from realtime.archive.search import frame_scores, search
    from realtime.archive.store import Manifest, load_frames
    from realtime.engine.detector import Detector
    from realtime.engine.model import load_model

    detector = Detector((), SMALL_LAYOUT, load_model(ModelConfig(name=args.model,
                                                                 dtype=args.dtype)))
    prompt, results = "a red circle", {}
    for frames in args.frames:
        index = Path(args.out) / f"synthetic-{frames}"
        shutil.rmtree(index, ignore_errors=True)
        synthesise(index, detector, frames, prompt)
        rows = Manifest.load(index).ok_rows()
        t0 = time.perf_counter()
        load_frames(index, rows)            # the first search: Parquet read, cache written
        first_load_ms = (time.perf_counter() - t0) * 1000.0
        samples: dict[str, list[float]] = {"load_ms": [], "score_ms": [], "search_ms": [],
                                           "total_ms": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            table = load_frames(index, rows)
            t1 = time.perf_counter()
            # boxes for the 20 best segments, kept whatever the detector says there
            found = search(table, detector, [prompt], ArchiveConfig(top=20, confirm=False),
                           index)
            t2 = time.perf_counter()
            text = detector.bank.with_background([prompt]).float().cpu().numpy()
            frame_scores(table.embeddings, text, detector.model.logit_scale)   # part of search
            t3 = time.perf_counter()
            for key, value in zip(samples, (t1 - t0, t3 - t2, t2 - t1, t2 - t0)):
                samples[key].append(value * 1000.0)
        size = sum(p.stat().st_size for p in index.rglob("*.frames.parquet"))
        results[frames] = {**{k: round(statistics.median(v), 1) for k, v in samples.items()},
                           "first_load_ms": round(first_load_ms, 1),
                           "segments": len(found[prompt]), "frames_files_mb": round(size / 1e6, 1),
                           "dim": int(table.embeddings.shape[1])}
        print(frames, results[frames], file=sys.stderr)
        if not args.keep:
            shutil.rmtree(index, ignore_errors=True)
    return {"model": args.model, "repeats": args.repeats, "rows": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("index", "search"))
    parser.add_argument("--model", default="", help="default: the random ViT-B/32")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", default="out/bench-archive")
    parser.add_argument("--json", default="")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", default="640x360")
    parser.add_argument("--sample-fps", type=float, default=1.0)
    parser.add_argument("--chunk-s", type=float, default=10.0)
    parser.add_argument("--workers", type=lambda s: [int(v) for v in s.split(",")],
                        default=[1, 2])
    parser.add_argument("--worker-cpus", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the in-process run (default: torch's)")
    parser.add_argument("--frames", type=lambda s: [int(v) for v in s.split(",")],
                        default=[10000, 100000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the synthetic indexes")
    args = parser.parse_args(argv)
    args.model = args.model or default_model()
    result = bench_index(args) if args.what == "index" else bench_search(args)
    result.update(date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  command=" ".join(sys.argv), cpus=os.cpu_count(),
                  load_average=[round(v, 1) for v in os.getloadavg()])
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
