"""The clip evaluator's scoring: one-to-one matching, absent prompts, partly visible objects."""

import numpy as np

from realtime.scenes import ScriptedFrame
from tools import clip_suite, evaluate_clips
from tools.evaluate_clips import score_frame


def truth(boxes, labels, visible=None):
    boxes = np.asarray(boxes, np.int32).reshape(-1, 4)
    return ScriptedFrame(np.zeros((480, 640, 3), np.uint8), boxes, tuple(labels),
                         np.arange(len(boxes)), np.asarray(visible or [1.0] * len(boxes), np.float32))


def box(label, b, score=0.9):
    return {"label": label, "box": list(b), "score": score}


def test_a_perfect_box_counts_once_and_a_duplicate_is_counted_as_such():
    t = truth([[100, 100, 200, 200]], ["a red circle"])
    counts = score_frame(t, [box("a red circle", (100, 100, 200, 200)),
                             box("a red circle", (110, 100, 200, 200))], absent=())
    figures = counts.figures()
    assert figures["recall_50"] == 1.0 and figures["mean_best_iou"] == 1.0
    assert figures["precision_30"] == 0.5          # the second box matches nothing one-to-one
    assert figures["duplicates_per_object"] == 1.0


def test_window_sized_box_fails_iou_half_and_absent_prompt_flags_the_frame():
    t = truth([[100, 100, 160, 160]], ["a red circle"])
    counts = score_frame(t, [box("a red circle", (60, 60, 220, 220)),
                             box("a blue star", (300, 300, 350, 350))], absent=("a blue star",))
    figures = counts.figures()
    assert figures["recall_50"] == 0.0 and figures["recall_30"] == 0.0
    assert figures["absent_frames"] == 1.0 and figures["precision_30"] == 0.0


def test_score_auc_ranks_good_boxes_against_wrong_ones_absent_prompts_included():
    t = truth([[100, 100, 200, 200], [300, 100, 400, 200]], ["a red circle"] * 2)
    counts = score_frame(t, [box("a red circle", (100, 100, 200, 200), 0.9),
                             box("a red circle", (300, 100, 390, 200), 0.6),   # good, lower
                             box("a red circle", (500, 300, 600, 400), 0.7),   # on nothing
                             box("a blue star", (0, 0, 50, 50), 0.5),          # absent prompt
                             box("a red circle", (300, 100, 440, 260), 0.8)],  # IoU 0.45: unjudged
                         absent=("a blue star",))
    assert sorted(counts.scores_good) == [0.6, 0.9] and sorted(counts.scores_bad) == [0.5, 0.7]
    figures = counts.figures()
    assert figures["score_auc"] == 0.75              # 0.9 beats both, 0.6 beats 0.5 only
    assert (figures["score_good_median"], figures["score_bad_median"]) == (0.75, 0.6)
    assert evaluate_clips.score_auc([0.5], [0.5]) == 0.5
    assert np.isnan(evaluate_clips.score_auc([0.5], []))


def test_objects_mostly_outside_the_frame_are_neither_required_nor_wrong():
    t = truth([[0, 100, 30, 200]], ["a red circle"], visible=[0.3])
    assert score_frame(t, [], absent=()).figures()["objects"] == 0
    counts = score_frame(t, [box("a red circle", (0, 100, 30, 200))], absent=())
    assert counts.boxes == 1 and counts.boxes_ignored == 1


def test_the_suite_has_every_clip_kind_with_absent_prompts_that_are_really_absent():
    clips = clip_suite.suite(seed=3, frames=12)
    assert [c.name for c in clips] == list(clip_suite.KINDS)
    for clip in clips:
        assert len(clip.absent) == 2 and not set(clip.absent) & set(clip.present)
        seen = {label for frame in clip.truth() for label in frame.labels}
        assert seen == set(clip.present)
    twins = next(c for c in clips if c.name == "twins").frame(0)
    assert len(twins.labels) == 3 and twins.labels[0] == twins.labels[1]


def test_records_score_the_same_as_the_frames_they_came_from(tmp_path):
    clip = clip_suite.make_clip("single", seed=1, frames=6)
    perfect = {i: {"frame": i, "detections": [box(l, b.tolist()) for l, b in zip(f.labels, f.boxes)]}
               for i, f in enumerate(clip.truth())}
    figures = evaluate_clips.score_records(clip, perfect).figures()
    assert figures["recall_50"] == 1.0 and figures["precision_30"] == 1.0
    assert evaluate_clips.score_records(clip, {}).figures()["recall_30"] == 0.0
