"""Archive test helpers: generated videos where shapes appear and leave at known frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import main
from conftest import ROOT, write_frames
from realtime.scenes import Actor, ScriptedScene

SHAPES_MODEL = ROOT / "models" / "shapes-clip"
FPS = 10.0
SIZE = (320, 240)


def scripted_video(path: Path, actors, frames: int, fps: float = FPS, seed: int = 1) -> Path:
    """A video of a ScriptedScene: each actor is in view from its first waypoint's frame
    to its last one's."""
    scene = ScriptedScene(*SIZE, actors, seed=seed)
    return write_frames(path, [scene.frame(i).frame for i in range(frames)], fps)


def still(identity: int, kind: str, color: str, first: int, last: int,
          at=(160.0, 120.0), size: float = 90.0) -> Actor:
    """A shape in view from frame `first` to frame `last`, drifting a little."""
    (x, y) = at
    return Actor(identity, kind, color, size, ((first, x - 8, y), (last, x + 8, y + 4)))


def run_main(*argv: str) -> int:
    return main.main([str(a) for a in argv])


def manifest_rows(index: Path) -> list[dict]:
    return [json.loads(line) for line in (index / "manifest.jsonl").read_text().splitlines()]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def short_video(tmp_path_factory) -> Path:
    """3 s at 10 fps, a red circle throughout: plumbing for the tiny model."""
    folder = tmp_path_factory.mktemp("short")
    return scripted_video(folder / "short.mp4", [still(1, "circle", "red", 0, 29)], 30)
