"""Stability of the boxes on generated clips with ground-truth identities: raw vs tracked.

    python tools/evaluate_tracking.py --model models/shapes-clip \\
        --model models/contrastive-96-p16 --json out/tracking.json

The clips of ``tools/clip_suite.py`` (by default: one shape moving, two
classes, two instances of one caption, a shape leaving and re-entering, two
crossing paths) are rendered frame by frame; the detector runs once per clip
in this process, with the gate lowered to ``track.keep_score`` as the app
does while tracking, and the same per-frame detections give both rows:

- ``raw``: the boxes that pass ``detector.gate`` (what ``--no-track`` shows);
- ``tracked``: all of them through :class:`realtime.track.Tracker` with the
  ``track`` settings of ``main.py``'s flags (``--flags "--min-hits 3"``).

Detections are cached per model, clip and gate in the work folder (a cache at
a lower gate serves a higher one, filtered), so trying tracker settings does
not run the detector again; the cache's name also holds a digest of the
detector settings and of the engine's source, so other detector flags or a
changed engine run it afresh instead of scoring stale boxes.  Metrics (objects at least
half inside the frame are ground truth; a box on one that is less is neither
right nor wrong), boxes matched to ground truth of their own caption only:

- CLEAR (TrackEval): matches at IoU >= 0.5, a match kept from the previous
  frame first, then the best remaining pairs; recall, precision, ID switches
  (a ground-truth object matched to another track ID than its last one),
  fragmentations (a matched trajectory interrupted and resumed) and
  MOTA = 1 - (misses + false positives + ID switches) / ground truth;
- Identity (TrackEval): IDF1 = 2 IDTP / (ground truth + boxes), ground-truth
  and track identities matched one to one over the whole clip (Hungarian);
- flicker: on/off toggles per object-second (an object is "on" on a frame
  when a box of its caption covers it at IoU >= 0.3; its first appearance is
  not counted) and centre jitter, the
  median |second difference of the box centre| over the box's size, along
  each object's covered frames.

Raw detections carry no IDs: their ID switches, fragmentations and IDF1 are
not defined (shown as -) and their MOTA has no ID-switch term (MODA).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from realtime.detections import Detections  # noqa: E402
from realtime.engine.boxes import iou_matrix  # noqa: E402
from realtime.track import Tracker  # noqa: E402
from tools.clip_suite import KINDS, Clip, suite  # noqa: E402
from tools.evaluate_clips import VISIBLE, Sums, fresh  # noqa: E402

MATCH_IOU = 0.5        # CLEAR and Identity thresholds (TrackEval's default)
COVER_IOU = 0.3        # "a box covers the object", for flicker and jitter
DEFAULT_KINDS = ("single", "two-classes", "twins", "enter-leave", "overlap")


@dataclass
class Tally(Sums):
    """Sums over clips; :meth:`figures` turns them into the table's numbers."""

    gt: int = 0
    boxes: int = 0
    tp: int = 0
    idsw: int = 0
    frag: int = 0
    idtp: int = 0
    toggles: int = 0
    object_s: float = 0.0
    jitter: list = field(default_factory=list)
    appear: list = field(default_factory=list)   # frames from first in view to first box
    linger: list = field(default_factory=list)   # seconds a box outlives its object's exit
    tracked: bool = True

    def figures(self) -> dict:
        fp, fn = self.boxes - self.tp, self.gt - self.tp
        rate = lambda a, b: a / b if b else float("nan")
        ids = self.tracked
        return {
            "recall_50": rate(self.tp, self.gt),
            "precision_50": rate(self.tp, self.boxes),
            "mota": 1 - rate(fn + fp + (self.idsw if ids else 0), self.gt),
            "idf1": rate(2 * self.idtp, self.gt + self.boxes) if ids else None,
            "id_switches": self.idsw if ids else None,
            "idsw_per_10_s": 10 * rate(self.idsw, self.object_s) if ids else None,
            "fragmentations": self.frag if ids else None,
            "toggles_per_object_s": rate(self.toggles, self.object_s),
            "jitter": float(np.median(self.jitter)) if self.jitter else float("nan"),
            "appear_frames_max": max(self.appear) if self.appear else float("nan"),
            "linger_s_max": max(self.linger) if self.linger else float("nan"),
            "object_s": round(self.object_s, 2), "ground_truth": self.gt,
        }


def score_clip(clip: Clip, frames: Sequence[Detections], tracked: bool) -> Tally:
    """Every metric of one clip; `frames[i]` are the boxes shown on frame i."""
    tally, last_id, runs = Tally(tracked=tracked), {}, {}
    pairs: dict[tuple[int, int], int] = {}   # (gt id, track id) -> frames matched (IDTP)
    covered: dict[int, list] = {}            # gt id -> [(frame, on, centre, size)]
    previous: dict[int, int] = {}            # gt id -> track id matched on the last frame
    excess: list[dict] = []                  # per frame: label -> boxes beyond objects in view
    in_view: list[set] = []                  # per frame: gt ids in view
    labels_of: dict[int, str] = {}           # gt id -> its prompt
    for i, truth in enumerate(clip.truth()):
        shown = frames[i]
        in_view.append({int(truth.identities[k]) for k in range(len(truth.labels))
                        if truth.visible[k] >= VISIBLE})
        excess.append({label: sum(shown.labels[j] == label for j in shown.label_ids)
                       - sum(lab == label and truth.visible[k] >= VISIBLE
                             for k, lab in enumerate(truth.labels))
                       for label in set(shown.labels)})
        labels_of.update({int(truth.identities[k]): truth.labels[k]
                          for k in range(len(truth.labels))})
        gt_rows = [k for k in range(len(truth.labels)) if truth.visible[k] >= VISIBLE]
        keep = _judged_boxes(truth, shown)
        tally.boxes += int(keep.sum())
        tally.gt += len(gt_rows)
        matched = {}
        for label in {truth.labels[k] for k in gt_rows}:
            rows = [k for k in gt_rows if truth.labels[k] == label]
            cols = [c for c in np.flatnonzero(keep) if shown.labels[shown.label_ids[c]] == label]
            iou = iou_matrix(truth.boxes[rows], shown.boxes[cols])
            ids = [int(shown.track_ids[c]) for c in cols] if tracked else [None] * len(cols)
            for r, c in _clear_matches(iou, [int(truth.identities[k]) for k in rows], ids,
                                       previous):
                matched[int(truth.identities[rows[r]])] = (cols[c], ids[c])
            for r, k in enumerate(rows):
                gid = int(truth.identities[k])
                best = int(np.argmax(iou[r])) if len(cols) else -1
                on = best >= 0 and iou[r, best] >= COVER_IOU
                box = shown.boxes[cols[best]] if on else None
                covered.setdefault(gid, []).append((i, on, box))
        tally.tp += len(matched)
        previous = {}
        for gid, (_, tid) in matched.items():
            previous[gid] = tid
            if tracked:
                if gid in last_id and last_id[gid] != tid:
                    tally.idsw += 1
                last_id[gid] = tid
                pairs[gid, tid] = pairs.get((gid, tid), 0) + 1
        for k in gt_rows:
            runs.setdefault(int(truth.identities[k]), []).append(
                int(truth.identities[k]) in matched)
    tally.frag = sum(_fragments(seq) for seq in runs.values()) if tracked else 0
    tally.idtp = _best_identity_matching(pairs) if tracked else 0
    for seq in covered.values():
        tally.object_s += len(seq) / clip.fps
        on = [s[1] for s in seq]
        shown_from = on.index(True) if True in on else len(on)   # appearing is no flicker
        tally.toggles += sum(a != b for a, b in zip(on[shown_from:], on[shown_from + 1:]))
        tally.jitter += _jitter(seq)
        if True in on:
            tally.appear.append(on.index(True))
    tally.linger += _lingering(in_view, excess, labels_of, clip.fps)
    return tally


def _lingering(in_view: list[set], excess: list[dict], labels_of: dict, fps: float) -> list:
    """For each exit of an object from view: seconds its prompt keeps more boxes than
    objects in view (the track coasting on), until it re-enters or the clip ends."""
    out = []
    for gid, label in labels_of.items():
        for i in range(1, len(in_view)):
            if gid in in_view[i - 1] and gid not in in_view[i]:
                frames = 0
                while (i + frames < len(in_view) and gid not in in_view[i + frames]
                       and excess[i + frames].get(label, 0) > 0):
                    frames += 1
                out.append(frames / fps)
    return out


def _judged_boxes(truth, shown: Detections) -> np.ndarray:
    """Boxes that count: not on an object less than half in view (unless also on one in view)."""
    keep = np.ones(len(shown), bool)
    for c in range(len(shown)):
        label = shown.labels[shown.label_ids[c]]
        mine = [k for k, lab in enumerate(truth.labels) if lab == label]
        low = [k for k in mine if truth.visible[k] < VISIBLE]
        high = [k for k in mine if truth.visible[k] >= VISIBLE]
        if low and iou_matrix(truth.boxes[low], shown.boxes[c:c + 1]).max() >= COVER_IOU and (
                not high or iou_matrix(truth.boxes[high], shown.boxes[c:c + 1]).max() < COVER_IOU):
            keep[c] = False
    return keep


def _clear_matches(iou: np.ndarray, gt_ids: list, ids: list, previous: dict) -> list:
    """TrackEval CLEAR's matching: last frame's pairs first when still >= MATCH_IOU,
    then the rest, best IoU first."""
    pairs, used_r, used_c = [], set(), set()
    for r, gid in enumerate(gt_ids):
        if gid in previous and previous[gid] is not None:
            for c, tid in enumerate(ids):
                if tid == previous[gid] and iou[r, c] >= MATCH_IOU and c not in used_c:
                    pairs.append((r, c))
                    used_r.add(r)
                    used_c.add(c)
                    break
    rest = [(iou[r, c], r, c) for r in range(iou.shape[0]) for c in range(iou.shape[1])
            if r not in used_r and c not in used_c and iou[r, c] >= MATCH_IOU]
    for _, r, c in sorted(rest, reverse=True):
        if r not in used_r and c not in used_c:
            pairs.append((r, c))
            used_r.add(r)
            used_c.add(c)
    return pairs


def _fragments(matched: list[bool]) -> int:
    """Times a matched trajectory is interrupted and then resumes."""
    starts = sum(1 for k, m in enumerate(matched) if m and (k == 0 or not matched[k - 1]))
    return max(0, starts - 1)


def _best_identity_matching(pairs: dict) -> int:
    """IDTP: the largest total of frames over a one-to-one gt-id to track-id matching."""
    if not pairs:
        return 0
    gids = sorted({g for g, _ in pairs})
    tids = sorted({t for _, t in pairs})
    gain = np.zeros((len(gids), len(tids)))
    for (g, t), n in pairs.items():
        gain[gids.index(g), tids.index(t)] = n
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError:   # numpy-only installs: greedy, a lower bound
        total, used_r, used_c = 0, set(), set()
        for r, c in sorted(np.ndindex(gain.shape), key=lambda rc: -gain[rc]):
            if r not in used_r and c not in used_c:
                total += gain[r, c]
                used_r.add(r)
                used_c.add(c)
        return int(total)
    rows, cols = linear_sum_assignment(-gain)
    return int(gain[rows, cols].sum())


def _jitter(seq: list) -> list[float]:
    """|second difference of the centre| / box size over runs of three covered frames."""
    out = []
    for (i0, on0, a), (i1, on1, b), (i2, on2, c) in zip(seq, seq[1:], seq[2:]):
        if on0 and on1 and on2 and i2 - i0 == 2:
            centre = lambda box: np.array([box[0] + box[2], box[1] + box[3]]) / 2
            size = float(np.mean([b[2] - b[0], b[3] - b[1]]))
            out.append(float(np.linalg.norm(centre(a) - 2 * centre(b) + centre(c)) / size))
    return out


# --------------------------------------------------------------------------- running


def detect_clip(detector, clip: Clip, cache: Path) -> list[Detections]:
    """The detector's boxes on every frame of the clip (cached in `cache`)."""
    if cache.exists():
        return _load(cache, clip)
    detector.set_prompts(clip.prompts)
    frames = [detector(clip.frame(i).frame, i, i / clip.fps) for i in range(clip.frames)]
    np.savez_compressed(cache, **{f"{i}_{k}": getattr(d, k) for i, d in enumerate(frames)
                                  for k in ("boxes", "scores", "similarities", "label_ids")})
    return frames


def _load(cache: Path, clip: Clip) -> list[Detections]:
    data = np.load(cache)
    return [Detections(clip.prompts, *(data[f"{i}_{k}"] for k in ("boxes", "scores",
                                                                  "similarities",
                                                                  "label_ids")),
                       frame_index=i, timestamp_s=i / clip.fps) for i in range(clip.frames)]


def raw_of(detections: Detections, gate: float) -> Detections:
    keep = detections.scores >= gate
    return Detections(detections.labels, detections.boxes[keep], detections.scores[keep],
                      detections.similarities[keep], detections.label_ids[keep],
                      detections.frame_index, detections.timestamp_s)


def evaluate(model: str, flags: Sequence[str], clips: Sequence[Clip], workdir: Path) -> list:
    from main import build_parser, config_from_args

    config = config_from_args(build_parser().parse_args(["--model", model, *flags]))
    gate = config.detector.gate
    low = min(gate, config.track.keep_score)
    detector = None
    rows, totals = [], {"raw": Tally(tracked=False), "tracked": Tally()}
    start = time.monotonic()
    for clip in clips:
        cache = _cache(workdir, model, clip, low, _detector_digest(config))
        if detector is None and not cache.exists():
            detector = _detector(model, flags, low)
        clip_detector = fresh(detector) if detector is not None else None   # cached: unused
        frames = [raw_of(d, low) for d in detect_clip(clip_detector, clip, cache)]
        tracker = Tracker.from_config(config.track, start_score=gate)
        shown = {"raw": [raw_of(d, gate) for d in frames],
                 "tracked": [tracker.update(d) for d in frames]}
        for run, boxes in shown.items():
            tally = score_clip(clip, boxes, tracked=run == "tracked")
            totals[run].add(tally)
            rows.append({"model": model, "run": run, "clip": clip.name, **tally.figures()})
    for run, tally in totals.items():
        rows.append({"model": model, "run": run, "clip": "all", **tally.figures(),
                     "flags": " ".join(flags), "seconds": round(time.monotonic() - start, 1)})
    return rows


def _cache(workdir: Path, model: str, clip: Clip, gate: float, digest: str) -> Path:
    """The clip's cached detections at `gate`, or at a lower gate (filtered on use)."""
    stem = f"{Path(model).name}-{digest}-{clip.name}-gate"
    lower = [p for p in workdir.glob(f"{stem}*.npz")
             if float(p.stem.removeprefix(stem)) <= gate + 1e-9]
    return max(lower, key=lambda p: float(p.stem.removeprefix(stem)), default=None) or (
        workdir / f"{stem}{gate:.3f}.npz")


def _detector_digest(config) -> str:
    """What makes a cache's detections: the model and detector settings (the gate
    aside: it names the file) and the engine's source."""
    digest = hashlib.sha1(repr((config.model, dataclasses.replace(config.detector, gate=0.0)))
                          .encode())
    for source in sorted((ROOT / "realtime" / "engine").glob("*.py")):
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def _detector(model: str, flags: Sequence[str], gate: float):
    from main import build_parser, config_from_args
    from realtime import Detector, load_model

    config = config_from_args(build_parser().parse_args(["--model", model, *flags]))
    return Detector((), dataclasses.replace(config.detector, gate=gate), load_model(config.model))


COLUMNS = (("recall_50", "recall@0.5", "{:.3f}"), ("precision_50", "precision@0.5", "{:.3f}"),
           ("mota", "MOTA", "{:.3f}"), ("idf1", "IDF1", "{:.3f}"),
           ("id_switches", "ID switches", "{}"), ("idsw_per_10_s", "IDSW / 10 s", "{:.2f}"),
           ("fragmentations", "frag", "{}"),
           ("toggles_per_object_s", "toggles / object-s", "{:.3f}"),
           ("jitter", "jitter", "{:.4f}"),
           ("appear_frames_max", "first box after (frames, max)", "{}"),
           ("linger_s_max", "box after exit (s, max)", "{:.2f}"))


def format_table(rows: Sequence[dict]) -> str:
    lines = ["| model | run | " + " | ".join(c[1] for c in COLUMNS) + " |",
             "| --- | --- |" + " ---: |" * len(COLUMNS)]
    for row in rows:
        if row["clip"] == "all":
            cells = ["-" if row[k] is None else fmt.format(row[k]) for k, _, fmt in COLUMNS]
            lines.append(f"| {Path(row['model']).name} | {row['run']} | " + " | ".join(cells)
                         + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True,
                        help="model directory (repeatable)")
    parser.add_argument("--flags", default="", help="main.py flags for the detector and the "
                        "tracker, e.g. \"--min-hits 3 --smoothing 0.6\"")
    parser.add_argument("--frames", type=int, default=45, help="frames per clip (15 fps)")
    parser.add_argument("--seed", type=int, default=0, help="clip seed")
    parser.add_argument("--kinds", default=",".join(DEFAULT_KINDS),
                        help=f"comma-separated clip kinds (of {', '.join(KINDS)})")
    parser.add_argument("--workdir", default="out/tracking", help="where detections are cached")
    parser.add_argument("--json", help="write every row (per clip and overall) to this file")
    args = parser.parse_args(argv)
    import shlex

    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    if set(kinds) - set(KINDS):
        parser.error(f"--kinds: unknown {sorted(set(kinds) - set(KINDS))}")
    workdir = Path(args.workdir) / f"seed{args.seed}-f{args.frames}"
    workdir.mkdir(parents=True, exist_ok=True)
    clips = suite(args.seed, args.frames, kinds)
    rows = []
    for model in args.model:
        rows += evaluate(model, shlex.split(args.flags), clips, workdir)
        print(format_table([r for r in rows if r["model"] == model]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
