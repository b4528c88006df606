"""Measure detection quality on generated shape scenes with known ground truth.

    python tools/evaluate_shapes.py                   # all methods, the bundled model
    python tools/evaluate_shapes.py --method windows --frames 200

For every frame, the prompts are the captions present plus two absent ones,
so one run measures both what the detector finds and what it must not draw.
The tests (tests/test_shapes_quality.py) assert floors on these figures; this
script prints the figures themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from realtime.engine.boxes import box_iou  # noqa: E402
from realtime.config import DetectorConfig  # noqa: E402
from realtime.scenes import all_captions, random_scene  # noqa: E402

SHAPES_MODEL = ROOT / "models" / "shapes-clip"
SIZES = ((320, 240), (640, 480))
SHAPE_SIZES = (0.2, 0.4)           # of the short side: objects the default windows frame well


@dataclass(frozen=True)
class Figures:
    frames: int
    present_found: float      # present (frame, prompt) pairs with a box of IoU >= 0.5
    mean_best_iou: float      # mean over present pairs of the best IoU of that prompt's boxes
    centre_hit: float         # present pairs with a box of that prompt around the shape's centre
    absent_clean: float       # absent (frame, prompt) pairs with no box at all
    twins_found: float        # two-instance frames where both instances get their own box
    classify_top1: float      # single-shape frames whose caption ranks first (classify only)
    boxes_on_target: float = float("nan")  # drawn boxes with IoU >= 0.5 to a shape of their
                                           # caption (precision; absent prompts' boxes miss)


def scenes(seed: int, count: int, duplicate: bool = False, n_shapes=(1, 3)):
    """Generated frames (cycling through SIZES) with their ground truth and prompts."""
    rng = np.random.default_rng(seed)
    captions = all_captions()
    for i in range(count):
        width, height = SIZES[i % len(SIZES)]
        n = 2 if duplicate else int(rng.integers(n_shapes[0], n_shapes[1] + 1))
        scene = random_scene(rng, width, height, n, size_range=SHAPE_SIZES, duplicate=duplicate)
        absent = [c for c in rng.permutation(captions) if c not in scene.labels][:2]
        yield scene, list(scene.prompts) + absent


def best_iou(boxes: np.ndarray, truth) -> float:
    return max((box_iou(np.asarray(b, float), np.asarray(truth, float)) for b in boxes),
               default=0.0)


def holds_centre(boxes: np.ndarray, truth) -> bool:
    cx, cy = (truth[0] + truth[2]) / 2, (truth[1] + truth[3]) / 2
    return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes)


def localisation(detector, count: int, seed: int, n_shapes=(1, 3)
                 ) -> tuple[float, float, float, float, float]:
    found, ious, hits, clean, present_pairs, absent_pairs = 0, [], 0, 0, 0, 0
    drawn, on_target = 0, 0
    for scene, prompts in scenes(seed, count, n_shapes=n_shapes):
        detector.set_prompts(prompts)
        result = detector(scene.frame)
        for prompt in prompts:
            boxes = result.for_label(prompt).boxes
            truths = [b for b, label in zip(scene.boxes, scene.labels) if label == prompt]
            drawn += len(boxes)
            on_target += sum(best_iou(truths, box) >= 0.5 for box in boxes)
            if not truths:
                absent_pairs += 1
                clean += len(boxes) == 0
                continue
            for truth in truths:
                present_pairs += 1
                iou = best_iou(boxes, truth)
                ious.append(iou)
                found += iou >= 0.5
                hits += holds_centre(boxes, truth)
    return (found / present_pairs, float(np.mean(ious)), hits / present_pairs,
            clean / absent_pairs, on_target / drawn if drawn else float("nan"))


def twins(detector, count: int, seed: int) -> float:
    ok = 0
    for scene, prompts in scenes(seed + 1, count, duplicate=True):
        detector.set_prompts(prompts)
        boxes = detector(scene.frame).for_label(scene.labels[0]).boxes
        matched = [best_iou(boxes, truth) >= 0.5 for truth in scene.boxes[:2]]
        ok += len(boxes) >= 2 and all(matched)
    return ok / count


def classify_top1(detector, count: int, seed: int) -> float:
    ok = 0
    for scene, prompts in scenes(seed + 2, count, n_shapes=(1, 1)):
        detector.set_prompts(all_captions())
        scores = detector.classify(scene.frame)
        ok += detector.labels[int(np.argmax(scores))] == scene.labels[0]
    return ok / count


def evaluate(model, method: str, frames: int = 60, seed: int = 0,
             config: DetectorConfig | None = None, n_shapes=(1, 3)) -> Figures:
    """Figures of one method on generated frames of `n_shapes` (min, max) shapes."""
    from realtime import Detector

    config = config or DetectorConfig(method=method)
    detector = Detector(("a red circle",), config, model)
    if method == "classify":
        nan = float("nan")
        return Figures(frames, nan, nan, nan, nan, nan, classify_top1(detector, frames, seed))
    found, iou, hit, clean, on_target = localisation(detector, frames, seed, n_shapes)
    return Figures(frames, found, iou, hit, clean,
                   twins(detector, max(10, frames // 3), seed), float("nan"), on_target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(SHAPES_MODEL), help="model id or directory")
    parser.add_argument("--method", action="append", choices=("windows", "dense", "occlusion",
                                                               "classify"),
                        help="method(s) to evaluate (default: all)")
    parser.add_argument("--frames", type=int, default=100, help="frames per figure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--verify", action=argparse.BooleanOptionalAction, default=None,
                        help="force box verification on or off (default: the method's auto)")
    parser.add_argument("--dtype", default="auto",
                        choices=("auto", "float32", "bfloat16", "float16"),
                        help="the model's dtype on the CPU (auto as in main.py)")
    args = parser.parse_args()
    from realtime import ModelConfig, load_model

    model = load_model(ModelConfig(name=args.model, device="cpu", dtype=args.dtype))
    for method in args.method or ("windows", "dense", "occlusion", "classify"):
        config = DetectorConfig(method=method,
                                verify="auto" if args.verify is None else args.verify)
        figures = evaluate(model, method, args.frames, args.seed, config)
        print(json.dumps({"method": method, "dtype": str(model.dtype).removeprefix("torch."),
                          "verify": config.verifies, **asdict(figures)}))


if __name__ == "__main__":
    main()
