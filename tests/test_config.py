import dataclasses

import pytest

from realtime.config import (Config, ConfigError, DetectorConfig, ModelConfig, config_from_dict,
                             field_help, load_config)


@pytest.mark.parametrize("data, message", [
    ({"detector": {"tile_px": 0}}, r"detector\.tile_px: must be 4\.\.4096 \(got 0\)"),
    ({"detector": {"threshold": 1.5}}, r"detector\.threshold: must be 0\.0\.\.1\.0"),
    ({"detector": {"gate": -0.1}}, r"detector\.gate: must be 0\.0\.\.1\.0"),
    ({"detector": {"window_tiles": "3"}}, r"detector\.window_tiles: must be an integer"),
    ({"detector": {"tile_px": "big"}}, r"detector\.tile_px: must be an integer or auto"),
    ({"detector": {"method": "magic"}}, r"detector\.method: must be one of windows, dense"),
    ({"detector": {"templates": ["a photo"]}}, r"detector\.templates: each template"),
    ({"detector": {"similarity_range": [0.4, 0.1]}}, r"detector\.similarity_range"),
    ({"detector": {"tilepx": 80}}, r"detector\.tilepx: unknown key .*did you mean detector\.tile_px"),
    ({"model": {"dtype": "int8"}}, r"model\.dtype: must be one of auto, float32"),
    ({"model": {"name": ""}}, r"model\.name: must not be empty"),
    ({"app": {"headless": "yes"}}, r"app\.headless: must be true or false"),
    ({"app": {"prompts": "a cat"}}, r"app\.prompts: must be a list of str"),
    ({"camera": {}}, r"camera: unknown section"),
    ({"detector": [1, 2]}, r"detector: must be a mapping"),
])
def test_bad_values_name_the_key_and_the_allowed_range(data, message):
    with pytest.raises(ConfigError, match=message):
        config_from_dict(data)


def test_values_are_coerced_and_kept():
    config = config_from_dict({"detector": {"tile_px": 80, "threshold": 1, "templates": ["{}"]},
                               "app": {"prompts": ["a cat", "a dog"]}})
    assert config.detector.tile_px == 80
    assert config.detector.threshold == 1.0 and isinstance(config.detector.threshold, float)
    assert config.app.prompts == ("a cat", "a dog")
    assert config.model == ModelConfig()


def test_layering_keeps_earlier_values():
    base = config_from_dict({"detector": {"window_tiles": 4}})
    layered = config_from_dict({"detector": {"threshold": 0.6}}, base)
    assert (layered.detector.window_tiles, layered.detector.threshold) == (4, 0.6)


def test_python_construction_is_validated_too():
    with pytest.raises(ConfigError, match="detector.stride_tiles"):
        DetectorConfig(stride_tiles=0)
    with pytest.raises(ConfigError, match="detector.threshold"):
        dataclasses.replace(DetectorConfig(), threshold=2.0)


def test_yaml_file_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("detector:\n  window_tiles: [\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("model:\n  device: cpu\ndetector:\n  method: dense\n")
    config = load_config(good)
    assert (config.model.device, config.detector.method) == ("cpu", "dense")


def test_every_field_has_help():
    for section, cls in (("model", ModelConfig), ("detector", DetectorConfig)):
        for f in dataclasses.fields(cls):
            assert len(field_help(section, f.name)) > 10


def test_defaults_are_valid():
    assert Config().detector.method == "windows"


def test_verify_context_auto_is_a_context_crop_for_windows_only():
    assert DetectorConfig().context_margin == 0.5
    assert DetectorConfig(method="dense").context_margin == 0.0
    assert DetectorConfig(method="occlusion").context_margin == 0.0
    assert DetectorConfig(method="dense", verify_context=0.3).context_margin == 0.3
    with pytest.raises(ConfigError, match="verify_context"):
        DetectorConfig(verify_context="wide")
    with pytest.raises(ConfigError, match="verify_context"):
        DetectorConfig(verify_context=-1.0)
