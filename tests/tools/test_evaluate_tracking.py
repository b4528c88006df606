"""The tracking evaluator's metrics on hand-made results: perfect, swapped, flickering."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.detections import Detections
from tools import evaluate_tracking as ev
from tools.clip_suite import make_clip


def from_truth(clip, ids=lambda i, gid: gid, keep=lambda i, gid: True, shift=lambda i: 0.0):
    """Detections drawn from the ground truth: track IDs, dropped frames and shifts chosen."""
    out = []
    for i, truth in enumerate(clip.truth()):
        rows = [k for k, gid in enumerate(truth.identities) if keep(i, int(gid))]
        boxes = truth.boxes[rows].astype(np.float32) + shift(i)
        n = len(rows)
        out.append(Detections(
            clip.prompts, boxes, np.ones(n, np.float32), np.zeros(n, np.float32),
            np.array([clip.prompts.index(truth.labels[k]) for k in rows], np.int64),
            frame_index=i, timestamp_s=i / clip.fps,
            track_ids=np.array([ids(i, int(truth.identities[k])) for k in rows], np.int64),
            states=np.array(["confirmed"] * n), velocities=np.zeros((n, 4), np.float32)))
    return out


@pytest.fixture(scope="module")
def twins():
    return make_clip("twins", seed=0, frames=12)


def test_a_perfect_result_scores_perfectly(twins):
    figures = ev.score_clip(twins, from_truth(twins), tracked=True).figures()
    assert figures["recall_50"] == figures["precision_50"] == figures["mota"] == 1.0
    assert figures["idf1"] == 1.0 and figures["id_switches"] == 0
    assert figures["fragmentations"] == 0 and figures["toggles_per_object_s"] == 0


def test_swapped_ids_count_as_switches_and_lower_idf1(twins):
    swap = lambda i, gid: {1: 2, 2: 1}.get(gid, gid) if i >= 6 else gid
    figures = ev.score_clip(twins, from_truth(twins, ids=swap), tracked=True).figures()
    assert figures["id_switches"] == 2 and figures["recall_50"] == 1.0
    assert figures["mota"] == pytest.approx(1 - 2 / figures["ground_truth"])
    assert figures["idf1"] < 0.8


def test_a_box_that_flickers_toggles_and_fragments(twins):
    keep = lambda i, gid: not (gid == 3 and i in (4, 8))     # off twice, on again twice
    figures = ev.score_clip(twins, from_truth(twins, keep=keep), tracked=True).figures()
    assert figures["fragmentations"] == 2
    assert figures["toggles_per_object_s"] == pytest.approx(4 / figures["object_s"])


def test_jitter_is_the_second_difference_of_the_centre_over_the_size(twins):
    wobble = lambda i: 4.0 * (-1) ** i                      # +-4 px every other frame
    still = ev.score_clip(twins, from_truth(twins), tracked=True).figures()["jitter"]
    shaky = ev.score_clip(twins, from_truth(twins, shift=wobble), tracked=True).figures()
    assert shaky["jitter"] > still + 0.05


def test_raw_rows_have_no_identity_metrics(twins):
    figures = ev.score_clip(twins, from_truth(twins), tracked=False).figures()
    assert figures["idf1"] is None and figures["id_switches"] is None
    assert figures["mota"] == 1.0


def test_latency_to_the_first_box_and_time_a_box_outlives_its_object():
    clip = make_clip("enter-leave", seed=0, frames=45)
    seen = [{int(g) for g, v in zip(t.identities, t.visible) if v >= ev.VISIBLE}
            for t in clip.truth()]
    exits = [i for i in range(1, len(seen)) if seen[i - 1] - seen[i]]
    assert exits, "the clip has an object leaving the view"
    gid, exit_frame = next(iter(seen[exits[0] - 1] - seen[exits[0]])), exits[0]
    first = min(i for i, s in enumerate(seen) if gid in s)
    late = lambda i, g: g in seen[i] and (g != gid or i >= first + 2)
    figures = ev.score_clip(clip, from_truth(clip, keep=late), tracked=True).figures()
    assert figures["appear_frames_max"] == 2 and figures["linger_s_max"] == 0
    lingering = lambda i, g: g in seen[i] or (g == gid and exit_frame <= i < exit_frame + 2)
    figures = ev.score_clip(clip, from_truth(clip, keep=lingering), tracked=True).figures()
    assert figures["linger_s_max"] == pytest.approx(2 / clip.fps)   # boxes exist while it is partly in view


def test_cached_detections_are_not_reused_under_other_detector_settings(tmp_path):
    from main import build_parser, config_from_args

    def digest(*flags):
        return ev._detector_digest(config_from_args(build_parser().parse_args(
            ["--model", "models/shapes-clip", *flags])))

    assert digest() == digest("--min-hits", "3")          # tracker settings share the cache
    assert digest("--gate", "0.4") == digest()             # the gate is in the file's name
    assert digest("--tile-px", "40") != digest()
    assert digest("--fit-mode", "zoom") != digest()
    clip = make_clip("single", seed=0, frames=2)
    first = ev._cache(tmp_path, "models/shapes-clip", clip, 0.5, digest())
    first.write_bytes(b"")
    assert ev._cache(tmp_path, "models/shapes-clip", clip, 0.5, digest()) == first
    assert ev._cache(tmp_path, "models/shapes-clip", clip, 0.5, digest("--tile-px", "40")) != first
