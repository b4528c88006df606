"""The box check: measured at load, kept per model and settings, on disk if asked."""

from dataclasses import replace
import os

import pytest

from realtime.config import DetectorConfig
from realtime.engine import boxcheck
from realtime.engine.boxcheck import (CROPS, PATCH_MAP, SEGMENT, ZOOM, BoxCheck, cache_key,
                                      check_scenes)
from realtime.engine.detector import Detector
from realtime.engine.fit import BoxFitter, ZoomFitter
from tests.stubs import StubClip


def test_the_way_with_the_best_boxes_is_chosen_and_a_tie_goes_to_the_cheaper_way():
    assert BoxCheck(((PATCH_MAP, 0.7), (CROPS, 0.5), (ZOOM, 0.6)), 6).choice == PATCH_MAP
    assert BoxCheck(((PATCH_MAP, 0.3), (CROPS, 0.6), (ZOOM, 0.5)), 6).choice == CROPS
    assert BoxCheck(((PATCH_MAP, 0.3), (CROPS, 0.4), (ZOOM, 0.5)), 6).choice == ZOOM
    assert BoxCheck(((PATCH_MAP, 0.5), (CROPS, 0.5), (ZOOM, 0.5)), 6).choice == CROPS
    assert BoxCheck(((PATCH_MAP, 0.0), (ZOOM, 0.0)), 6).choice == ZOOM
    assert BoxCheck(((PATCH_MAP, 0.5), (SEGMENT, 0.5), (CROPS, 0.5)), 6).choice == SEGMENT
    assert BoxCheck(((PATCH_MAP, 0.5), (SEGMENT, 0.4), (CROPS, 0.6)), 6).choice == CROPS
    assert "cut out by segmentation" in BoxCheck(((SEGMENT, 0.8),), 6).line()
    line = BoxCheck(((PATCH_MAP, 0.3), (CROPS, 0.6)), 6, cached=True).line()
    assert "fitted by crops" in line and "patch map 0.30, crops 0.60" in line
    assert "cached" in line and "\n" not in line


def test_the_check_scenes_are_fixed_and_hold_several_shapes():
    scenes = check_scenes()
    assert len(scenes) == boxcheck.CHECK_SCENES
    assert {s.frame.shape for s in scenes} == {(boxcheck.SCENE_H, boxcheck.SCENE_W, 3)}
    assert sum(len(s.labels) for s in scenes) > len(scenes)
    assert any(len(set(s.labels)) < len(s.labels) for s in scenes)   # two of one caption


def test_the_defaults_check_four_ways_and_use_the_chosen_one_with_no_prompts_left():
    detector = Detector((), DetectorConfig(), StubClip())
    check = detector.box_check
    assert [way for way, _ in check.quality] == [PATCH_MAP, SEGMENT, CROPS, ZOOM]
    assert all(0.0 <= iou <= 1.0 for _, iou in check.quality)
    assert detector.way == check.choice
    assert detector.method.use_fine is (check.choice == PATCH_MAP)
    if check.choice in (CROPS, ZOOM):
        assert type(detector.fitter) is {CROPS: BoxFitter, ZOOM: ZoomFitter}[check.choice]
    assert detector.labels == ()
    with pytest.raises(RuntimeError, match="no prompts"):
        detector(check_scenes()[0].frame)


@pytest.mark.parametrize("keys, ways", [({"refine": False}, [SEGMENT, CROPS, ZOOM]),
                                        ({"fit_mode": "segment"}, [PATCH_MAP, SEGMENT]),
                                        ({"fit_mode": "crops"}, [PATCH_MAP, CROPS]),
                                        ({"fit_mode": "zoom"}, [PATCH_MAP, ZOOM])])
def test_only_the_ways_the_settings_leave_open_are_measured(keys, ways):
    detector = Detector((), DetectorConfig(**keys), StubClip())
    assert [way for way, _ in detector.box_check.quality] == ways
    assert detector.way in ways


@pytest.mark.parametrize("keys, way", [({"refine": True}, PATCH_MAP),
                                       ({"refine": False, "fit_mode": "zoom"}, ZOOM),
                                       ({"refine": False, "fit_mode": "crops"}, CROPS),
                                       ({"refine": False, "fit_mode": "segment"}, SEGMENT),
                                       ({"fit": False}, PATCH_MAP),
                                       ({"method": "dense"}, PATCH_MAP)])
def test_settings_that_leave_one_way_run_no_check(keys, way, monkeypatch):
    monkeypatch.setattr(boxcheck, "measure", lambda *args: pytest.fail("check ran"))
    detector = Detector((), DetectorConfig(**keys), StubClip())
    assert detector.box_check is None and detector.way == way
    assert detector.outlines is (way == PATCH_MAP)


def test_the_verdict_is_cached_on_disk_per_model_and_settings(tmp_path, monkeypatch):
    first = Detector((), DetectorConfig(), StubClip(), check_cache_dir=tmp_path)
    assert not first.box_check.cached and len(list(tmp_path.glob("*.json"))) == 1
    monkeypatch.setattr(boxcheck, "measure", lambda *args: pytest.fail("measured again"))
    again = Detector((), DetectorConfig(), StubClip(), check_cache_dir=tmp_path)  # a new process
    assert again.box_check.cached and again.box_check.quality == first.box_check.quality
    monkeypatch.undo()
    other = Detector((), DetectorConfig(threshold=0.6), StubClip(), check_cache_dir=tmp_path)
    assert not other.box_check.cached and len(list(tmp_path.glob("*.json"))) == 2


def test_the_cache_key_follows_the_model_files_and_settings(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"1")
    model = StubClip()
    model.name = str(tmp_path)
    config = DetectorConfig()
    key = cache_key(model, config)
    assert cache_key(model, replace(config, tile_px=40)) != key
    assert cache_key(model, replace(config, fit_mode="crops")) != key
    (tmp_path / "model.safetensors").write_bytes(b"22")              # new weights
    assert cache_key(model, config) != key


def test_the_cache_key_follows_the_engine_code(monkeypatch):
    key = cache_key(StubClip(), DetectorConfig())
    monkeypatch.setattr(boxcheck, "engine_digest", lambda: "other code")
    assert cache_key(StubClip(), DetectorConfig()) != key


def test_an_unwritable_or_broken_cache_only_means_measuring_again(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    detector = Detector((), DetectorConfig(), StubClip(), check_cache_dir=blocked / "sub")
    assert detector.box_check is not None and not detector.box_check.cached
    key = cache_key(StubClip(), DetectorConfig())
    (tmp_path / f"{key}.json").write_text("{broken")
    again = Detector((), DetectorConfig(), StubClip(), check_cache_dir=tmp_path)
    assert not again.box_check.cached
    assert os.path.getsize(tmp_path / f"{key}.json") > len("{broken")   # rewritten whole


@pytest.mark.parametrize("keys, context", [({"refine": False, "fit_mode": "crops"}, 0.5),
                                           ({"refine": False, "fit_mode": "segment"}, 0.0),
                                           ({"refine": False, "fit_mode": "zoom"}, 0.0),
                                           ({"refine": True}, 0.5),
                                           ({"refine": False, "fit_mode": "zoom",
                                             "verify_context": 0.3}, 0.3)])
def test_the_context_crop_follows_the_way_unless_set(keys, context):
    detector = Detector((), DetectorConfig(**keys), StubClip())
    assert detector.verifier.context == context
