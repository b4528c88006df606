"""Whether a model's patch map outlines objects: measured once per model, at load.

The refine pass outlines each window region with the model's patch map.  That
gives tight boxes on a model whose patch tokens localise (the bundled shapes
model was trained for it) and wrong ones on a model whose do not (public CLIPs
were trained on whole images only); the crop fit (realtime.engine.fit) needs
nothing of the patch tokens.  Which of the two a model should use is not
guessed from its name or its patch size but measured: a few generated scenes
of coloured shapes with known boxes (realtime.scenes, fixed seed) are run
through the detector's own settings both ways, and the patch map outlines
boxes only if its boxes match the truth better (mean best IoU per object,
0 for a missed one) than the crop fit's.  The rule has no constant to tune.

The verdict is kept per loaded model and settings, and on disk (a JSON file
per model files, settings and device) where the front ends ask for it: on a
2-core CPU a random ViT-B/32 took 14 s for the check (more for a model that
finds the scenes' shapes and fits them), so only its first run pays.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
import functools
import hashlib
import json
import os
from pathlib import Path
import weakref

import numpy as np

from .boxes import iou_matrix

# Changing what the check measures makes old cached verdicts stale.
CHECK_VERSION = 1
SHAPES_PER_SCENE = (1, 2, 3, 2, 2, 3)
CHECK_SCENES = len(SHAPES_PER_SCENE)   # enough: the two kinds differ by 0.2-0.4 IoU (docs/method.md)
SCENE_W, SCENE_H, SCENE_SEED = 640, 480, 1234

_memo: "weakref.WeakKeyDictionary[object, dict[str, PatchCheck]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class PatchCheck:
    """The two ways' mean best IoU against the generated scenes' truth."""

    patch_map_iou: float
    fit_iou: float
    scenes: int
    cached: bool = False

    @property
    def trusted(self) -> bool:
        """Whether the patch map outlines boxes (else they are fitted by crops)."""
        return self.patch_map_iou > self.fit_iou

    def line(self) -> str:
        way = "outlined by the patch map" if self.trusted else "fitted by crops"
        where = ", cached" if self.cached else ""
        return (f"patch-map check: boxes {way} (mean IoU on {self.scenes} generated scenes: "
                f"patch map {self.patch_map_iou:.2f}, crop fit {self.fit_iou:.2f}{where})")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/realtime-clip/patch-check (~/.cache when unset)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "realtime-clip" / "patch-check"


def check_patch_map(detector, cache_dir: Path | None = None) -> PatchCheck:
    """The detector's verdict: from this process's memo, the cache dir, or measured."""
    key = cache_key(detector.model, detector.config)
    memo = _memo.setdefault(detector.model, {})
    if key in memo:
        return memo[key]
    found = _read(cache_dir, key) if cache_dir is not None else None
    if found is None:
        found = measure(detector)
        if cache_dir is not None:
            _write(cache_dir, key, found)
    memo[key] = found
    return found


def measure(detector) -> PatchCheck:
    """Run the check scenes through `detector` with the patch map outlining its
    boxes, then with the crop fit.  It leaves the last scene's prompts set."""
    outlined, fitted = [], []
    saved = detector.outlines
    try:
        for scene in check_scenes():
            detector.set_prompts(scene.prompts)
            for outlines, ious in ((True, outlined), (False, fitted)):
                detector.set_outlines(outlines)
                ious.extend(best_ious(detector(scene.frame), scene.boxes, scene.labels))
    finally:
        detector.set_outlines(saved)
    return PatchCheck(round(float(np.mean(outlined)), 4), round(float(np.mean(fitted)), 4),
                      len(check_scenes()))


@functools.lru_cache(maxsize=1)
def check_scenes() -> tuple:
    """The generated scenes: 1-3 shapes of 15-40 % of the short side (SHAPES_PER_SCENE),
    the fourth with two of one caption, on the scenes' background styles."""
    from ..scenes import random_scene

    rng = np.random.default_rng(SCENE_SEED)
    return tuple(random_scene(rng, SCENE_W, SCENE_H, n, size_range=(0.15, 0.4),
                              duplicate=i == 3)
                 for i, n in enumerate(SHAPES_PER_SCENE))


def best_ious(found, boxes: np.ndarray, labels) -> list[float]:
    """Per true object, the best IoU of a detected box of its prompt (0: none)."""
    out = []
    for box, label in zip(boxes.astype(float), labels):
        mine = found.for_label(label).boxes.astype(float)
        out.append(float(iou_matrix(box[None], mine)[0].max()) if len(mine) else 0.0)
    return out


def cache_key(model, config) -> str:
    """A digest of what the verdict depends on: the model (its files, where it is a
    local directory), its device and dtype, the detector settings and this check."""
    name = str(getattr(model, "name", type(model).__name__))
    files = []
    local = Path(name).expanduser()
    if local.is_dir():
        files = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns)
                       for p in local.iterdir() if p.is_file())
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "refine"}
    blob = json.dumps([CHECK_VERSION, name, files, str(model.device.type), str(model.dtype),
                       settings], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _read(cache_dir: Path, key: str) -> PatchCheck | None:
    try:
        data = json.loads((Path(cache_dir) / f"{key}.json").read_text())
        return PatchCheck(float(data["patch_map_iou"]), float(data["fit_iou"]),
                          int(data["scenes"]), cached=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None     # no verdict yet, or an unreadable one: measure again


def _write(cache_dir: Path, key: str, check: PatchCheck) -> None:
    data = {"patch_map_iou": check.patch_map_iou, "fit_iou": check.fit_iou,
            "scenes": check.scenes}
    try:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        temp = Path(cache_dir) / f".{key}.{os.getpid()}.tmp"
        temp.write_text(json.dumps(data))
        temp.replace(Path(cache_dir) / f"{key}.json")    # whole, even with two runs at once
    except OSError:
        pass            # a read-only home: the check runs again next time, nothing is lost
