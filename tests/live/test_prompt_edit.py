"""The window's prompt edit line: the key state machine on its own, then through the render
loop (keys from a recording display): Enter applies, Esc cancels, no hotkeys while editing,
a refused set keeps the line open with the error, the JSON Lines file records each change."""

from __future__ import annotations

import json

from conftest import FakeFactory, RecordingDisplay, app_config, write_video
from realtime.live import app
from realtime.live.prompt_edit import EditLine, key_char, open_line, press

ENTER, ESC, BACKSPACE, TAB = 13, 27, 8, 9


def type_keys(line, keys):
    submitted = None
    for key in keys:
        line, submitted = press(line, key)
    return line, submitted


def test_typing_backspace_and_enter_submit_the_comma_separated_list():
    line = open_line(("a cat", "a dog"))
    assert line == EditLine("a cat, a dog")
    line, submitted = type_keys(line, [BACKSPACE] * 5 + [ord(c) for c in "a fox: red"])
    assert line.text == "a cat, a fox: red" and submitted is None
    line, submitted = press(line, ENTER)
    assert submitted == ["a cat", " a fox: red"] and line.text == "a cat, a fox: red"


def test_escape_cancels_and_nothing_is_submitted():
    assert press(EditLine("a cat"), ESC) == (None, None)
    assert press(EditLine("a cat"), 0xff1b) == (None, None)       # Escape as an X keysym


def test_key_codes_of_qt_and_x_become_characters():
    assert key_char(ord("q")) == "q" and key_char(ord(":")) == ":"
    assert key_char(-0x37) == "é"                     # Qt: É (0xc9) as a signed byte
    assert key_char(0x1000000 + 0x1F408) == "🐈"       # X keysym of a Unicode character
    for silent in (0xffe1, 0xff51, 0xffff, 0, 7, -1):   # Shift, Left, Delete, NUL, bell, none
        assert key_char(silent) == ""
    line, _ = type_keys(EditLine(""), [ord("a"), 0xffe1, 0xff51, 0x1000000 + 0x1F408])
    assert line.text == "a🐈"


def test_the_line_has_a_length_cap():
    line = EditLine("x" * 2000)
    assert press(line, ord("y"))[0].text == line.text


# --------------------------------------------------------------------------- in the app


def keys_from(start: int, *keys: int) -> dict[int, int]:
    """One key per shown frame from frame `start` on."""
    return {start + i: key for i, key in enumerate(keys)}


def text(s: str) -> list[int]:
    return [ord(c) for c in s]


def run_with_keys(tmp_path, keys, frames: int = 60):
    video = write_video(tmp_path / "in.mp4", frames)
    dets = tmp_path / "d.jsonl"
    display, factory, seen = RecordingDisplay(keys), FakeFactory(), {}

    def watch(loop):
        seen[display.shown] = (loop.edit, loop.view.heatmap, loop._overlay())

    code = app.run(app_config(source=str(video), detections=str(dets)),
                   detector_factory=factory, display=display, on_frame=watch)
    records = [json.loads(line) for line in dets.read_text(encoding="utf-8").splitlines()]
    return code, factory.built[0], records, seen


def test_p_opens_the_line_enter_applies_and_the_jsonl_records_the_change(tmp_path):
    keys = keys_from(3, ord("p"), *[BACKSPACE] * 12, *text("a dog, é:"), ENTER)
    code, detector, records, seen = run_with_keys(tmp_path, keys)
    assert code == 0 and detector.labels == ("a dog", "é:")
    enter_at = max(keys)
    assert seen[3][2].edit == "a red circle" and seen[15][2].edit == ""   # opened, then cleared
    assert seen[enter_at - 1][2].edit == "a dog, é:"
    assert seen[enter_at][0] is None and seen[enter_at + 5][2].prompts == "prompts: a dog, é:"
    assert seen[1][2].prompts == "prompts: a red circle"           # the HUD names them
    changes = [(r["frame"], r["prompts"], r["generation"]) for r in records if "prompts" in r]
    assert changes[0] == (0, ["a red circle"], 0) and changes[1][1:] == (["a dog", "é:"], 1)
    first_new = changes[1][0]
    assert all(d["label"] == "a red circle" for r in records[:first_new] for d in r["detections"])
    assert all(d["label"] == "a dog" for r in records[first_new:] for d in r["detections"])
    assert set(records[first_new + 1]) == {"frame", "t", "detections"}    # only once


def test_hotkeys_are_off_while_editing_and_escape_only_cancels(tmp_path):
    keys = keys_from(3, TAB, ord("q"), ord("h"), ord("+"), ESC, ord("h"))
    code, detector, records, seen = run_with_keys(tmp_path, keys)
    assert code == 0 and len(records) == 60                        # q and Esc did not quit
    assert seen[4][0].text == "a red circleq" and seen[5][0].text == "a red circleqh"
    assert seen[5][1] is False and seen[7][0] is None              # h typed, not toggled
    assert seen[8][1] is True                                      # h works again after Esc
    assert detector.labels == ("a red circle",) and 0.55 not in detector.thresholds


def test_a_refused_set_keeps_the_line_open_with_the_error_and_changes_nothing(tmp_path):
    too_many = ",".join(f"p{i}" for i in range(33))
    keys = keys_from(2, ord("p"), *[BACKSPACE] * 12, *text(too_many), ENTER)
    code, detector, records, seen = run_with_keys(tmp_path, keys, frames=140)
    enter_at = max(keys)
    line = seen[enter_at][0]
    assert line is not None and "33 prompts given; at most 32" in line.error
    assert seen[enter_at][2].edit_error == line.error
    assert detector.labels == ("a red circle",)
    assert [r["generation"] for r in records if "generation" in r] == [0]
