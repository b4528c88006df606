"""The benchmark command: a smoke run on tiny models, its layouts, report and ratios."""

from __future__ import annotations

import json

import pytest
import torch

from realtime import bench
from realtime.engine.model import resolve_dtype
from realtime.engine.tiles import grid_for_frame

TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=4)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from tools.clip_factory import tiny_clip

    return tiny_clip(tmp_path_factory.mktemp("bench-clip"), image_size=64, patch_size=16)


@pytest.mark.parametrize("preset, windows", [("gpu", 78), ("cpu", 21)])
def test_layout_presets_have_the_issue_window_counts(preset, windows):
    layout = bench.LAYOUTS[preset]
    grid = grid_for_frame(*layout["frame"], bench.detector_config("windows", layout))
    assert grid.num_windows == windows


def test_custom_layout_overrides_the_preset():
    args = bench.parse_args(["--layout", "cpu", "--tile-px", "80", "--frame", "640x480"])
    import torch

    layout = bench.resolve_layout(args, torch.device("cpu"))
    assert layout["preset"] is None and layout["tile_px"] == 80 and layout["frame"] == (640, 480)
    same = bench.resolve_layout(bench.parse_args(["--layout", "cpu", "--tile-px", "160"]),
                                torch.device("cpu"))
    assert same["preset"] == "cpu"


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        bench.parse_args(["--frame", "1280by720"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--methods", "windows,nonsense"])


def test_ratios_are_within_the_run():
    rows = [bench.Row.timed("walkthrough loop", "walkthrough", [1000.0]),
            bench.Row.timed("engine windows: Detector.detect", "engine windows", [10.0]),
            bench.Row.timed("engine windows: crops", "engine windows", [1.0], stage=True),
            bench.Row.timed("OWL-ViT eager", "owl", [20.0])]
    bench.add_ratios(rows)
    assert rows[1].speedup_vs_walkthrough == pytest.approx(100.0)
    assert rows[1].ratio_vs_owl_eager == pytest.approx(2.0)
    assert rows[2].speedup_vs_walkthrough is None  # stages get no ratios


def test_smoke_run_writes_the_report(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--model", str(tiny_model_dir), "--device", "cpu", "--frame", "192x128",
            "--tile-px", "32", "--window-tiles", "2", "--repeats", "1", "--warmup", "0",
            "--walkthrough-windows", "2", "--walkthrough-repeats", "1", "--video-frames", "4",
            "--owl", "tiny", "--owl-repeats", "1", "--occlusion", "--json", str(out)]
    assert bench.main(argv) == 0
    report = json.loads(out.read_text())

    assert {"meta", "layout", "prompts", "settings", "rows", "checks", "pipeline", "owl",
            "targets"} <= report.keys()
    meta = report["meta"]
    for key in ("date", "command", "device", "device_name", "dtype", "torch", "transformers"):
        assert meta[key]
    expected_dtype = str(resolve_dtype("auto", torch.device("cpu"))).removeprefix("torch.")
    assert meta["dtype"] == expected_dtype and "--owl tiny" in meta["command"]
    assert report["layout"]["windows"] == 15 and report["layout"]["frame"] == [192, 128]
    assert len(report["prompts"]) == 3

    rows = {r["name"]: r for r in report["rows"]}
    whole = ["walkthrough loop", "engine windows: Detector.detect",
             "engine dense: Detector.detect", "engine occlusion: Detector.detect",
             "pipeline: capture-to-result latency", "OWL-ViT eager"]
    for name in whole:
        assert rows[name]["median_ms"] > 0 and rows[name]["p95_ms"] > 0, name
        assert rows[name]["fps"] > 0 and rows[name]["speedup_vs_walkthrough"] > 0, name
        assert rows[name]["ratio_vs_owl_eager"] > 0, name
    for stage in (bench.UPLOAD, bench.CROPS, bench.VISION, bench.REFINE, bench.SCORING,
                  bench.POST):
        assert rows[f"engine windows: {stage}"]["median_ms"] > 0
    assert "extrapolated" in rows["walkthrough loop"]["note"]
    assert rows["OWL-ViT graph"]["median_ms"] is None and "n/a" in rows["OWL-ViT graph"]["note"]
    assert all(check["stages_match_detect"] for check in report["checks"].values())
    verify = rows["verify stage alone, 6 box crops"]      # 3 boxes x (own + context crop)
    assert verify["median_ms"] > 0 and verify["fps"] is None
    assert rows["verify stage alone, own crops only, 3 box crops"]["median_ms"] > 0
    fit = next(r for name, r in rows.items() if name.startswith("fit stage alone"))
    assert fit["median_ms"] > 0 and "66 box crops" in fit["name"]   # 3 x (17 centre + 5 sizes)
    segment = rows["segment stage alone (GrabCut, host), 0 box crops"]
    assert segment["median_ms"] > 0 and segment["fps"] is None
    assert rows[f"engine windows: {bench.VERIFY}"]["median_ms"] >= 0
    counts = report["checks"]["windows"]["verify"]
    assert 0 <= counts["kept"] <= counts["candidates"]
    assert report["checks"]["dense"]["verify"]["candidates"] >= 0   # dense verifies too

    table = capsys.readouterr().out
    assert "walkthrough loop" in table and "OWL-ViT graph" in table and "n/a on CPU" in table


def test_random_clip_builder_is_loadable(tmp_path):
    from realtime.engine.model import load_model
    from realtime.config import ModelConfig

    tower = dict(TINY_TOWER)
    directory = bench.build_random_clip(
        tmp_path / "clip", text=dict(tower, max_position_embeddings=16),
        vision=dict(tower, image_size=32, patch_size=16))
    assert bench.build_random_clip(directory) == directory  # cached: not rebuilt
    model = load_model(ModelConfig(name=str(directory), device="cpu"))
    text = model.hf_model.config.text_config
    assert text.eos_token_id == model.tokenizer.eos_token_id
    assert model.spec.image_px == 32 and model.encode_text(["a red circle"]).shape == (1, 512)


@pytest.mark.slow
def test_default_model_is_vit_b32_sized(tmp_path):
    from realtime.engine.model import load_model
    from realtime.config import ModelConfig

    directory = bench.build_random_clip(tmp_path / "b32")
    model = load_model(ModelConfig(name=str(directory), device="cpu"))
    vision = model.hf_model.config.vision_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size) == (768, 12, 32)
    assert model.spec.image_px == 224
    assert sum(p.numel() for p in model.hf_model.parameters()) > 140e6


def test_owl_image_path_matches_the_model():
    """The function the CUDA graph replays gives the model's own logits and boxes."""
    import numpy as np
    import torch

    model, processor = bench.build_owl("tiny", torch.device("cpu"), torch.float32)
    frame = np.random.default_rng(0).integers(0, 256, (96, 128, 3), np.uint8)
    prompts = ["a red circle", "a blue square"]
    inputs = processor(text=[prompts], images=frame[..., ::-1].copy(), return_tensors="pt")
    with torch.inference_mode():
        out = model(**inputs)
        mask = inputs["input_ids"].view(1, len(prompts), -1)[..., 0] > 0
        logits, boxes = bench.owl_image_path(model, out.text_embeds, mask)(inputs["pixel_values"])
    torch.testing.assert_close(logits, out.logits)
    torch.testing.assert_close(boxes, out.pred_boxes)


def test_targets_only_for_presets_and_b32():
    rows = [bench.Row.timed("walkthrough loop", "walkthrough", [1000.0]),
            bench.Row.timed("engine windows: Detector.detect", "engine windows", [200.0])]
    bench.add_ratios(rows)
    cpu = dict(bench.LAYOUTS["cpu"], preset="cpu")
    prompts = bench.DEFAULT_PROMPTS
    [target] = bench.evaluate_targets(cpu, prompts, rows, b32=True, owl_b32=True)
    assert target["measured"] == 5.0 and target["met"]
    assert bench.evaluate_targets(cpu, prompts, rows, b32=False, owl_b32=True) == []
    assert bench.evaluate_targets(dict(cpu, preset=None), prompts, rows, True, True) == []
    gpu = dict(bench.LAYOUTS["gpu"], preset="gpu")
    [target] = bench.evaluate_targets(gpu, prompts, rows, b32=True, owl_b32=False)
    assert target["goal"] == 500.0 and not target["met"]


def test_fit_candidates_are_window_sized_regions_around_the_shapes_inside_the_frame():
    import numpy as np

    shapes = np.array([[100, 100, 140, 140], [300, 300, 800, 500]], np.float32)
    regions = bench.window_regions(shapes, 360.0, 1280, 720).boxes
    assert regions[0].tolist() == [0.0, 0.0, 300.0, 300.0]      # 360 px around (120, 120), clipped
    assert regions[1].tolist() == [300.0, 220.0, 800.0, 580.0]  # wider than a window: kept so


def test_the_fit_mode_flag_reaches_the_detector_config():
    args = bench.parse_args(["--fit-mode", "zoom"])
    layout = bench.resolve_layout(args, torch.device("cpu"))
    assert bench.detector_config("windows", layout, args.fit_mode).fit_mode == "zoom"
    assert bench.parse_args([]).fit_mode == "crops"
