"""Planning without Ray or a model: sources expanded, files cut into chunks, frames sampled."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from conftest import write_video
from realtime.archive.plan import Chunk, PlanError, Sampler, expand_sources, plan, plan_file


def test_sources_are_files_folders_searched_recursively_and_globs(tmp_path):
    (tmp_path / "cam" / "day2").mkdir(parents=True)
    a = write_video(tmp_path / "cam" / "clip10.mp4", 3)
    b = write_video(tmp_path / "cam" / "clip2.mp4", 3)
    c = write_video(tmp_path / "cam" / "day2" / "x.avi", 3)
    image = tmp_path / "cam" / "still.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "cam" / "notes.txt").write_text("not a video")
    found = expand_sources([str(tmp_path / "cam")])
    assert sorted(found) == sorted(p.resolve() for p in (a, b, c, image))
    assert found.index(b.resolve()) < found.index(a.resolve())      # natural order
    assert expand_sources([str(tmp_path / "cam" / "*.mp4"), str(a)]) == [b.resolve(), a.resolve()]


@pytest.mark.parametrize("source, words", [("missing.mp4", "no such file"),
                                           ("notes.txt", "unsupported file type"),
                                           ("*.mkv", "matches no video"),
                                           ("empty", "holds no videos")])
def test_a_source_naming_nothing_is_one_clear_error(tmp_path, source, words):
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlanError, match=words):
        expand_sources([str(tmp_path / source)])


def test_a_video_is_cut_into_chunks_of_chunk_s_and_the_last_reads_to_the_end(tmp_path):
    video = write_video(tmp_path / "v.mp4", 50, fps=10.0)
    chunks = plan_file(video, sample_fps=2.0, chunk_s=2.0)
    assert [(c.chunk, c.start_frame, c.end_frame) for c in chunks] == [
        (0, 0, 20), (1, 20, 40), (2, 40, None)]
    assert all(c.fps == 10.0 and c.kind == "video" and c.size == video.stat().st_size
               for c in chunks)
    assert sum(c.expected_frames for c in chunks) == 50
    assert Chunk.from_dict(chunks[1].to_dict()) == chunks[1]
    assert len(plan_file(video, 2.0, 600.0)) == 1


def test_an_image_is_one_chunk_and_a_corrupt_file_one_chunk_that_will_fail(tmp_path):
    image = tmp_path / "a.jpg"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    corrupt = tmp_path / "bad.mp4"
    corrupt.write_bytes(b"\x00not a video" * 100)
    (one,) = plan_file(image, 2.0, 600.0)
    assert (one.kind, one.start_frame, one.end_frame) == ("image", 0, 1)
    (bad,) = plan_file(corrupt, 2.0, 600.0)
    assert bad.fps == 0.0 and bad.end_frame is None
    assert len(plan([image, corrupt], 2.0, 600.0)) == 2


@pytest.mark.parametrize("fps, sample_fps", [(10.0, 2.0), (15.0, 2.0), (29.97, 2.0),
                                             (30.0, 7.0), (10.0, 25.0), (24.0, 0.5)])
def test_sampling_is_the_files_not_the_chunks(fps, sample_fps):
    sampler = Sampler(fps, sample_fps)
    whole = sampler.frames(0, 900)
    per_chunk = [f for start in range(0, 900, 97)
                 for f in sampler.frames(start, min(start + 97, 900))]
    assert per_chunk == whole
    times = np.array(whole) / fps
    if sample_fps < fps:   # the first frame at or after each multiple of the period
        period = 1.0 / sample_fps
        expected = [int(np.ceil(round(j * period * fps, 9))) for j in range(len(whole))]
        assert whole == expected and np.all(np.diff(times) <= period + 1.0 / fps)
    else:
        assert whole == list(range(900))


def test_a_skipped_frame_moves_its_sample_to_the_next_readable_one():
    sampler = Sampler(10.0, 2.0)
    assert sampler.first_target(0) == 0 and sampler.first_target(3) == 5
    # frame 5 unreadable: frame 6 is taken for sample 1; the next sample is still frame 10
    assert sampler.target(sampler.next_sample(6)) == 10
