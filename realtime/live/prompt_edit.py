"""The window's prompt edit line: a small pure state machine over key codes.

`p` or Tab opens it with the active prompts, comma-separated; typed keys edit
it, Backspace deletes, Enter submits, Esc cancels.  While it is open no other
hotkey acts.  :func:`press` only computes the next state: the render loop
sends a submitted list to the prompt controller, and keeps the line open with
the error when the controller refuses it.

Key codes are those of ``cv2.waitKeyEx``: ASCII, Latin-1 as a negative signed
byte (Qt's backend), X keysyms (0xff.. for special keys, 0x1000000 + the code
point for other characters).  OpenCV's Qt backend reports letters without
their case (CLIP's tokenizer lower-cases text anyway).
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN_KEYS = (ord("p"), 9)                       # p, Tab
ENTER_KEYS = (10, 13, 0xff0d, 0xff8d)           # Enter, Return, keypad Enter
CANCEL_KEYS = (27, 0xff1b)
BACKSPACE_KEYS = (8, 127, 0xff08)
MAX_LINE_CHARS = 2000                           # 32 prompts of up to 200 characters, roughly
_UNICODE_KEYSYM = 0x1000000


@dataclass(frozen=True)
class EditLine:
    """The text being typed and the controller's last refusal of it ("" = none)."""

    text: str = ""
    error: str = ""


def open_line(prompts: tuple[str, ...]) -> EditLine:
    return EditLine(", ".join(prompts))


def split_prompts(text: str) -> list[str]:
    """"a cat, a dog" -> ["a cat", "a dog"] (empty pieces are dropped by validation)."""
    return text.split(",")


def key_char(key: int) -> str:
    """The character a key code types, or "" for keys that type nothing."""
    if key < -1:
        key &= 0xFF                             # Latin-1 as a signed byte
    if 32 <= key <= 126:
        return chr(key)
    if 160 <= key <= 255:
        return chr(key).lower()                 # Qt names Latin-1 letters in upper case
    if _UNICODE_KEYSYM + 32 <= key <= _UNICODE_KEYSYM + 0x10FFFF:
        return chr(key - _UNICODE_KEYSYM)
    return ""


def press(line: EditLine, key: int) -> tuple[EditLine | None, list[str] | None]:
    """The next state (None: closed) and, on Enter, the prompt list to submit."""
    if key in ENTER_KEYS:
        return line, split_prompts(line.text)
    if key in CANCEL_KEYS:
        return None, None
    if key in BACKSPACE_KEYS:
        return EditLine(line.text[:-1]), None
    char = key_char(key)
    if not char or len(line.text) >= MAX_LINE_CHARS:
        return line, None
    return EditLine(line.text + char), None
