"""The command line: --help, precedence (defaults < --config < flags), presets, one-line
errors with exit code 2, and `python main.py` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import main
from conftest import ROOT, read_video, write_video
from realtime.config import SECTIONS, Config, field_help, load_config

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


def parse(*argv: str):
    return main.config_from_args(main.build_parser().parse_args(list(argv)))


def test_help_explains_every_flag_with_its_default_from_the_config_fields():
    text = " ".join(main.build_parser().format_help().split())
    for flag, section, key, _ in main.FLAGS:
        assert flag in text
        assert " ".join(field_help(section, key).split()) in text   # same words as the config
    for flag in ("--prompt", "--prompts-file", "--config"):
        assert flag in text
    assert "(default: 0.5; range 0..1)" in text and "(default: windows)" in text
    assert "q/Esc quit" in text and "143 SIGTERM" in text


def test_flags_override_the_config_file_which_overrides_the_defaults(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("detector: {method: dense, threshold: 0.3}\n"
                      "app: {prompts: [a cat, a dog], fullscreen: true, max_frames: 9}\n")
    config = parse("--config", str(preset), "--threshold", "0.7", "--prompt", "a bird",
                   "--no-fullscreen")
    assert config.detector.threshold == 0.7 and config.detector.method == "dense"
    assert config.app.prompts == ("a bird",) and config.app.fullscreen is False
    assert config.app.max_frames == 9 and config.detector.gate == 0.5
    assert parse("--config", str(preset)).app.prompts == ("a cat", "a dog")


def test_the_default_preset_lists_every_key_at_its_default():
    import dataclasses

    import yaml

    written = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    for section, cls in SECTIONS.items():
        keys = {f.name for f in dataclasses.fields(cls)}
        assert set(written[section]) == keys, (section, keys ^ set(written[section]))
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


def test_verify_is_auto_unless_a_flag_or_the_config_file_says_otherwise(tmp_path):
    assert parse().detector.verify == "auto" and parse().detector.verifies
    assert parse("--no-verify").detector.verifies is False
    assert parse("--method", "dense").detector.verifies is True
    assert parse("--method", "dense", "--no-verify").detector.verifies is False
    preset = tmp_path / "p.yaml"
    preset.write_text("detector: {method: dense, verify: true, verify_margin: 0.3}\n")
    config = parse("--config", str(preset))
    assert config.detector.verifies and config.detector.verify_margin == 0.3
    assert parse("--config", str(preset), "--no-verify").detector.verifies is False


def test_flag_values_reach_their_keys():
    config = parse("--source", "rtsp://cam/1", "--model", "m", "--device", "cpu", "--dtype",
                   "float16", "--method", "occlusion", "--gate", "0.3", "--tile-px", "64",
                   "--window-tiles", "2", "--stride-tiles", "2", "--headless", "--output",
                   "o.mp4", "--detections", "d.jsonl", "--max-frames", "5", "--realtime",
                   "--fullscreen", "--heatmap", "--no-hud", "--max-reconnects", "3",
                   "--snapshot-dir", "/tmp", "--demo", "--prompts-file", "p.txt")
    assert (config.model.name, config.model.device, config.model.dtype) == ("m", "cpu",
                                                                            "float16")
    d = config.detector
    assert (d.method, d.gate, d.tile_px, d.window_tiles, d.stride_tiles) == (
        "occlusion", 0.3, 64, 2, 2)
    a = config.app
    assert (a.source, a.headless, a.output, a.detections, a.max_frames, a.realtime,
            a.fullscreen, a.heatmap, a.hud, a.max_reconnects, a.snapshot_dir, a.demo,
            a.prompts_file) == ("rtsp://cam/1", True, "o.mp4", "d.jsonl", 5, True, True, True,
                                False, 3, "/tmp", True, "p.txt")
    assert parse("--tile-px", "auto").detector.tile_px == "auto"
    refined = parse("--no-refine", "--dense-input-px", "448").detector
    assert (refined.refine, refined.dense_input_px) == (False, 448)
    assert parse().detector.refine == "auto"
    assert parse("--refine").detector.refine is True      # always outline, no check
    track = parse("--no-track", "--min-hits", "3", "--hold-s", "1.5", "--smoothing", "0.2").track
    assert (track.enabled, track.min_hits, track.hold_s, track.smoothing) == (False, 3, 1.5, 0.2)
    assert parse().track.enabled == "auto" and parse("--track").track.enabled is True


@pytest.mark.parametrize("argv, fragment", [
    (["--threshold", "abc"], "argument --threshold: invalid float value: 'abc'"),
    (["--tile-px", "big"], "must be an integer or auto"),
    (["--method", "magic"], "invalid choice: 'magic'"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_are_one_line_and_exit_2(capsys, argv, fragment):
    with pytest.raises(SystemExit) as exit_info:
        main.build_parser().parse_args(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and fragment in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv, fragment", [
    (["--threshold", "1.5"], "detector.threshold: must be 0.0..1.0 (got 1.5)"),
    (["--tile-px", "0"], "detector.tile_px: must be 4..4096 (got 0)"),
    (["--window-tiles", "0"], "detector.window_tiles: must be 1..64 (got 0)"),
    (["--max-frames", "-1"], "app.max_frames: must be >= 0 (got -1)"),
])
def test_out_of_range_values_name_the_key_and_the_range(capsys, argv, fragment):
    assert main.main(argv + ["--headless", "--prompt", "x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [f"error: {fragment}"]


def test_config_file_errors_name_the_key(tmp_path, capsys):
    cases = {"detector: {treshold: 0.4}\n": "detector.treshold: unknown key",
             "app: {headless: maybe}\n": "app.headless: must be true or false",
             "detector: {threshold: 2}\n": "detector.threshold: must be 0.0..1.0",
             "detector: [1, 2\n": "not valid YAML"}
    for text, fragment in cases.items():
        preset = tmp_path / "bad.yaml"
        preset.write_text(text)
        assert main.main(["--config", str(preset)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and fragment in err[0], err
    assert "did you mean detector.threshold" in str(pytest.raises(
        Exception, load_config, _write(tmp_path, "detector: {treshold: 0.4}\n")).value)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("preset", CONFIGS, ids=lambda p: p.name)
def test_every_preset_validates(preset):
    load_config(preset)


def test_presets_say_what_they_promise():
    names = {p.stem for p in CONFIGS}
    assert {"default", "cpu", "gpu", "kiosk"} <= names
    cpu, gpu, kiosk = (load_config(ROOT / "configs" / f"{n}.yaml") for n in ("cpu", "gpu",
                                                                            "kiosk"))
    assert cpu.detector.method == "dense"
    assert (gpu.detector.method, gpu.detector.tile_px, gpu.detector.window_tiles,
            gpu.model.device) == ("windows", 80, 4, "cuda")
    assert kiosk.app.fullscreen and kiosk.app.hud and kiosk.app.max_reconnects == 0
    assert not kiosk.app.headless


def run_main(*argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


def test_headless_end_to_end_on_a_generated_video(tmp_path, tiny_model_dir):
    video = write_video(tmp_path / "in.mp4", 24, size=(160, 120), fps=12.0)
    out, dets = tmp_path / "out.mp4", tmp_path / "d.jsonl"
    done = run_main("--source", str(video), "--model", str(tiny_model_dir), "--device", "cpu",
                    "--prompt", "a red circle", "--prompt", "a blue square", "--method",
                    "dense", "--headless", "--output", str(out), "--detections", str(dets))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in dets.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(24))        # every frame once, in order
    assert [r["t"] for r in records] == pytest.approx([i / 12 for i in range(24)], abs=1e-6)
    for record in records:
        for det in record["detections"]:
            assert det["label"] in ("a red circle", "a blue square")
            assert 0.0 <= det["score"] <= 1.0 and len(det["box"]) == 4
            assert det["track_id"] >= 1 and det["state"] in ("confirmed", "coasting")
    assert read_video(out) == (24, 160, 120, 12.0)                 # same count, size and fps
    assert done.stderr.strip().splitlines()[-1].startswith("done: 24 frames processed")
    assert "Traceback" not in done.stderr


def test_input_error_from_the_real_command_is_one_line_without_traceback(tmp_path):
    done = run_main("--source", str(tmp_path / "missing.mp4"), "--prompt", "x", "--headless")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --source {tmp_path / 'missing.mp4'}: no such file or folder"]


@pytest.mark.slow
def test_demo_headless_is_deterministic_and_finds_the_scene_shapes(tmp_path):
    outputs = []
    for run in ("a", "b"):
        out, dets = tmp_path / f"{run}.mp4", tmp_path / f"{run}.jsonl"
        done = run_main("--demo", "--headless", "--max-frames", "30", "--output", str(out),
                        "--detections", str(dets), timeout_s=300)
        assert done.returncode == 0, done.stderr
        assert read_video(out)[:3] == (30, 640, 480)
        outputs.append(dets.read_text())
    assert outputs[0] == outputs[1]                                  # same run, same lines
    records = [json.loads(line) for line in outputs[0].splitlines()]
    assert [r["frame"] for r in records] == list(range(30))
    from realtime.live.source import demo_scene

    captions = set(demo_scene().prompts)
    found = {d["label"] for r in records for d in r["detections"]}
    assert found and found <= captions


@pytest.mark.parametrize("data", [b"\xff\xfe\x00\x01 binary", bytes(range(256)),
                                  "detector: {method: dense}  # caf\u00e9\n".encode("latin-1"),
                                  b"\x00\x01\x02\x03"],
                         ids=["utf16-bom", "all-bytes", "latin-1", "control-bytes"])
def test_a_binary_or_non_utf8_config_is_one_line_and_exit_2(tmp_path, capsys, data):
    preset = tmp_path / "binary.yaml"
    preset.write_bytes(data)
    assert main.main(["--config", str(preset), "--headless", "--prompt", "x"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --config {preset}: not "), err
