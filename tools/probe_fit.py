"""The crop fit alone, from coarse regions placed off their objects on purpose.

For every object of the suite clips (tools/clip_suite.py) a window-sized
region is centred up to `--offset` windows away from the object's true
centre, the way a coarse window region misses it, and the detector's fitter
finds the box again from it.  Prints how far the fitted centre is from the
true one (a share of the object's size), the log2 size ratio and the share of
boxes with IoU >= 0.5: the fit's own error, apart from the coarse stage's
misses and the gate.

    python tools/probe_fit.py --model models/contrastive-112-p16 --every 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from collections.abc import Sequence

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime.engine.boxes import Boxes, iou_matrix  # noqa: E402
from tools.clip_suite import suite  # noqa: E402
from tools.evaluate_clips import VISIBLE, _detector  # noqa: E402


def probe(model: str, every: int, offset: float, seed: int, frames: int) -> dict:
    detector = _detector(model, ["--no-refine"])
    rng = np.random.default_rng(seed)
    centre_err, size_log2, ious = [], [], []
    for clip in suite(seed, frames):
        detector.set_prompts(clip.prompts)
        for i in range(0, frames, every):
            truth = clip.frame(i)
            found = detector(truth.frame)
            floor = np.median(found.similarity_maps.reshape(len(detector.labels), -1), axis=1)
            window_px = min(truth.frame.shape[:2]) / 2
            pixels = detector.upload(truth.frame)
            for box, label, visible in zip(truth.boxes.astype(float), truth.labels, truth.visible):
                if visible < VISIBLE:
                    continue
                centre = (box[:2] + box[2:]) / 2 + rng.uniform(-offset, offset, 2) * window_px
                region = np.concatenate([centre - window_px / 2, centre + window_px / 2])
                fitted = _fit(detector, pixels, region, detector.labels.index(label), window_px,
                              floor)
                side = np.sqrt((box[2] - box[0]) * (box[3] - box[1]))
                mid = (fitted[:2] + fitted[2:]) / 2
                centre_err.append(np.hypot(*(mid - (box[:2] + box[2:]) / 2)) / side)
                size_log2.append(np.log2(np.sqrt(np.prod(fitted[2:] - fitted[:2])) / side))
                ious.append(iou_matrix(box[None], fitted[None])[0, 0])
    centre_err, size_log2, ious = map(np.array, (centre_err, size_log2, ious))
    return {"objects": len(ious), "centre_error_median": float(np.median(centre_err)),
            "centre_error_p75": float(np.percentile(centre_err, 75)),
            "size_log2_median": float(np.median(size_log2)),
            "size_log2_iqr": float(np.subtract(*np.percentile(size_log2, [75, 25]))),
            "iou_median": float(np.median(ious)), "iou_50": float(np.mean(ious >= 0.5))}


@torch.inference_mode()
def _fit(detector, pixels, region: np.ndarray, label_id: int, window_px: float,
         floor: np.ndarray) -> np.ndarray:
    """One region's fitted box, whatever its probability (gate 0, nothing merged)."""
    one = Boxes(region[None].astype(np.float32), np.ones(1, np.float32), np.zeros(1, np.float32),
                np.array([label_id]))
    out = detector.fitter(pixels, one, window_px, floor, detector._text, len(detector.labels),
                          0.0, 1.0)
    return out.boxes[0].astype(float)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory")
    parser.add_argument("--every", type=int, default=3, help="every n-th frame of each clip")
    parser.add_argument("--offset", type=float, default=0.25,
                        help="largest offset of the region's centre, in windows, on each axis")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frames", type=int, default=45, help="frames per clip")
    args = parser.parse_args(argv)
    if not Path(args.model, "config.json").is_file():
        parser.error(f"--model: no model at {args.model}")
    figures = probe(args.model, args.every, args.offset, args.seed, args.frames)
    print(" ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                   for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
