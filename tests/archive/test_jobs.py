"""The index job's contract: resume, changed files, failing chunks and exit code 3,
an interrupted driver, clear input errors, missing extras (tiny random CLIP: plumbing)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import main
from archive_helpers import manifest_rows, run_main, short_video  # noqa: F401  (fixture)
from conftest import ROOT


def index(video, out, model, *extra) -> int:
    return run_main("index", "--source", video, "--out", out, "--model", model,
                    "--chunk-s", 1, "--dtype", "float32", *extra)


def files_by_chunk(out) -> dict[int, dict[str, int]]:
    return {r["chunk"]: {name: (out / name).stat().st_mtime_ns for name in r["files"]}
            for r in manifest_rows(out)}


def test_resume_redoes_only_a_deleted_chunk(short_video, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "idx"
    assert index(short_video, out, tiny_model_dir) == 0
    before = files_by_chunk(out)
    assert sorted(before) == [0, 1, 2]
    (out / manifest_rows(out)[1]["files"][1]).unlink()        # chunk 1's arrays file
    capsys.readouterr()
    assert index(short_video, out, tiny_model_dir, "--resume") == 0
    err = capsys.readouterr().err
    assert "1 chunks indexed" in err and "2 already complete" in err
    after = files_by_chunk(out)
    assert after[0] == before[0] and after[2] == before[2]
    assert all(after[1][name] != before[1].get(name) for name in after[1])
    assert [r["status"] for r in manifest_rows(out)] == ["ok"] * 3


def test_a_changed_file_is_indexed_again_and_an_unchanged_one_is_not(short_video, tmp_path,
                                                                    tiny_model_dir, capsys):
    out = tmp_path / "idx"
    video = tmp_path / "v.mp4"
    video.write_bytes(short_video.read_bytes())
    assert index(video, out, tiny_model_dir) == 0
    capsys.readouterr()
    assert index(video, out, tiny_model_dir, "--resume") == 0
    assert "0 chunks indexed" in capsys.readouterr().err
    stat = video.stat()
    os.utime(video, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert index(video, out, tiny_model_dir, "--resume") == 0
    assert "3 chunks indexed" in capsys.readouterr().err
    assert {r["mtime"] for r in manifest_rows(out)} == {video.stat().st_mtime}


def test_a_corrupt_file_is_one_manifest_error_exit_3_and_the_others_are_indexed(
        short_video, tmp_path, tiny_model_dir, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "good.mp4").write_bytes(short_video.read_bytes())
    (videos / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    out = tmp_path / "idx"
    assert index(videos, out, tiny_model_dir, "--max-attempts", 2) == 3
    err = capsys.readouterr().err
    assert "1 failed" in err and "broken.mp4 chunk 0" in err
    rows = manifest_rows(out)
    errors = [r for r in rows if r["status"] == "error"]
    assert len(errors) == 1 and errors[0]["path"].endswith("broken.mp4")
    assert errors[0]["attempts"] == 2 and "cannot open" in errors[0]["error"]
    assert [r["status"] for r in rows if r["path"].endswith("good.mp4")] == ["ok"] * 3


def test_an_existing_index_needs_resume_and_the_same_settings(short_video, tmp_path,
                                                             tiny_model_dir, capsys):
    out = tmp_path / "idx"
    assert index(short_video, out, tiny_model_dir) == 0
    capsys.readouterr()
    assert index(short_video, out, tiny_model_dir) == 2
    assert "already holds an index; pass --resume" in capsys.readouterr().err
    assert index(short_video, out, tiny_model_dir, "--resume", "--sample-fps", 5) == 2
    assert "resume it with the same values" in capsys.readouterr().err
    assert index(short_video, out, tiny_model_dir, "--resume", "--window-tiles", 2) == 2
    assert "another model or layout" in capsys.readouterr().err
    # without --model, --resume continues with the index's own model
    assert run_main("index", "--source", short_video, "--out", out, "--chunk-s", 1,
                    "--resume") == 0


@pytest.mark.parametrize("argv, words", [
    (["index", "--source", "nowhere/*.mp4", "--out", "x"], "matches no video"),
    (["index", "--out", "x"], "the following arguments are required: --source"),
    (["search", "--index", "nowhere", "--prompt", "a cat"], "not an index"),
    (["search", "--index", "."], "no prompt given"),
    (["index", "--source", "x.mp4", "--out", "x", "--sample-fps", "0"], "archive.sample_fps"),
])
def test_input_errors_are_one_line_and_exit_2(argv, words, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "manifest.jsonl").write_text("")     # "." is an index with no chunk
    try:
        code = main.main(argv)
    except SystemExit as usage:                      # argparse's own usage errors
        code = usage.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and words in err, err


@pytest.mark.parametrize("module, argv", [
    ("pyarrow", ["--out", "{out}"]),
    ("ray", ["--out", "{out}", "--ray", "local"]),
])
def test_a_missing_extra_is_one_line_saying_what_to_install(module, argv, short_video, tmp_path,
                                                           tiny_model_dir, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)    # import fails as if not installed
    monkeypatch.setitem(sys.modules, f"{module}.parquet", None)
    argv = [a.format(out=tmp_path / "idx") for a in argv]
    code = main.main(["index", "--source", str(short_video), "--model", str(tiny_model_dir),
                      *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == [f"error: {'--ray' if module == 'ray' else 'the archive index'}"
                                 f" needs the {module} package: pip install -r "
                                 "requirements-archive.txt"]


def test_help_documents_the_commands_and_their_exit_codes(capsys):
    for command in ("index", "search"):
        with pytest.raises(SystemExit):
            main.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "3 some chunks failed" in text and "130 Ctrl+C" in text
        assert "--model" in text and "--config" in text and "--window-tiles" in text
    with pytest.raises(SystemExit):
        main.main(["--help"])
    assert "index" not in capsys.readouterr().out.split("options:")[0]   # main usage as before


def test_an_interrupted_index_keeps_what_it_wrote_and_resume_finishes(short_video, tmp_path,
                                                                     tiny_model_dir):
    out = tmp_path / "idx"
    command = [sys.executable, str(ROOT / "main.py"), "index", "--source", str(short_video),
               "--out", str(out), "--model", str(tiny_model_dir), "--chunk-s", "1",
               "--sample-fps", "10", "--dtype", "float32"]
    process = subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
            (out / "manifest.jsonl").exists() and manifest_rows(out)):
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    rows = manifest_rows(out)
    if process.returncode == 0:
        pytest.skip("the job finished before the signal arrived")   # a very fast machine
    assert process.returncode == 130 and "--resume" in err.splitlines()[-1]
    assert 1 <= len(rows) < 3 and all(r["status"] == "ok" for r in rows)
    assert all((out / name).is_file() for r in rows for name in r["files"])
    assert not list(out.rglob("*.tmp-*"))
    done = {r["chunk"] for r in rows}
    assert index(short_video, out, tiny_model_dir, "--resume", "--sample-fps", 10) == 0
    rows = manifest_rows(out)
    assert [r["chunk"] for r in rows] == [0, 1, 2] and all(r["status"] == "ok" for r in rows)
    assert all(r["attempts"] == 1 for r in rows if r["chunk"] not in done)
