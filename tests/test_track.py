"""The tracker on hand-made detections, in the style of supervision's tracker tests:
IDs kept on static and moving boxes, hysteresis on hits, time and score, prompts
never mixed, reset, prediction along the velocity."""

from __future__ import annotations

import numpy as np
import pytest

from realtime.config import ConfigError, TrackConfig, config_from_dict
from realtime.detections import Detections
from realtime.track import COASTING, CONFIRMED, Tracker, advance

FPS = 10.0


def dets(boxes, t_s, labels=("a cat",), label_ids=None, scores=None) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return Detections(
        labels=tuple(labels), boxes=boxes,
        scores=np.full(n, 0.9, np.float32) if scores is None else np.asarray(scores, np.float32),
        similarities=np.full(n, 0.3, np.float32),
        label_ids=np.zeros(n, np.int64) if label_ids is None else np.asarray(label_ids, np.int64),
        frame_index=round(t_s * FPS), timestamp_s=t_s)


TWO = [[10, 10, 50, 50], [100, 100, 160, 160]]


def run(tracker, frames):
    """Feed (boxes, ...) per frame at FPS; the tracked output of each frame."""
    return [tracker.update(dets(*f, t_s=i / FPS) if isinstance(f, tuple) else
                           dets(f, i / FPS)) for i, f in enumerate(frames)]


def test_two_static_boxes_keep_ids_1_and_2():
    out = run(Tracker(min_hits=1), [TWO] * 5)
    for frame in out:
        assert frame.track_ids.tolist() == [1, 2]
        assert list(frame.states) == [CONFIRMED, CONFIRMED]
        np.testing.assert_allclose(frame.boxes, TWO, atol=1e-4)


def test_shifted_boxes_keep_their_ids_and_gain_a_velocity():
    frames = [[[10 + 8 * i, 10, 50 + 8 * i, 50], [100, 100 + 5 * i, 160, 160 + 5 * i]]
              for i in range(25)]
    out = run(Tracker(min_hits=1, smoothing=0.5), frames)
    assert all(frame.track_ids.tolist() == [1, 2] for frame in out)
    # 8 px a frame at 10 frames/s is 80 px/s along x; 5 px a frame is 50 px/s along y
    # (the velocity is the first displacement at the second match, then filtered)
    np.testing.assert_allclose(out[-1].velocities[0], [80, 0, 80, 0], atol=1.0)
    np.testing.assert_allclose(out[-1].velocities[1], [0, 50, 0, 50], atol=1.0)
    np.testing.assert_allclose(out[-1].boxes, frames[-1], atol=1.0)   # no lag when steady


def test_a_new_object_is_shown_after_min_hits_frames_in_a_row():
    out = run(Tracker(min_hits=3), [TWO[:1]] * 5)
    assert [len(frame) for frame in out] == [0, 0, 1, 1, 1]
    assert out[2].track_ids.tolist() == [1]


def test_a_one_frame_false_positive_is_never_shown_and_uses_no_id_in_view():
    frames = [TWO[:1], TWO, TWO[:1], TWO[:1], TWO[:1]]   # the second box flashes once
    out = run(Tracker(min_hits=2), frames)
    assert [frame.track_ids.tolist() for frame in out] == [[], [1], [1], [1], [1]]


def test_an_interrupted_start_starts_over():
    frames = [TWO[:1], [], TWO[:1], TWO[:1]]
    out = run(Tracker(min_hits=2), frames)
    assert [len(frame) for frame in out] == [0, 0, 0, 1]


def test_a_gap_shorter_than_hold_s_keeps_the_id_and_coasts():
    tracker = Tracker(min_hits=1, hold_s=0.5)
    frames = [TWO[:1]] * 3 + [[]] * 4 + [TWO[:1]] * 2          # 0.4 s missed
    out = run(tracker, frames)
    assert all(frame.track_ids.tolist() == [1] for frame in out)
    assert [frame.states[0] for frame in out[2:8]] == [CONFIRMED] + [COASTING] * 4 + [CONFIRMED]


def test_a_gap_longer_than_hold_s_gives_a_new_id():
    tracker = Tracker(min_hits=1, hold_s=0.5)
    frames = [TWO[:1]] * 3 + [[]] * 8 + [TWO[:1]] * 2          # 0.8 s missed
    out = run(tracker, frames)
    assert [frame.track_ids.tolist() for frame in out[3:9]] == [[1]] * 5 + [[]]
    assert out[-1].track_ids.tolist() == [2]                  # never reused


def test_hold_s_is_in_seconds_whatever_the_frame_rate():
    for fps in (5.0, 30.0):
        tracker = Tracker(min_hits=1, hold_s=0.5)
        shown = []
        for i in range(int(2 * fps)):
            t = i / fps
            frame = dets(TWO[:1] if t < 0.5 else [], t)
            shown.append((t, len(tracker.update(frame))))
        last = max(t for t, n in shown if n)
        assert 0.5 + 0.5 - 1 / fps <= last <= 1.0 + 1e-9


def test_a_weaker_box_keeps_a_track_but_cannot_start_one():
    tracker = Tracker(min_hits=1, hold_s=0.2, start_score=0.5, keep_score=0.3)
    weak = lambda i: (TWO[:1], i / FPS, ("a cat",), None, [0.4])
    out = [tracker.update(dets(*weak(i)) if i >= 2 else dets(TWO[:1], i / FPS))
           for i in range(10)]
    assert all(frame.track_ids.tolist() == [1] for frame in out)
    assert all(frame.states[0] == CONFIRMED for frame in out)
    fresh = Tracker(min_hits=1, start_score=0.5, keep_score=0.3)
    assert all(len(fresh.update(dets(*weak(i)))) == 0 for i in range(5))


def test_boxes_never_switch_prompt():
    labels = ("a cat", "a dog")
    tracker = Tracker(min_hits=1, hold_s=0.3)
    box = [[10, 10, 50, 50]]
    out = [tracker.update(dets(box, i / FPS, labels, [0 if i < 3 else 1])) for i in range(6)]
    # the same place, another prompt: a new track of its own, never the cat's ID
    cat = {int(i) for f in out for i, l in zip(f.track_ids, f.label_ids) if l == 0}
    dog = {int(i) for f in out for i, l in zip(f.track_ids, f.label_ids) if l == 1}
    assert cat == {1} and dog == {2}
    assert out[3].track_ids.tolist() == [1, 2] and list(out[3].states) == [COASTING, CONFIRMED]


def test_a_prompt_change_keeps_the_tracks_of_prompts_that_stay():
    tracker = Tracker(min_hits=1)
    tracker.update(dets(TWO, 0.0, ("a cat", "a dog"), [0, 1]))
    out = tracker.update(dets(TWO[1:], 0.1, ("a dog",), [0]))
    assert out.track_ids.tolist() == [2] and out.labels == ("a dog",)


def test_two_instances_of_one_prompt_crossing_keep_their_ids():
    frames = [[[10 + 20 * i, 50, 60 + 20 * i, 100], [210 - 20 * i, 60, 260 - 20 * i, 110]]
              for i in range(11)]
    out = run(Tracker(min_hits=1, smoothing=0.3), frames)
    # identity follows the motion: track 1 ends on the right, track 2 on the left
    last = dict(zip(out[-1].track_ids.tolist(), out[-1].boxes[:, 0].tolist()))
    assert last[1] > last[2]


def test_an_object_jumping_twice_its_size_per_frame_keeps_one_id_and_stays_shown():
    # 40 px wide, 75 px further right and 20 px down each inference frame (1.9 sizes): no
    # overlap with the predicted box until the velocity is known
    frames = [[[10 + 75 * i, 100 + 20 * i, 50 + 75 * i, 140 + 20 * i]] for i in range(8)]
    out = run(Tracker(min_hits=2), frames)
    assert [frame.track_ids.tolist() for frame in out] == [[]] + [[1]] * 7
    assert all(frame.states[0] == CONFIRMED for frame in out[1:])
    # the velocity is picked up from the first displacement, so the box does not lag
    np.testing.assert_allclose(out[2].velocities[0], [750, 200, 750, 200], atol=1.0)
    np.testing.assert_allclose(out[-1].boxes, frames[-1], atol=2.0)


def test_a_far_away_box_beyond_the_gate_starts_a_new_track():
    tracker = Tracker(min_hits=1)
    frames = [[[100, 100, 140, 140]]] * 3 + [[[400, 300, 440, 340]]]   # 7 sizes away
    out = run(tracker, frames)
    assert out[-1].track_ids.tolist() == [1, 2]      # 1 coasts, 2 is new
    assert list(out[-1].states) == [COASTING, CONFIRMED]
    np.testing.assert_allclose(out[-1].boxes[0], frames[0][0], atol=1e-3)


def test_a_box_much_larger_or_smaller_is_not_taken_by_the_gate():
    tracker = Tracker(min_hits=1)
    frames = [[[100, 100, 140, 140]]] * 3 + [[[170, 100, 330, 260]]]   # 4x the side, near
    assert run(tracker, frames)[-1].track_ids.tolist() == [1, 2]


def test_the_gate_never_takes_a_box_of_another_prompt():
    labels = ("a cat", "a dog")
    tracker = Tracker(min_hits=1)
    cat = lambda i: [10 + 60 * i, 100, 50 + 60 * i, 140]        # 1.5 sizes a frame
    frames = [dets([cat(i)], i / FPS, labels, [0]) for i in range(3)]
    frames.append(dets([cat(3)], 3 / FPS, labels, [1]))         # where the cat would be
    out = [tracker.update(f) for f in frames]
    assert out[-1].track_ids.tolist() == [1, 2]
    assert out[-1].label_ids.tolist() == [0, 1] and list(out[-1].states) == [COASTING,
                                                                            CONFIRMED]


def test_two_instances_of_one_prompt_passing_near_each_other_fast_keep_their_ids():
    # 40 px boxes on lanes 50 px apart, moving 60 px a frame in opposite directions: they
    # pass each other between two frames, each nearer the other's old place than its own
    frames = [[[10 + 60 * i, 100, 50 + 60 * i, 140], [490 - 60 * i, 150, 530 - 60 * i, 190]]
              for i in range(9)]
    out = run(Tracker(min_hits=2), frames)
    assert all(frame.track_ids.tolist() == [1, 2] for frame in out[1:])
    for frame, boxes in zip(out[1:], frames[1:]):
        by_id = dict(zip(frame.track_ids.tolist(), frame.boxes.tolist()))
        assert by_id[1][1] < 125 < by_id[2][1]        # 1 stays on the upper lane
        np.testing.assert_allclose(by_id[1], boxes[0], atol=15.0)


def test_two_instances_side_by_side_keep_their_ids_when_one_is_missed():
    a, b = [100, 100, 140, 140], [150, 100, 190, 140]            # 10 px apart
    frames = [[a, b]] * 3 + [[b]] * 2 + [[a, b]] * 3 + [[a]] * 2 + [[a, b]] * 2
    out = run(Tracker(min_hits=1, hold_s=0.5), frames)
    for frame in out:
        by_id = dict(zip(frame.track_ids.tolist(), frame.boxes.tolist()))
        assert sorted(by_id) == [1, 2]
        np.testing.assert_allclose(by_id[1], a, atol=3.0)
        np.testing.assert_allclose(by_id[2], b, atol=3.0)


def test_reset_restarts_the_ids():
    tracker = Tracker(min_hits=1)
    run(tracker, [TWO] * 3)
    tracker.reset()
    assert tracker.update(dets(TWO[1:], 5.0)).track_ids.tolist() == [1]
    assert [s.track_id for s in tracker.summary()] == [1]


def test_smoothing_steadies_a_jittering_box():
    rng = np.random.default_rng(0)
    frames = [[np.array([100, 100, 160, 160]) + rng.normal(0, 3, 4)] for _ in range(40)]
    raw = np.array([f[0] for f in frames])
    smooth = np.array([f.boxes[0] for f in run(Tracker(min_hits=1, smoothing=0.6), frames)])
    assert np.std(np.diff(smooth[10:], 2, axis=0)) < 0.6 * np.std(np.diff(raw[10:], 2, axis=0))


def test_prediction_moves_boxes_along_their_velocity():
    frames = [[[10 + 10 * i, 20, 50 + 10 * i, 60]] for i in range(5)]   # 100 px/s along x
    tracker = Tracker(min_hits=1, smoothing=0.0)
    last = run(tracker, frames)[-1]
    ahead = advance(last, last.timestamp_s + 0.05)
    np.testing.assert_allclose(ahead.boxes, [[55, 20, 95, 60]], atol=1e-3)
    assert ahead.track_ids.tolist() == [1]
    clipped = advance(last, last.timestamp_s + 10.0, max_ahead_s=0.1, frame_size=(100, 80))
    np.testing.assert_allclose(clipped.boxes, [[60, 20, 100, 60]], atol=1e-3)
    untracked = dets(frames[0], 0.0)
    assert advance(untracked, 1.0) is untracked


def test_summary_names_each_shown_track():
    tracker = Tracker(min_hits=2)
    run(tracker, [TWO] * 4)
    lines = [s.line() for s in tracker.summary()]
    assert lines == ["#1 a cat: 0.10-0.30 s, 3 frames", "#2 a cat: 0.10-0.30 s, 3 frames"]


def test_records_carry_track_id_and_state():
    out = run(Tracker(min_hits=1), [TWO])[-1]
    record = out.to_record()
    assert [(d["track_id"], d["state"]) for d in record["detections"]] == [(1, CONFIRMED),
                                                                           (2, CONFIRMED)]
    assert set(record) == {"frame", "t", "detections"}
    assert "track_id" not in dets(TWO, 0.0).to_record()["detections"][0]


def test_cost_stays_small_for_twenty_boxes():
    """Not a timing test: the matching works on per-prompt blocks, so 20 boxes of 4
    prompts keep their 20 IDs over many frames."""
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 600, (20, 2))
    tracker = Tracker(min_hits=1)
    labels = ("a", "b", "c", "d")
    for i in range(50):
        xy = base + 2 * i
        out = tracker.update(dets(np.hstack([xy, xy + 30]), i / 30, labels, np.arange(20) % 4))
    assert sorted(out.track_ids.tolist()) == list(range(1, 21))


def test_track_config_validates_and_resolves_auto():
    config = TrackConfig()
    assert config.active("video") and config.active("camera") and config.active("demo")
    assert not config.active("image") and not config.active("folder")
    assert TrackConfig(enabled=True).active("image")
    assert not TrackConfig(enabled=False).active("video")
    with pytest.raises(ConfigError, match="track.min_hits"):
        config_from_dict({"track": {"min_hits": 0}})
    with pytest.raises(ConfigError, match="track.smoothing"):
        config_from_dict({"track": {"smoothing": 1.0}})
    with pytest.raises(ConfigError, match="did you mean track.hold_s"):
        config_from_dict({"track": {"hold": 1}})
    with pytest.raises(ConfigError, match="track.gate_sizes_per_s"):
        config_from_dict({"track": {"gate_sizes_per_s": -1}})
    tracker = Tracker.from_config(TrackConfig(gate_sizes=0.5, gate_sizes_per_s=4.0), 0.5)
    assert (tracker.gate_sizes, tracker.gate_sizes_per_s) == (0.5, 4.0)
