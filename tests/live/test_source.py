"""Sources: what --source names, and opening it before any work starts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import write_video
from realtime.live.source import (DEMO_SIZE, SourceError, SourceSpec, list_images, open_reader,
                             parse_source)


def read_all(reader):
    out = []
    while (grabbed := reader.read()) is not None:
        out.append(grabbed)
    return out


def test_kinds_are_told_apart_by_the_text(tmp_path, video_file):
    image = tmp_path / "still.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert parse_source("0") == SourceSpec("camera", 0)
    assert parse_source(" 2 ") == SourceSpec("camera", 2)
    assert parse_source("rtsp://10.0.0.5/stream").kind == "stream"
    assert parse_source("http://127.0.0.1:8080/video.mjpg").kind == "stream"
    assert parse_source(str(video_file)) == SourceSpec("video", str(video_file))
    assert parse_source(str(image)).kind == "image"
    assert parse_source(str(tmp_path)).kind == "folder"
    assert parse_source("anything", demo=True).kind == "demo"
    assert parse_source("0").live and parse_source("rtsp://x/y").live
    assert not parse_source(str(video_file)).live


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.mp4", "no such file or folder"),
    (lambda d: (d / "notes.txt").write_text("hi") and d / "notes.txt", "unsupported file type"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "folder holds no images"),
])
def test_missing_or_unsupported_sources_are_one_line_errors(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(SourceError) as err:
        parse_source(str(path))
    text = str(err.value)
    assert message in text and str(path) in text and "\n" not in text


def test_a_file_that_is_not_a_video_cannot_be_opened(tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_bytes(b"this is not a video" * 100)
    with pytest.raises(SourceError, match="cannot open this video"):
        open_reader(parse_source(str(fake)))


def test_a_camera_that_does_not_exist_cannot_be_opened():
    with pytest.raises(SourceError, match="cannot open this camera"):
        open_reader(parse_source("97"))


def test_video_reader_reports_size_fps_count_and_reads_every_frame_in_order(tmp_path):
    path = write_video(tmp_path / "v.mp4", 12, size=(96, 64), fps=8.0)
    reader = open_reader(parse_source(str(path)))
    assert (reader.width, reader.height, reader.fps, reader.frame_count) == (96, 64, 8.0, 12)
    frames = read_all(reader)
    reader.close()
    assert [g.index for g in frames] == list(range(12))
    assert all(g.image.shape == (64, 96, 3) and g.image.dtype == np.uint8 for g in frames)


def test_folder_reads_in_natural_order_and_skips_unreadable_images(tmp_path):
    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), np.full((20, 30), i * 20, np.uint8))
    (tmp_path / "frame3.png").write_bytes(b"not a png")
    assert [p.name for p in list_images(tmp_path)] == ["frame1.png", "frame2.png",
                                                      "frame3.png", "frame10.png"]
    reader = open_reader(parse_source(str(tmp_path)))
    frames = read_all(reader)
    # The broken frame3 keeps its place: index 2 is simply absent.
    assert [g.index for g in frames] == [0, 1, 3]
    assert frames[2].image.shape == (20, 30, 3) and int(frames[2].image[0, 0, 0]) == 200
    assert reader.frame_count == 4 and reader.fps == 1.0


def test_single_image_is_one_frame_and_a_broken_image_is_an_input_error(tmp_path):
    good, bad = tmp_path / "a.jpg", tmp_path / "b.jpg"
    cv2.imwrite(str(good), np.zeros((10, 12, 3), np.uint8))
    bad.write_bytes(b"\xff\xd8 broken")
    reader = open_reader(parse_source(str(good)))
    assert [g.index for g in read_all(reader)] == [0]
    with pytest.raises(SourceError, match="cannot read this image"):
        open_reader(parse_source(str(bad)))


def test_demo_source_is_the_deterministic_shapes_scene():
    first = open_reader(parse_source("", demo=True))
    second = open_reader(parse_source("", demo=True))
    a, b = [first.read() for _ in range(3)], [second.read() for _ in range(3)]
    assert (first.width, first.height) == DEMO_SIZE and first.fps == 30.0
    assert [g.index for g in a] == [0, 1, 2]
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert not np.array_equal(a[0].image, a[2].image)   # the shapes move
    assert not first.live   # pacing is the app's choice (window: paced; headless: every frame)


def test_a_video_reader_seeks_to_a_frame_exactly(tmp_path):
    # The archive indexer decodes one time chunk of a file: it seeks to the chunk's start.
    video = write_video(tmp_path / "seek.mp4", 40, fps=10.0)
    reader = open_reader(parse_source(str(video)))
    frames = {}
    while (grabbed := reader.read()) is not None:
        frames[grabbed.index] = grabbed.image
    reader.close()
    for start in (0, 13, 27, 39):
        reader = open_reader(parse_source(str(video)))
        reader.seek(start)
        first, second = reader.read(), reader.read()
        reader.close()
        assert first.index == start and (first.image == frames[start]).all()
        assert second is None if start == 39 else second.index == start + 1
