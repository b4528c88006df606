"""`main.py index` then `main.py search`, end to end on generated videos whose shapes
appear and leave at known frames (models/shapes-clip: real meaning)."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from archive_helpers import (FPS, SHAPES_MODEL, manifest_rows, read_jsonl, run_main,
                             scripted_video, still)
from realtime.archive.store import Manifest, load_arrays, load_frames

SAMPLE_FPS = 2.0
PERIOD_S = 1.0 / SAMPLE_FPS
# (video, prompt) -> (first frame, last frame) in view
TRUTH = {("a.mp4", "a red circle"): (8, 27), ("a.mp4", "a blue square"): (34, 53),
         ("b.mp4", "a blue square"): (5, 24)}
ABSENT = "a green star"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archive")
    videos = folder / "videos"
    videos.mkdir()
    actors = {"a.mp4": [still(1, "circle", "red", 8, 27),
                        still(2, "square", "blue", 34, 53, at=(150, 130))],
              "b.mp4": [still(1, "square", "blue", 5, 24, at=(170, 110))]}
    scripted_video(videos / "a.mp4", actors["a.mp4"], 60)
    scripted_video(videos / "b.mp4", actors["b.mp4"], 30, seed=2)
    index = folder / "index"
    # 2 s chunks: the red circle's appearance spans a chunk boundary
    code = run_main("index", "--source", videos, "--out", index, "--model", SHAPES_MODEL,
                    "--sample-fps", SAMPLE_FPS, "--chunk-s", 2)
    assert code == 0
    hits, report = folder / "hits.jsonl", folder / "report.html"
    code = run_main("search", "--index", index, "--prompt", "a red circle", "--prompt",
                    "a blue square", "--prompt", ABSENT, "--json", hits, "--report", report)
    assert code == 0
    return {"videos": videos, "index": index, "hits": read_jsonl(hits), "report": report,
            "actors": actors}


def test_the_manifest_has_one_ok_row_per_chunk_with_model_and_layout(archive):
    rows = manifest_rows(archive["index"])
    assert [(r["path"].rsplit("/", 1)[1], r["chunk"]) for r in rows] == [
        ("a.mp4", 0), ("a.mp4", 1), ("a.mp4", 2), ("b.mp4", 0), ("b.mp4", 1)]
    assert all(r["status"] == "ok" and r["attempts"] == 1 and r["error"] == "" for r in rows)
    assert sum(r["frames"] for r in rows) == 60 // 5 + 30 // 5
    assert {r["model"] for r in rows} == {str(SHAPES_MODEL.resolve())}
    assert all(r["layout"]["method"] == "windows" and r["layout"]["model"] == r["model"]
               for r in rows)
    assert sum(r["seconds"] for r in rows) == pytest.approx(9.0)


def test_segments_start_and_end_within_one_sample_period_of_the_truth(archive):
    found = {(h["video"].rsplit("/", 1)[1], h["prompt"]): h for h in archive["hits"]}
    assert set(found) == set(TRUTH)          # one segment each, none for the absent prompt
    for key, (first, last) in TRUTH.items():
        hit = found[key]
        assert first / FPS <= hit["start_s"] <= first / FPS + PERIOD_S, (key, hit)
        assert last / FPS - PERIOD_S <= hit["end_s"] <= last / FPS, (key, hit)
        assert hit["start_s"] <= hit["best_t"] <= hit["end_s"]
        assert hit["best_frame"] == round(hit["best_t"] * FPS)
        assert hit["score"] >= 0.5 and hit["box_score"] >= 0.5
        assert set(hit) >= {"prompt", "video", "start_s", "end_s", "best_frame", "best_t",
                            "score", "box"}


def test_the_box_at_the_best_frame_is_on_the_shape(archive):
    from realtime.engine.boxes import box_iou
    from realtime.scenes import ScriptedScene

    for hit in archive["hits"]:
        name = hit["video"].rsplit("/", 1)[1]
        truth = ScriptedScene(320, 240, archive["actors"][name], seed=0).frame(hit["best_frame"])
        (only,) = [b for b, label in zip(truth.boxes, truth.labels) if label == hit["prompt"]]
        assert box_iou(np.asarray(hit["box"]), only.astype(np.float32)) >= 0.4, (hit, only)


def test_an_absent_prompt_finds_nothing_and_says_so(archive, tmp_path, capsys):
    hits = tmp_path / "none.jsonl"
    assert run_main("search", "--index", archive["index"], "--prompt", ABSENT, "--prompt",
                    "a purple triangle", "--json", hits) == 0
    assert hits.read_text() == ""
    out = capsys.readouterr().out
    assert f"{ABSENT}: no segments" in out and "a purple triangle: no segments" in out


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.links, self.text, self.segments = [], [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag in ("link", "script", "iframe") or "href" in attrs:
            self.links.append(tag)
        if attrs.get("class") == "seg":
            self.segments += 1

    def handle_data(self, data):
        self.text.append(data)


def test_the_report_is_one_self_contained_page_with_timelines_and_thumbnails(archive):
    html = archive["report"].read_text()
    page = _Page()
    page.feed(html)
    assert page.links == [] and "http" not in html.replace("http-equiv", "")
    assert len(page.images) == len(archive["hits"]) == page.segments
    assert all(img["src"].startswith("data:image/jpeg;base64,") for img in page.images)
    text = " ".join(page.text)
    assert "Nowhere in the index." in text and "a.mp4 @" in text and "b.mp4 @" in text


def test_report_labels_are_escaped(archive, tmp_path):
    report = tmp_path / "r.html"
    prompt = '<img src=x onerror="alert(1)"> & "a red circle"'
    assert run_main("search", "--index", archive["index"], "--prompt", prompt,
                    "--report", report, "--no-confirm") == 0
    html = report.read_text()
    assert "<img src=x" not in html and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html


def test_searching_with_another_model_or_layout_fails_clearly(archive, tmp_path, capsys,
                                                             tiny_model_dir):
    assert run_main("search", "--index", archive["index"], "--prompt", "a red circle",
                    "--model", tiny_model_dir) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "index was built with another model or layout" in err and "model" in err
    assert run_main("search", "--index", archive["index"], "--prompt", "a red circle",
                    "--window-tiles", "2") == 2
    assert "window_tiles 3 (this search: 2)" in capsys.readouterr().err


def test_search_boxes_and_scores_agree_with_main_py_on_the_sampled_frames(archive, tmp_path):
    """Every stored frame of a.mp4, scored from the index, draws the boxes and scores that
    `main.py --source a.mp4 --refine --no-verify --no-track` draws on that frame (the
    index has no pixels: its boxes are the patch map's, never segmented or fitted, and
    not verified; tracking would hold and smooth boxes across frames)."""
    from realtime import Detector, DetectorConfig, ModelConfig
    from realtime.engine.methods import Encoded
    from realtime.engine.model import load_model

    prompt, video = "a red circle", archive["videos"] / "a.mp4"
    detections = tmp_path / "live.jsonl"
    assert run_main("--source", video, "--headless", "--refine", "--no-verify", "--no-track",
                    "--model",
                    SHAPES_MODEL, "--prompt", prompt, "--detections", detections) == 0
    live = {r["frame"]: r["detections"] for r in read_jsonl(detections)}
    rows = Manifest.load(archive["index"]).ok_rows()
    table = load_frames(archive["index"], rows)
    detector = Detector([prompt], DetectorConfig(),
                        load_model(ModelConfig(name=str(SHAPES_MODEL))))
    compared = boxes = 0
    for i in np.flatnonzero(np.array([v.endswith("a.mp4") for v in table.videos])[table.video_ids]):
        w, h, arrays = load_arrays(archive["index"], rows[table.chunk_ids[i]],
                                   int(table.positions[i]))
        stored = detector.detect_encoded(Encoded(w, h, arrays)).to_record()["detections"]
        direct = live[int(table.frames[i])]
        assert len(stored) == len(direct), (table.frames[i], stored, direct)
        for s, d in zip(stored, direct):
            np.testing.assert_allclose(s["box"], d["box"], atol=1.0)
            assert s["score"] == pytest.approx(d["score"], abs=0.02)
            assert s["similarity"] == pytest.approx(d["similarity"], abs=0.01)
            boxes += 1
        compared += 1
    assert compared == 12 and boxes >= 3
    hit = next(h for h in archive["hits"] if h["prompt"] == prompt)
    best = max(live[hit["best_frame"]], key=lambda d: d["score"])
    np.testing.assert_allclose(hit["box"], best["box"], atol=1.0)
    assert hit["box_score"] == pytest.approx(best["score"], abs=0.02)
