"""The patch-map check: measured at load, kept per model and settings, on disk if asked."""

from dataclasses import replace
import os

import pytest

from realtime.config import DetectorConfig
from realtime.engine import patchcheck
from realtime.engine.detector import Detector
from realtime.engine.patchcheck import PatchCheck, cache_key, check_scenes
from tests.stubs import StubClip


def test_the_patch_map_outlines_boxes_only_where_its_boxes_beat_the_crop_fit():
    assert PatchCheck(0.7, 0.5, 6).trusted
    assert not PatchCheck(0.3, 0.6, 6).trusted
    assert not PatchCheck(0.5, 0.5, 6).trusted          # a tie: the fit needs no patch tokens
    line = PatchCheck(0.3, 0.6, 6, cached=True).line()
    assert "fitted by crops" in line and "patch map 0.30, crop fit 0.60" in line
    assert "cached" in line and "\n" not in line


def test_the_check_scenes_are_fixed_and_hold_several_shapes():
    scenes = check_scenes()
    assert len(scenes) == patchcheck.CHECK_SCENES
    assert {s.frame.shape for s in scenes} == {(patchcheck.SCENE_H, patchcheck.SCENE_W, 3)}
    assert sum(len(s.labels) for s in scenes) > len(scenes)
    assert any(len(set(s.labels)) < len(s.labels) for s in scenes)   # two of one caption


def test_a_detector_with_auto_refine_runs_the_check_and_puts_its_prompts_back():
    detector = Detector((), DetectorConfig(), StubClip())
    check = detector.patch_check
    assert check is not None and 0.0 <= check.patch_map_iou <= 1.0
    assert detector.outlines is check.trusted and detector.method.use_fine is check.trusted
    assert detector.labels == ()
    with pytest.raises(RuntimeError, match="no prompts"):
        detector(check_scenes()[0].frame)


@pytest.mark.parametrize("keys, outlines", [({"refine": True}, True), ({"refine": False}, False),
                                            ({"fit": False}, True),
                                            ({"method": "dense"}, True)])
def test_a_set_refine_or_nothing_to_fit_runs_no_check(keys, outlines, monkeypatch):
    monkeypatch.setattr(patchcheck, "measure", lambda detector: pytest.fail("check ran"))
    detector = Detector((), DetectorConfig(**keys), StubClip())
    assert detector.patch_check is None and detector.outlines is outlines


def test_the_verdict_is_cached_on_disk_per_model_and_settings(tmp_path, monkeypatch):
    first = Detector((), DetectorConfig(), StubClip(), check_cache_dir=tmp_path)
    assert not first.patch_check.cached and len(list(tmp_path.glob("*.json"))) == 1
    monkeypatch.setattr(patchcheck, "measure", lambda detector: pytest.fail("measured again"))
    again = Detector((), DetectorConfig(), StubClip(), check_cache_dir=tmp_path)  # a new process
    assert again.patch_check.cached
    assert (again.patch_check.patch_map_iou, again.patch_check.fit_iou) == (
        first.patch_check.patch_map_iou, first.patch_check.fit_iou)
    monkeypatch.undo()
    other = Detector((), DetectorConfig(threshold=0.6), StubClip(), check_cache_dir=tmp_path)
    assert not other.patch_check.cached and len(list(tmp_path.glob("*.json"))) == 2


def test_the_cache_key_follows_the_model_files_and_settings(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"1")
    model = StubClip()
    model.name = str(tmp_path)
    config = DetectorConfig()
    key = cache_key(model, config)
    assert cache_key(model, replace(config, refine=True)) == key   # refine is what is decided
    assert cache_key(model, replace(config, tile_px=40)) != key
    (tmp_path / "model.safetensors").write_bytes(b"22")              # new weights
    assert cache_key(model, config) != key


def test_an_unwritable_or_broken_cache_only_means_measuring_again(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    detector = Detector((), DetectorConfig(), StubClip(), check_cache_dir=blocked / "sub")
    assert detector.patch_check is not None and not detector.patch_check.cached
    key = cache_key(StubClip(), DetectorConfig())
    (tmp_path / f"{key}.json").write_text("{broken")
    again = Detector((), DetectorConfig(), StubClip(), check_cache_dir=tmp_path)
    assert not again.patch_check.cached
    assert os.path.getsize(tmp_path / f"{key}.json") > len("{broken")   # rewritten whole
