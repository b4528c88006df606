"""Drawing: colours, boxes with "label 87%", heat map, HUD, ranking, banner, non-ASCII."""

from __future__ import annotations

import numpy as np

from realtime.detections import Detections
from realtime.live.render import (Overlay, compose, draw_banner, draw_box, draw_heatmap, draw_hud,
                             hud_text, label_colour, put_text, short_label)

GREY = 100


def blank(width: int = 320, height: int = 240) -> np.ndarray:
    return np.full((height, width, 3), GREY, np.uint8)


def has_colour(region: np.ndarray, bgr, tolerance: int = 2) -> bool:
    return bool(np.any(np.all(np.abs(region.astype(int) - np.array(bgr)) <= tolerance,
                              axis=-1)))


def detections(labels=("a red circle",), box=(80, 60, 240, 180), score=0.87, **extra):
    return Detections(labels=labels, boxes=np.array([box], np.float32),
                      scores=np.array([score], np.float32),
                      similarities=np.array([0.3], np.float32),
                      label_ids=np.array([len(labels) - 1]), **extra)


def test_prompt_colours_are_distinct_and_stable():
    colours = [label_colour(i) for i in range(8)]
    assert len(set(colours)) == 8 and label_colour(3) == colours[3]
    assert all(max(c) >= 200 for c in colours)   # saturated, visible on any frame


def test_box_is_drawn_in_the_prompt_colour_with_its_label_tag_above():
    image, colour = blank(), label_colour(0)
    draw_box(image, (80, 60, 240, 180), colour, "a red circle 87%")
    assert has_colour(image[60:180, 80:84], colour)      # left edge
    assert has_colour(image[176:180, 80:240], colour)    # bottom edge
    assert has_colour(image[40:60, 80:200], colour)      # the filled tag above the box
    assert np.all(image[100:140, 120:200] == GREY)       # inside stays untouched
    tag_text = image[40:60, 80:200]
    assert not np.all(np.all(tag_text == colour, axis=-1))   # text is written on the tag


def test_compose_labels_each_box_with_prompt_and_percent_and_leaves_the_frame_alone():
    frame = blank()
    out = compose(frame, detections(), Overlay())
    assert np.all(frame == GREY)                           # the captured frame is not drawn on
    assert has_colour(out[60:180, 80:84], label_colour(0))
    plain = blank()
    draw_box(plain, (80, 60, 240, 180), label_colour(0), "a red circle 87%")
    assert np.array_equal(out, plain)                      # i.e. the caption is "label 87%"


def test_non_ascii_labels_are_drawn_not_crashed_on():
    labels = ("κόκκινος κύκλος", "rote Kugel ä", "红色的圆")
    for label in labels:
        out = compose(blank(), detections(labels=(label,)), Overlay(hud="hud"))
        tag = out[40:60, 80:240]
        colour = label_colour(0)
        ink = np.any(np.abs(tag.astype(int) - colour).sum(-1) > 60)
        assert ink, f"no text drawn for {label!r}"


def test_text_falls_back_to_ascii_when_no_font_can_draw(monkeypatch):
    import realtime.live.render as render

    def broken(*args, **kwargs):
        raise OSError("no font")

    monkeypatch.setattr(render, "_put_text_pil", broken)
    image = blank()
    put_text(image, "Café ünïcode", (10, 30))
    assert not np.all(image == GREY)


def test_heatmap_tints_only_where_scores_are_high():
    image = blank(40, 20)
    maps = np.zeros((2, 1, 2), np.float32)
    maps[1, 0, 1] = 1.0                       # prompt 1 is sure about the right half
    draw_heatmap(image, maps, alpha=0.5)
    assert np.all(image[:, :18] == GREY)
    expected = (np.array(label_colour(1)) * 0.5 + GREY * 0.5).astype(int)
    assert np.all(np.abs(image[:, 30].astype(int) - expected) <= 1)


def test_heatmap_overlay_is_optional_in_compose():
    dets = detections(score_maps=np.ones((1, 2, 2), np.float32))
    off = compose(blank(), dets, Overlay(heatmap=False))
    on = compose(blank(), dets, Overlay(heatmap=True))
    assert np.all(off[100:140, 120:200] == GREY) and not np.all(on[100:140, 120:200] == GREY)


def test_hud_line_names_rates_latency_and_device():
    text = hud_text(29.97, 4.2, 187.4, "cuda:0", 0.55)
    assert text == ("capture 30.0 fps | inference 4.2 fps | latency 187 ms | cuda:0 | "
                    "thr 0.55")
    assert "- ms" in hud_text(0, 0, None, "cpu")
    image = blank()
    draw_hud(image, text)
    assert np.all(image[2, 2] == 32) and np.all(image[200, 10] == GREY)


def test_classify_results_are_drawn_as_a_ranked_list():
    dets = Detections(labels=("a cat", "a dog"), frame_scores=np.array([0.2, 0.8], np.float32))
    out = compose(blank(), dets, Overlay())
    # The best prompt (a dog, colour 1) comes first, right under the HUD line.
    assert has_colour(out[34:50, 5:60], label_colour(1))
    assert has_colour(out[50:80, 5:60], label_colour(0))


def test_reconnecting_banner_is_drawn_over_the_last_frame():
    image = blank()
    draw_banner(image, "reconnecting...")
    assert np.all(image[120, 5] == 32) and np.all(image[5, 5] == GREY)
    assert has_colour(image[100:140], (0, 200, 255), tolerance=40)


def test_long_labels_are_shortened():
    assert short_label("x" * 100).endswith("...") and len(short_label("x" * 100)) == 40
    assert short_label("a cat") == "a cat"


def test_a_box_at_the_top_edge_keeps_its_label_over_the_hud():
    # The label tag of a box at y=0 sits inside the box, where the HUD strip is.
    out = compose(blank(), detections(box=(10, 0, 200, 100)), Overlay(hud="capture 30.0 fps"))
    tag = out[4:12, 14:40]
    assert has_colour(tag, label_colour(0))
