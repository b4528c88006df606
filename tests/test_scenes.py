"""Synthetic scenes: exact ground truth, determinism, motion."""

from __future__ import annotations

import time

import numpy as np
import pytest

from realtime.scenes import (
    BACKGROUND_STYLES,
    COLORS,
    SHAPES,
    MovingScene,
    Shape,
    all_captions,
    caption,
    make_background,
    random_scene,
    random_shapes,
    render_shapes,
)


def _drawn_box(background: np.ndarray, frame: np.ndarray) -> list[int]:
    """Tight [x1, y1, x2) box (exclusive ends) of the pixels that differ from the background."""
    changed = np.any(background != frame, axis=2)
    ys, xs = np.nonzero(changed)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def test_vocabulary():
    assert set(SHAPES) >= {"circle", "square", "triangle", "star"}
    assert len(COLORS) >= 6
    assert caption("circle", "red") == "a red circle"
    assert len(set(all_captions())) == len(SHAPES) * len(COLORS)
    with pytest.raises(ValueError):
        caption("hexagon", "red")
    with pytest.raises(ValueError):
        Shape("circle", "magenta", 10, 10, 10)


def test_shape_colours_are_saturated_and_backgrounds_are_not():
    import cv2

    for bgr in COLORS.values():
        hsv = cv2.cvtColor(np.uint8([[bgr]]), cv2.COLOR_BGR2HSV)[0, 0]
        assert hsv[1] > 150
    rng = np.random.default_rng(1)
    for style in BACKGROUND_STYLES:
        background = make_background(rng, 160, 120, style)
        assert background.shape == (120, 160, 3) and background.dtype == np.uint8
        saturation = cv2.cvtColor(background, cv2.COLOR_BGR2HSV)[..., 1]
        assert np.percentile(saturation, 99) < 110, style


@pytest.mark.parametrize("kind", SHAPES)
@pytest.mark.parametrize("angle", [0.0, 33.0])
def test_box_is_tight_around_drawn_pixels(kind, angle):
    background = make_background(np.random.default_rng(2), 200, 150, "gradient")
    shape = Shape(kind, "blue", 97.3, 71.6, 61.0, angle)
    scene = render_shapes(background, [shape])
    assert scene.boxes.shape == (1, 4) and scene.boxes.dtype == np.int32
    assert scene.boxes[0].tolist() == _drawn_box(background, scene.frame)
    assert scene.labels == ("a blue " + kind,)
    x1, y1, x2, y2 = scene.boxes[0]
    assert 0.5 * 61 < x2 - x1 <= 61 + 4 and 0.5 * 61 < y2 - y1 <= 61 + 4  # AA fringe


def test_random_scene_boxes_labels_and_index_map():
    scene = random_scene(np.random.default_rng(3), 320, 240, 4, with_index_map=True)
    assert scene.frame.shape == (240, 320, 3) and scene.frame.dtype == np.uint8
    assert scene.boxes.shape == (4, 4) and len(scene.labels) == 4
    assert len(set(scene.labels)) == 4  # distinct captions unless asked otherwise
    assert scene.prompts == scene.labels
    for i, (x1, y1, x2, y2) in enumerate(scene.boxes):
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        ys, xs = np.nonzero(scene.index_map == i)
        assert x1 <= xs.min() and xs.max() < x2 and y1 <= ys.min() and ys.max() < y2
        # the middle of the box is the shape's colour
        assert np.abs(scene.frame[(y1 + y2) // 2, (x1 + x2) // 2].astype(int) - COLORS[scene.shapes[i].color]).max() < 3


def test_random_scene_shapes_do_not_overlap():
    rng = np.random.default_rng(4)
    for _ in range(20):
        scene = random_scene(rng, 320, 240, 5, size_range=(0.2, 0.45), with_index_map=True)
        owned = [(scene.index_map == i).sum() for i in range(5)]
        for i, (x1, y1, x2, y2) in enumerate(scene.boxes):
            # every shape is whole: nothing drawn later covers it
            alone = render_shapes(scene.frame * 0, [scene.shapes[i]], with_index_map=True)
            assert owned[i] == (alone.index_map == 0).sum()


def test_two_instances_share_a_label():
    scene = random_scene(np.random.default_rng(5), 640, 480, 3, duplicate=True)
    assert scene.labels[0] == scene.labels[1] != scene.labels[2]
    assert len(scene.boxes) == 3 and len(scene.prompts) == 2
    assert not np.array_equal(scene.boxes[0], scene.boxes[1])


def test_random_scene_is_deterministic_for_a_seed():
    a = random_scene(np.random.default_rng(6), 320, 240, 3)
    b = random_scene(np.random.default_rng(6), 320, 240, 3)
    c = random_scene(np.random.default_rng(7), 320, 240, 3)
    assert np.array_equal(a.frame, b.frame) and np.array_equal(a.boxes, b.boxes) and a.labels == b.labels
    assert not np.array_equal(a.frame, c.frame)


def test_moving_scene_is_deterministic_moves_and_stays_inside():
    scene = MovingScene(320, 240, 4, seed=11)
    again = MovingScene(320, 240, 4, seed=11)
    assert np.array_equal(scene.frame(37).frame, again.frame(37).frame)
    assert np.array_equal(scene.frame(37).boxes, again.frame(37).boxes)
    assert not np.array_equal(scene.frame(0).frame, MovingScene(320, 240, 4, seed=12).frame(0).frame)
    assert len(scene.prompts) == 4 and set(scene.prompts) == set(scene.frame(0).labels)
    frames = [scene.frame(i) for i in range(0, 300, 3)]
    assert all(f.labels == frames[0].labels for f in frames)  # identities do not change
    boxes = np.stack([f.boxes for f in frames])
    assert (boxes[..., :2] >= 0).all() and (boxes[..., 2] <= 320).all() and (boxes[..., 3] <= 240).all()
    centres = (boxes[..., :2] + boxes[..., 2:]) / 2
    assert np.abs(np.diff(centres, axis=0)).max() < 20  # smooth: small steps between frames
    assert (np.ptp(centres, axis=0) > 10).all()  # every shape travels


def test_moving_scene_background_is_fixed_and_shapes_never_overlap():
    scene = MovingScene(640, 480, 3, seed=12, duplicate=True)
    assert len(scene.prompts) == 2
    for i in (0, 50, 100, 1000):
        frame = scene.frame(i)
        outside = np.ones(frame.frame.shape[:2], dtype=bool)
        coverage = np.zeros(frame.frame.shape[:2], dtype=int)
        for shape, box in zip(frame.shapes, frame.boxes):
            x1, y1, x2, y2 = box
            outside[y1:y2, x1:x2] = False
            alone = render_shapes(scene.background, [shape], with_index_map=True)
            assert alone.boxes[0].tolist() == box.tolist()
            coverage += alone.index_map == 0
        assert coverage.max() == 1  # no pixel is covered by two shapes
        assert np.array_equal(frame.frame[outside], scene.background[outside])


def test_rendering_is_fast_enough_for_a_live_demo():
    scene = MovingScene(640, 480, 4, seed=13)
    scene.frame(0)
    start = time.perf_counter()
    for i in range(30):
        scene.frame(i)
    per_frame = (time.perf_counter() - start) / 30
    assert per_frame < 0.02  # a few ms normally; generous for a loaded CI machine


def test_shapes_stand_upright_with_a_bounded_tilt():
    scene = MovingScene(320, 240, 3, seed=5, max_angle=20)
    angles = np.array([[s.angle for s in scene.shapes_at(i)] for i in range(300)])
    assert np.abs(angles).max() <= 20
    assert np.ptp(angles, axis=0).min() > 2  # every shape rocks
    assert np.abs(np.diff(angles, axis=0)).max() < 2  # smoothly
    upright = random_shapes(np.random.default_rng(8), 320, 240, 4, max_angle=0)
    assert all(s.angle == 0 for s in upright)
    tilted = random_shapes(np.random.default_rng(8), 320, 240, 4, max_angle=10)
    assert all(abs(s.angle) <= 10 for s in tilted)


def test_an_upright_square_fills_its_box():
    background = np.zeros((100, 100, 3), np.uint8)
    scene = render_shapes(background, [Shape("square", "green", 50, 50, 60, 0)], with_index_map=True)
    x1, y1, x2, y2 = scene.boxes[0]
    assert abs((x2 - x1) - (y2 - y1)) <= 1
    inside = (scene.index_map[y1:y2, x1:x2] == 0).mean()
    assert inside > 0.9


# --------------------------------------------------------------------------- scripted scenes


def test_a_scripted_actor_enters_and_leaves_with_its_identity():
    from realtime.scenes import Actor, ScriptedScene

    actor = Actor(7, "circle", "red", 100, ((0, -60, 200), (30, 700, 200)))
    scene = ScriptedScene(640, 480, [actor], seed=0)
    assert len(scene.frame(0).boxes) == 0                      # still outside the frame
    entering, inside = scene.frame(1), scene.frame(15)
    assert entering.visible[0] < 0.5 and entering.boxes[0][0] == 0
    assert inside.visible[0] == 1.0 and inside.identities.tolist() == [7]
    x1, y1, x2, y2 = inside.boxes[0]
    assert abs((x1 + x2) / 2 - np.interp(15, (0, 30), (-60, 700))) <= 2
    assert 96 <= x2 - x1 <= 104 and inside.labels == ("a red circle",)
    assert len(scene.frame(31).boxes) == 0                     # gone after its last waypoint


def test_scripted_frames_are_deterministic():
    from realtime.scenes import Actor, ScriptedScene

    actors = [Actor(1, "star", "blue", 80, ((0, 100, 100), (10, 300, 200)), tilt=10)]
    a, b = ScriptedScene(320, 240, actors, seed=4), ScriptedScene(320, 240, actors, seed=4)
    assert np.array_equal(a.frame(5).frame, b.frame(5).frame)
