"""The tracking stage's cost per frame: 20 boxes of 4 prompts, moving with noise.

    python tools/bench_track.py [--boxes 20] [--frames 2000]

Prints the median and 99th-percentile milliseconds of one Tracker.update.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from realtime.detections import Detections  # noqa: E402
from realtime.track import Tracker  # noqa: E402


def frames(boxes: int, count: int, fps: float = 30.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    start = rng.uniform(0, 1200, (boxes, 2))
    speed = rng.uniform(-60, 60, (boxes, 2))          # px/s
    labels = ("a", "b", "c", "d")
    for i in range(count):
        xy = start + speed * i / fps + rng.normal(0, 2, (boxes, 2))
        yield Detections(labels, np.hstack([xy, xy + 60]).astype(np.float32),
                         np.full(boxes, 0.8, np.float32), np.full(boxes, 0.3, np.float32),
                         np.arange(boxes) % 4, frame_index=i, timestamp_s=i / fps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20)
    parser.add_argument("--frames", type=int, default=2000)
    args = parser.parse_args(argv)
    tracker, times = Tracker(), []
    for detections in frames(args.boxes, args.frames):
        start = time.perf_counter()
        tracker.update(detections)
        times.append((time.perf_counter() - start) * 1000)
    times = np.array(times[50:])   # after the tracks exist
    print(f"{args.boxes} boxes: median {np.median(times):.3f} ms, "
          f"p99 {np.percentile(times, 99):.3f} ms per frame")
    return 0


if __name__ == "__main__":
    sys.exit(main())
