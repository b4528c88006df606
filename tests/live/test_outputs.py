"""Outputs: path checks before the run, the annotated video, the JSON Lines file."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import read_video
from realtime.live.outputs import (JsonlOutput, OutputError, Outputs, VideoOutput,
                              check_output_path, open_outputs)


@pytest.mark.parametrize("name, message", [
    ("missing-dir/out.mp4", "does not exist"),
    (".", "is a folder"),
    ("out.gif", "unsupported file type '.gif'"),
])
def test_unwritable_or_unsupported_output_paths_fail_early(tmp_path, name, message):
    with pytest.raises(OutputError) as err:
        check_output_path(str(tmp_path / name), "--output", (".mp4", ".avi"))
    assert message in str(err.value) and "--output" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_path_on_a_read_only_place_is_refused():
    with pytest.raises(OutputError, match="cannot write"):
        check_output_path("/proc/version", "--detections")


def test_checking_a_path_leaves_no_file_behind_and_keeps_an_existing_one(tmp_path):
    new, old = tmp_path / "new.jsonl", tmp_path / "old.jsonl"
    old.write_text("keep me\n")
    check_output_path(str(new), "--detections")
    check_output_path(str(old), "--detections")
    assert not new.exists() and old.read_text() == "keep me\n"


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_has_the_source_size_fps_and_every_frame(tmp_path, suffix):
    path = tmp_path / f"out{suffix}"
    with VideoOutput(path, 12.0, 96, 64) as video:
        for i in range(15):
            video.write(np.full((64, 96, 3), i * 10, np.uint8))
    assert read_video(path) == (15, 96, 64, 12.0)


def test_frames_of_another_size_are_scaled_to_the_video_size(tmp_path):
    path = tmp_path / "mixed.mp4"
    with VideoOutput(path, 5.0, 64, 48) as video:
        video.write(np.zeros((48, 64, 3), np.uint8))
        video.write(np.zeros((100, 30, 3), np.uint8))
    assert read_video(path)[:3] == (2, 64, 48)


def test_jsonl_lines_are_on_disk_as_soon_as_they_are_written(tmp_path):
    path = tmp_path / "d.jsonl"
    out = JsonlOutput(path)
    out.write({"frame": 0, "t": 0.0, "detections": []})
    out.write({"frame": 1, "t": 0.1, "detections": [{"label": "ein Bär", "box": [1, 2, 3, 4],
                                                     "score": 0.5, "similarity": 0.2}]})
    text = path.read_text(encoding="utf-8")          # read while still open
    assert text.endswith("\n") and len(text.splitlines()) == 2
    assert json.loads(text.splitlines()[1])["detections"][0]["label"] == "ein Bär"
    out.close()
    out.close()                                      # closing twice is harmless


def test_outputs_close_the_jsonl_even_when_the_video_fails_to_close(tmp_path):
    class BadVideo:
        def close(self):
            raise OSError("disk full")

    jsonl = JsonlOutput(tmp_path / "d.jsonl")
    outputs = Outputs(BadVideo(), jsonl)
    with pytest.raises(OSError):
        outputs.close()
    assert jsonl._file.closed


def test_open_outputs_opens_only_what_was_asked_for(tmp_path):
    outputs = open_outputs("", str(tmp_path / "d.jsonl"), 10.0, 32, 24)
    assert outputs.video is None and outputs.jsonl is not None
    outputs.write_frame(np.zeros((24, 32, 3), np.uint8))   # no video: nothing happens
    outputs.close()
