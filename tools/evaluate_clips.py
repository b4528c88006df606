"""Detection quality on generated video clips with ground truth, through the real app.

    python tools/evaluate_clips.py --model models/contrastive-96-p16
    python tools/evaluate_clips.py --model A --model B --run "default=" \\
        --run "fine=--tile-px 40 --no-refine" --json out/clips.json

Each clip of ``tools/clip_suite.py`` (single shape, two classes, two instances
of one caption, entering/leaving, overlapping, 1280x720) is written as an mp4,
then ``main.py --source CLIP --headless --detections OUT.jsonl`` runs on it
with the clip's present prompts plus two absent ones and the run's extra
flags, and the JSON Lines are scored against the ground truth:

- recall@0.5 / recall@0.3: objects (at least half inside the frame) matched
  one-to-one by a box of their caption at that IoU;
- precision@0.3: drawn boxes matched to an object of their caption (boxes on
  objects less than half in view are neither right nor wrong);
- mean best IoU: per object, the best IoU of a box of its caption (0 if none);
- absent frames: frames on which a box of an absent prompt is drawn;
- duplicates: extra boxes of an object's caption on it (IoU >= 0.3), per object;
- score AUC: whether the percentage tells a good box from a bad one: the
  chance that a box on an object of its caption (IoU >= 0.5) scores above a
  wrong one (IoU < 0.3 with every object of its caption, absent prompts
  included), ties counting half; 0.5 = the score says nothing; with the
  median score of each kind.

``--in-process`` runs the detector directly on the decoded frames instead of
main.py (same frames, same scoring, no tracking): quicker, for exploring
settings, and it reports the detector's own time per frame.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from realtime.engine.boxes import greedy_pairs, iou_matrix  # noqa: E402
from tools.clip_suite import KINDS, Clip, suite, write_clip  # noqa: E402

VISIBLE = 0.5      # objects less than half inside the frame are neither required nor wrong


class Sums:
    """A dataclass of running totals: :meth:`add` adds another one field by field
    (numbers and lists; flags, such as a bool, are left as they are)."""

    def add(self, other) -> None:
        for f in fields(self):
            mine = getattr(self, f.name)
            if not isinstance(mine, bool):
                setattr(self, f.name, mine + getattr(other, f.name))


@dataclass
class Counts(Sums):
    """Sums over frames; :meth:`figures` turns them into rates."""

    frames: int = 0
    objects: int = 0
    found_50: int = 0
    found_30: int = 0
    boxes: int = 0
    boxes_ignored: int = 0
    boxes_right_30: int = 0
    iou_sum: float = 0.0
    absent_frames: int = 0
    duplicates: int = 0
    ms_sum: float = 0.0
    ms_frames: int = 0
    scores_good: list = field(default_factory=list)    # boxes at IoU >= 0.5 on their object
    scores_bad: list = field(default_factory=list)     # boxes at IoU < 0.3 with every one

    def figures(self) -> dict[str, float]:
        rate = lambda a, b: a / b if b else float("nan")
        judged = self.boxes - self.boxes_ignored
        return {"recall_50": rate(self.found_50, self.objects),
                "recall_30": rate(self.found_30, self.objects),
                "precision_30": rate(self.boxes_right_30, judged),
                "mean_best_iou": rate(self.iou_sum, self.objects),
                "absent_frames": rate(self.absent_frames, self.frames),
                "duplicates_per_object": rate(self.duplicates, self.objects),
                "ms_per_frame": rate(self.ms_sum, self.ms_frames),
                "score_auc": score_auc(self.scores_good, self.scores_bad),
                "score_good_median": _median(self.scores_good),
                "score_bad_median": _median(self.scores_bad),
                "objects": self.objects, "frames": self.frames}


def _median(values: Sequence[float]) -> float:
    return float(np.median(values)) if len(values) else float("nan")


def score_auc(good: Sequence[float], bad: Sequence[float]) -> float:
    """P(a good box scores above a bad one), ties half (Mann-Whitney); nan if either is empty."""
    if not len(good) or not len(bad):
        return float("nan")
    good, bad = np.asarray(good, float), np.sort(np.asarray(bad, float))
    below = np.searchsorted(bad, good, "left")
    ties = np.searchsorted(bad, good, "right") - below
    return float((below + ties / 2).sum() / (len(good) * len(bad)))


def score_frame(truth, detections: Sequence[dict], absent: Iterable[str]) -> Counts:
    """Counts of one frame: `truth` a ScriptedFrame, `detections` its JSON Lines boxes."""
    counts = Counts(frames=1)
    absent = set(absent)
    counts.absent_frames = int(any(d["label"] in absent for d in detections))
    labels = set(truth.labels) | {d["label"] for d in detections}
    for label in labels:
        boxes = np.array([d["box"] for d in detections if d["label"] == label], float).reshape(-1, 4)
        mine = [i for i, l in enumerate(truth.labels) if l == label]
        counted = [i for i in mine if truth.visible[i] >= VISIBLE]
        ignored = [i for i in mine if truth.visible[i] < VISIBLE]
        counts.boxes += len(boxes)
        on_ignored = iou_matrix(truth.boxes[ignored], boxes).max(axis=0) >= 0.3 \
            if ignored and len(boxes) else np.zeros(len(boxes), bool)
        iou = iou_matrix(truth.boxes[counted], boxes)          # (counted, boxes)
        best = iou.max(axis=0) if counted and len(boxes) else np.zeros(len(boxes))
        counts.boxes_ignored += int((on_ignored & (best < 0.3)).sum())
        scores = [d["score"] for d in detections if d["label"] == label]
        counts.scores_good += [p for p, b in zip(scores, best) if b >= 0.5]
        counts.scores_bad += [p for p, b, o in zip(scores, best, on_ignored) if b < 0.3 and not o]
        if not counted:
            continue
        counts.objects += len(counted)
        counts.found_50 += len(greedy_pairs(iou, 0.5))
        right = len(greedy_pairs(iou, 0.3))
        counts.found_30 += right
        counts.boxes_right_30 += right
        if len(boxes):
            counts.iou_sum += float(iou.max(axis=1).sum())
            counts.duplicates += int(np.clip((iou >= 0.3).sum(axis=1) - 1, 0, None).sum())
    return counts


def score_records(clip: Clip, records: dict[int, dict]) -> Counts:
    """Counts of a whole clip from its JSON Lines records by frame (missing = no boxes)."""
    total = Counts()
    for i, truth in enumerate(clip.truth()):
        record = records.get(i, {"detections": []})
        total.add(score_frame(truth, record["detections"], clip.absent))
        if "ms" in record:
            total.ms_sum += record["ms"]
            total.ms_frames += 1
    return total


def read_jsonl(path: Path) -> dict[int, dict]:
    records = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if "detections" in record:
            records[int(record["frame"])] = record
    return records


def run_app(clip: Clip, video: Path, model: str, extra: Sequence[str], out: Path) -> dict[int, dict]:
    """main.py on the clip's video; its JSON Lines records by frame."""
    command = [sys.executable, str(ROOT / "main.py"), "--source", str(video), "--model", model,
               "--headless", "--detections", str(out), *extra]
    for prompt in clip.prompts:
        command += ["--prompt", prompt]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"main.py failed on {video.name} ({done.returncode}): "
                           f"{done.stderr.strip().splitlines()[-1:]}")
    return read_jsonl(out)


def run_in_process(clip: Clip, video: Path, detector) -> dict[int, dict]:
    """The detector on the decoded frames of the clip's video (what main.py would read)."""
    import cv2

    detector.set_prompts(clip.prompts)
    capture, records, index = cv2.VideoCapture(str(video)), {}, 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        detections = detector(frame, index, index / clip.fps)
        records[index] = detections.to_record() | {"ms": detections.inference_ms}
        index += 1
    capture.release()
    return records


def parse_run(text: str) -> tuple[str, list[str]]:
    """'name=--flag value ...' -> (name, flags)."""
    name, _, flags = text.partition("=")
    return name.strip() or "default", shlex.split(flags)


def evaluate(model: str, runs: Sequence[tuple[str, list[str]]], clips: Sequence[Clip],
             workdir: Path, in_process: bool = False) -> list[dict]:
    """One result row per (run, clip) and one per run over all clips."""
    rows = []
    videos = {clip.name: _video(clip, workdir) for clip in clips}
    for name, extra in runs:
        total, start = Counts(), time.monotonic()
        detector = _detector(model, extra) if in_process else None
        for clip in clips:
            out = workdir / f"{Path(model).name}-{name}-{clip.name}.jsonl"
            records = (run_in_process(clip, videos[clip.name], fresh(detector)) if in_process
                       else run_app(clip, videos[clip.name], model, extra, out))
            counts = score_records(clip, records)
            total.add(counts)
            rows.append({"model": model, "run": name, "clip": clip.name, **counts.figures()})
        rows.append({"model": model, "run": name, "clip": "all", **total.figures(),
                     "seconds": round(time.monotonic() - start, 1), "flags": " ".join(extra)})
    return rows


def _video(clip: Clip, workdir: Path) -> Path:
    """The clip's mp4, written once per work folder (clips are deterministic)."""
    path = workdir / f"{clip.name}.mp4"
    return path if path.exists() else write_clip(clip, path)


def fresh(detector):
    """A new Detector on the same loaded model and settings, as main.py builds one
    for each video (the box check's verdict is kept per loaded model)."""
    from realtime import Detector

    return Detector((), detector.config, detector.model)


def _detector(model: str, extra: Sequence[str]):
    """A Detector configured as main.py would be by the same flags."""
    from main import build_parser, config_from_args
    from realtime import Detector, load_model

    config = config_from_args(build_parser().parse_args(["--model", model, *extra]))
    return Detector((), config.detector, load_model(config.model))


def format_table(rows: Sequence[dict]) -> str:
    keys = ("recall_50", "recall_30", "precision_30", "mean_best_iou", "absent_frames",
            "duplicates_per_object", "score_auc", "ms_per_frame")
    lines = ["| model | run | " + " | ".join(keys) + " |", "| --- | --- |" + " ---: |" * len(keys)]
    for row in rows:
        if row["clip"] != "all":
            continue
        cells = [f"{row[k]:.2f}" if k != "ms_per_frame" else f"{row[k]:.0f}" for k in keys]
        lines.append(f"| {Path(row['model']).name} | {row['run']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="model directory (repeatable)")
    parser.add_argument("--run", action="append", metavar="NAME=FLAGS",
                        help="a named set of extra main.py flags (repeatable; default: the defaults)")
    parser.add_argument("--frames", type=int, default=45, help="frames per clip (15 fps)")
    parser.add_argument("--seed", type=int, default=0, help="clip seed (paths, captions, backgrounds)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated clip kinds")
    parser.add_argument("--in-process", action="store_true",
                        help="run the detector directly instead of main.py (no tracking)")
    parser.add_argument("--workdir", default="out/clips", help="where videos and JSON Lines go")
    parser.add_argument("--json", help="write every row (per clip and overall) to this file")
    args = parser.parse_args(argv)
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"--kinds: unknown {sorted(unknown)} (allowed: {', '.join(KINDS)})")
    workdir = Path(args.workdir) / f"seed{args.seed}-f{args.frames}"
    workdir.mkdir(parents=True, exist_ok=True)
    clips = suite(args.seed, args.frames, kinds)
    runs = [parse_run(r) for r in (args.run or ["default="])]
    rows = []
    for model in args.model:
        rows += evaluate(model, runs, clips, workdir, args.in_process)
        print(format_table([r for r in rows if r["model"] == model]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
