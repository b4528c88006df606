"""The two commands, `main.py index` and `main.py search`: checks, progress, exit codes.

Exit codes: 0 done (every chunk ok); 1 runtime failure; 2 input error (before
any work starts: a missing source, an index made with another model or layout,
a missing optional package); 3 some chunks failed (recorded as errors in the
manifest, the others indexed); 130 SIGINT and 143 SIGTERM (what was written is
kept: run again with --resume).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

from ..config import Config, ConfigError, DetectorConfig
from ..engine.model import ModelLoadError
from ..engine.prompts import PromptError, clean_prompts
from ..live.app import SignalStop
from ..live.outputs import OutputError, check_output_path
from ..live.source import SourceError
from . import MissingExtra
from .plan import Chunk, PlanError, expand_sources, plan
from .store import (IndexStoreError, Manifest, check_layout, check_pyarrow, chunks_to_do,
                    index_layout, remove_temporaries)

EXIT_OK, EXIT_FAILURE, EXIT_INPUT, EXIT_PARTIAL, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 2, 3, 130, 143
EXIT_CODES_HELP = ("Exit codes: 0 done, 1 runtime failure, 2 input error, 3 some chunks failed "
                   "(see the manifest), 130 Ctrl+C, 143 SIGTERM.")
INPUT_ERRORS = (ConfigError, PromptError, SourceError, OutputError, ModelLoadError, PlanError,
                IndexStoreError, MissingExtra)


def model_id(name: str) -> str:
    """A local model directory by its absolute path (what the index records and compares);
    a hub id as given."""
    local = Path(name).expanduser()
    return str(local.resolve()) if local.is_dir() else name


def with_model_id(config: Config) -> Config:
    model = dataclasses.replace(config.model, name=model_id(config.model.name))
    return dataclasses.replace(config, model=model)


def index_settings(index_dir: str | Path) -> dict:
    """The settings an index was made with, as config overrides: a search (or a resume)
    starts from them, so that it needs no --model or layout flag to match."""
    rows = Manifest.load(Path(index_dir)).rows.values()
    layout = index_layout(rows, Path(index_dir)) if rows else None
    if layout is None:
        return {}
    fields = {f.name for f in dataclasses.fields(DetectorConfig)}
    return {"model": {"name": layout["model"]},
            "detector": {k: v for k, v in layout.items() if k in fields}}


def _stopped(received: str, what: str) -> int:
    print(f"stopped by {received or 'SIGINT'}: {what}", file=sys.stderr)
    return EXIT_SIGTERM if received == "SIGTERM" else EXIT_SIGINT


def _input_error(exc: Exception) -> int:
    print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
    return EXIT_INPUT


# --------------------------------------------------------------------------- index


def index_job(config: Config, sources: Sequence[str], out_dir: str, resume: bool) -> int:
    """Everything `main.py index` does once its arguments are parsed; the exit code."""
    stop = threading.Event()
    with SignalStop(stop) as signals:
        try:
            job = IndexJob.prepare(with_model_id(config), sources, Path(out_dir), resume, stop)
        except INPUT_ERRORS as exc:
            return _input_error(exc)
        try:
            if stop.is_set():
                return _stopped(signals.received, "before indexing started")
            job.run()
        finally:
            job.close()
    if stop.is_set():
        return _stopped(signals.received, f"{job.summary()}; what was written is kept, run "
                                          "again with --resume to continue")
    print(f"done: {job.summary()}", file=sys.stderr)
    for row in job.failed[:5]:
        print(f"error: {row['path']} chunk {row['chunk']}: {row['error']}", file=sys.stderr)
    return EXIT_PARTIAL if job.failed else EXIT_OK


class IndexJob:
    """One `index` run: the plan, the backend that runs it, the manifest it fills."""

    def __init__(self, config: Config, manifest: Manifest, todo: list[Chunk], skipped: int,
                 backend, stop: threading.Event) -> None:
        self.config, self.manifest, self.todo, self.skipped = config, manifest, todo, skipped
        self.backend, self.stop = backend, stop
        self.ok: list[dict] = []
        self.failed: list[dict] = []
        self.elapsed_s = 0.0

    @classmethod
    def prepare(cls, config: Config, sources: Sequence[str], out: Path, resume: bool,
                stop: threading.Event) -> "IndexJob":
        archive = config.archive
        check_pyarrow()
        paths = expand_sources(sources)
        manifest = _open_index(out, resume, archive)
        from tqdm import tqdm

        probing = tqdm(paths, desc="probing", unit="file", file=sys.stderr, leave=False,
                       disable=len(paths) < 20)   # thousands of files take a while
        chunks = plan(probing, archive.sample_fps, archive.chunk_s)
        backend = make_backend(config, out, stop)
        try:
            check_layout(index_layout(manifest.rows.values(), out), backend.layout(), out,
                         "index")
        except BaseException:
            backend.close()
            raise
        todo, skipped = chunks_to_do(manifest, chunks)
        return cls(config, manifest, todo, skipped, backend, stop)

    def run(self) -> None:
        from tqdm import tqdm

        files = {c.path for c in self.todo}
        left = {path: sum(c.path == path for c in self.todo) for path in files}
        bar = tqdm(total=sum(c.expected_frames for c in self.todo) or None, unit="frame",
                   desc=f"files 0/{len(files)}", file=sys.stderr, dynamic_ncols=True,
                   mininterval=0.5, leave=False)
        started = time.perf_counter()

        def record(row: dict) -> None:
            self.manifest.record(row)
            (self.ok if row["status"] == "ok" else self.failed).append(row)
            left[row["path"]] -= 1
            bar.set_description(f"files {sum(n == 0 for n in left.values())}/{len(files)}")
            bar.set_postfix(stored=sum(r["frames"] for r in self.ok), failed=len(self.failed))

        try:
            self.backend.run(self.todo, self.config.archive.max_attempts, record, bar.update)
        finally:
            self.elapsed_s = time.perf_counter() - started
            bar.close()
        if self.ok and not self.stop.is_set():
            from .store import load_frames

            load_frames(self.manifest.index_dir, self.manifest.ok_rows())   # searches' cache

    def summary(self) -> str:
        stored = sum(r["frames"] for r in self.ok)
        rate = stored / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return (f"{len(self.ok)} chunks indexed ({stored} frames stored, {rate:.1f} frames/s), "
                f"{self.skipped} already complete, {len(self.failed)} failed; index in "
                f"{self.manifest.index_dir}")

    def close(self) -> None:
        self.backend.close()


def _open_index(out: Path, resume: bool, archive) -> Manifest:
    if out.exists() and not out.is_dir():
        raise IndexStoreError(f"--out {out}: is a file, not a folder")
    manifest = Manifest.load(out)
    if manifest.rows and not resume:
        raise IndexStoreError(f"--out {out}: already holds an index; pass --resume to "
                              "continue it, or choose another --out")
    for row in manifest.rows.values():
        if (row.get("sample_fps"), row.get("chunk_s")) != (archive.sample_fps, archive.chunk_s):
            raise IndexStoreError(f"--out {out}: was indexed with --sample-fps "
                                  f"{row.get('sample_fps')} --chunk-s {row.get('chunk_s')}; "
                                  "resume it with the same values")
    try:
        (out / "chunks").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndexStoreError(f"--out {out}: cannot create ({exc.strerror or exc})") from None
    remove_temporaries(out)
    return manifest


def make_backend(config: Config, out: Path, stop: threading.Event):
    from .index import IndexSettings

    settings = IndexSettings(config.model, config.detector, str(out.resolve()))
    if config.archive.ray:
        from .ray_backend import RayBackend

        return RayBackend(settings, config.archive, stop)
    return InProcess(settings, stop)


class InProcess:
    """The embedded default: one indexer in this process, chunk after chunk."""

    def __init__(self, settings, stop: threading.Event) -> None:
        from transformers.utils import logging as hf_logging

        from .index import ChunkIndexer

        hf_logging.disable_progress_bar()
        self.indexer = ChunkIndexer(settings)
        self.indexer.stop = stop

    def layout(self) -> dict:
        return self.indexer.layout()

    def run(self, chunks: list[Chunk], max_attempts: int, on_row, on_frames) -> None:
        from .index import Interrupted

        self.indexer.on_frame = on_frames
        for chunk in chunks:
            for attempt in range(1, max_attempts + 1):
                try:
                    row = self.indexer(chunk, attempt)
                except Interrupted:
                    return
                if row["status"] == "ok":
                    break
            on_row(row)

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- search


def search_job(config: Config, index_dir: str, prompts: Sequence[str], json_path: str = "",
               report_path: str = "") -> int:
    """Everything `main.py search` does once its arguments are parsed; the exit code."""
    from .search import search

    index = Path(index_dir)
    try:
        prompts = clean_prompts(prompts)
        check_pyarrow()
        for path, flag in ((json_path, "--json"), (report_path, "--report")):
            if path:
                check_output_path(path, flag)
        rows = _searchable_rows(index)
        detector = _search_detector(with_model_id(config))
        check_layout(index_layout(rows, index), detector.layout(), index, "search")
        from .store import load_frames

        table = load_frames(index, rows)
    except INPUT_ERRORS as exc:
        return _input_error(exc)
    started = time.perf_counter()
    results = search(table, detector, prompts, config.archive, index)
    elapsed_ms = (time.perf_counter() - started) * 1000.0
    print_table(results, sys.stdout)
    if json_path:
        write_json(results, Path(json_path))
    if report_path:
        from .report import render

        videos = _video_info(rows)
        Path(report_path).write_text(render(results, videos, f"Search of {index}"),
                                     encoding="utf-8")
    print(f"searched {len(table.frames)} frames of {len(table.videos)} videos in "
          f"{elapsed_ms:.0f} ms", file=sys.stderr)
    return EXIT_OK


def _searchable_rows(index: Path) -> list[dict]:
    if not (index / "manifest.jsonl").is_file():
        raise IndexStoreError(f"--index {index}: not an index (no manifest.jsonl); make one "
                              "with main.py index --source ... --out DIR")
    manifest = Manifest.load(index)
    rows = manifest.ok_rows()
    if not rows:
        raise IndexStoreError(f"--index {index}: holds no indexed chunk yet "
                              f"({len(manifest.errors())} failed)")
    return rows


def _search_detector(config: Config):
    from transformers.utils import logging as hf_logging

    from ..engine.detector import Detector
    from ..engine.model import load_model

    hf_logging.disable_progress_bar()
    # Stored embeddings have no pixels to fit boxes on: patch maps outline them where
    # the index stored any, with no box check to run.
    return Detector((), dataclasses.replace(config.detector, fit=False), load_model(config.model))


def _video_info(rows: list[dict]) -> dict[str, tuple[str, float]]:
    videos: dict[str, tuple[str, float]] = {}
    for row in rows:
        kind, end = videos.get(row["path"], (row["kind"], 0.0))
        videos[row["path"]] = (kind, max(end, float(row.get("end_s", 0.0))))
    return videos


def write_json(results: dict, path: Path) -> None:
    """One segment a line, best first per prompt; nothing for a prompt that is nowhere."""
    with open(path, "w", encoding="utf-8") as f:
        for segments in results.values():
            for segment in segments:
                f.write(json.dumps(segment.to_record(), ensure_ascii=False) + "\n")


def print_table(results: dict, out) -> None:
    """The ranked table: per prompt, its segments best first."""
    header = f"{'#':>3}  {'video':<28} {'start-end s':>15} {'best t':>8} {'score':>6}  box"
    for prompt, segments in results.items():
        print(f"{prompt}: {len(segments) or 'no'} segment{'s' * (len(segments) != 1)}",
              file=out)
        if not segments:
            continue
        print(header, file=out)
        for rank, s in enumerate(segments, 1):
            box = "-" if s.box is None else (f"[{', '.join(f'{v:.0f}' for v in s.box)}] "
                                             f"{s.box_score:.2f}")
            span = f"{s.start_s:.1f}-{s.end_s:.1f}"
            print(f"{rank:>3}  {Path(s.video).name[:28]:<28} {span:>15} {s.best_t:>8.2f} "
                  f"{s.score:>6.2f}  {box}", file=out)
