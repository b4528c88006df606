"""The Ray path: the driver plans, actors index.

Each actor holds one model, loaded once, and indexes whole chunks: it decodes
its own chunk from the file (shared storage), so frames never travel through
the object store - only the chunk's description goes out and its manifest row
comes back.  The driver writes the manifest as rows arrive, so an interrupted
driver loses nothing that was finished.

Faults: a chunk whose indexing raised comes back as an error row; an actor
that died (a decoder crash, out of memory, a lost node) is replaced by a new
one.  Either way the chunk is tried again, on the next free actor, up to
``archive.max_attempts`` times, then recorded as an error; the other chunks
go on.

``--ray local`` starts Ray on this machine with its CPUs and GPUs; ``auto`` or
an address joins a running cluster; inside ``ray job submit`` (or any process
where Ray is already initialised) the existing session is used.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading
import time
from collections import deque
from pathlib import Path

from ..config import ArchiveConfig
from . import require
from .index import ChunkIndexer, IndexSettings, error_row, error_text
from .plan import Chunk

ROOT = Path(__file__).resolve().parents[2]
WAIT_S = 0.5             # how often the driver looks at the stop flag while chunks run


def init_ray(ray, address: str) -> None:
    """Start or join Ray, quietly (no dashboard, no worker logs on the driver).

    ray.init replaces the driver's SIGTERM handler with sys.exit; the job's own
    (stop after the chunk in hand, exit 143) is put back.
    """
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    if address == "local":
        import torch

        ray.init(num_cpus=os.cpu_count() or 1, num_gpus=torch.cuda.device_count(), **quiet)
    else:
        ray.init(address=address, **quiet)
    if main_thread and previous is not None:
        signal.signal(signal.SIGTERM, previous)


class IndexActor:
    """Body of a Ray actor: one ChunkIndexer (its model loaded once)."""

    def __init__(self, settings: IndexSettings, indexer_class=ChunkIndexer) -> None:
        self.indexer = indexer_class(settings)

    def layout(self) -> dict:
        return self.indexer.layout()

    def index(self, chunk: dict, attempt: int) -> dict:
        return self.indexer(chunk, attempt)


class RayBackend:
    """Chunks through a pool of IndexActors, with bounded retries."""

    def __init__(self, settings: IndexSettings, archive: ArchiveConfig, stop: threading.Event,
                 indexer_class=ChunkIndexer) -> None:
        self.ray = require("ray", "--ray")
        self.started = not self.ray.is_initialized()
        if self.started:
            init_ray(self.ray, archive.ray)
        self.stop, self.archive = stop, archive
        self.indexer_class = indexer_class
        self.settings, self.options, self.size = self._pool_shape(settings, archive)
        self.actors: list = []
        try:
            self.actors.append(self._new_actor())
            self._layout = self._get(self.actors[0].layout.remote())
        except BaseException:
            self.close()
            raise

    def _pool_shape(self, settings: IndexSettings, archive: ArchiveConfig):
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            options, size = {"num_gpus": 1, "num_cpus": 1}, archive.workers or gpus
        else:
            cpus = int(resources.get("CPU", 1))
            options = {"num_cpus": archive.worker_cpus}
            size = archive.workers or max(1, cpus // archive.worker_cpus)
            settings = dataclasses.replace(settings, threads=archive.worker_cpus)
        # Workers import this package from where the driver has it (ray job submit
        # --working-dir ships it instead; see docs/archive.md).
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        options["runtime_env"] = {"env_vars": {"PYTHONPATH": path}}
        return settings, options, size

    def _new_actor(self):
        remote = self.ray.remote(IndexActor).options(max_restarts=0, max_task_retries=0,
                                                     **self.options)
        return remote.remote(self.settings, self.indexer_class)

    def _get(self, ref):
        """ray.get, with an exception raised inside an actor re-raised as itself
        (a model that does not load is an input error, not a Ray traceback)."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None

    def layout(self) -> dict:
        return self._layout

    def run(self, chunks: list[Chunk], max_attempts: int, on_row, on_frames) -> None:
        ray = self.ray
        while len(self.actors) < min(self.size, len(chunks)):
            self.actors.append(self._new_actor())
        queue = deque((chunk, 1) for chunk in chunks)
        idle, pending = list(self.actors), {}
        while (queue or pending) and not self.stop.is_set():
            while idle and queue:
                actor, (chunk, attempt) = idle.pop(0), queue.popleft()
                pending[actor.index.remote(chunk.to_dict(), attempt)] = (actor, chunk, attempt)
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=WAIT_S)
            for ref in ready:
                actor, chunk, attempt = pending.pop(ref)
                row, actor = self._outcome(ref, actor, chunk, attempt)
                idle.append(actor)
                if row["status"] == "error" and attempt < max_attempts:
                    queue.append((chunk, attempt + 1))   # next free actor, maybe another
                    continue
                on_frames(chunk.expected_frames)
                on_row(row)

    def _outcome(self, ref, actor, chunk: Chunk, attempt: int):
        """The chunk's row, and the actor to use next (a new one if this one died)."""
        started = time.perf_counter()
        try:
            return self.ray.get(ref), actor
        except self.ray.exceptions.RayActorError as exc:
            message = f"worker died: {error_text(exc)}"
            self.actors.remove(actor)
            self.ray.kill(actor)
            actor = self._new_actor()
            self.actors.append(actor)
        except self.ray.exceptions.RayError as exc:
            message = error_text(getattr(exc, "cause", None) or exc)
        return error_row(chunk, attempt, message, self._layout, started), actor

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:   # already gone
                pass
        self.actors = []
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
