"""Run-time control: what front ends may change while the pipeline runs, in one place.

Every front end - the window's edit line, the web page, a REST call - calls
the same objects, which are safe to use from any thread:

- :class:`PromptController`: a request only validates the texts and leaves
  them in a single pending slot (the newest request wins; nothing is encoded
  by the caller).  The inference worker takes the pending set between two
  frames, has the detector encode the prompts it has not seen, swaps, and
  publishes the active set with its generation number.
- :class:`ViewControl`: threshold, pause and heat map for the render loop,
  which takes the newest value of each between two frames.
- :class:`LiveStatus`: what the render loop shows, for front ends to read.

:func:`validate_prompts` is the one check every prompt passes, wherever it
comes from (command line, prompts file, window, web, Python).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any, Iterable

from .config import DetectorConfig, field_range
from .detections import Detections

MAX_PROMPTS = 32
MAX_PROMPT_CHARS = 200
# Cc: C0/C1 controls (newline, tab, escape...); Cs: lone surrogates; Zl/Zp:
# line and paragraph separators.  Format characters (Cf) stay allowed: the
# zero-width joiner is part of many emoji.
_FORBIDDEN_CATEGORIES = ("Cc", "Cs", "Zl", "Zp")


class PromptError(ValueError):
    """A prompt set that cannot be used; the message is one line for the user."""


def validate_prompts(texts: Iterable[Any], none_hint: str = "") -> tuple[str, ...]:
    """The prompts to look for, checked and normalised, or a PromptError that says why.

    Each text is put in Unicode NFC form and stripped; empty texts are
    dropped and duplicates merged (the first one wins).  The result holds
    1..MAX_PROMPTS prompts of 1..MAX_PROMPT_CHARS characters without control
    characters.  Prompts longer than the model's token limit are accepted:
    the detector reads their first tokens and warns (see PromptBank).
    """
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise PromptError(f"prompts: must be a list of texts (got {type(texts).__name__})")
    seen: dict[str, None] = {}
    for number, text in enumerate(texts, 1):
        if not isinstance(text, str):
            raise PromptError(f"prompt {number}: must be a text (got {type(text).__name__})")
        text = unicodedata.normalize("NFC", text).strip()
        if text:
            _check_prompt(number, text)
            seen.setdefault(text, None)
    if not seen:
        raise PromptError("no prompt given" + (f": {none_hint}" if none_hint else ""))
    if len(seen) > MAX_PROMPTS:
        raise PromptError(f"{len(seen)} prompts given; at most {MAX_PROMPTS} at a time")
    return tuple(seen)


def _check_prompt(number: int, text: str) -> None:
    if len(text) > MAX_PROMPT_CHARS:
        raise PromptError(f"prompt {number} ({text[:20]!r}...): {len(text)} characters; at "
                          f"most {MAX_PROMPT_CHARS}")
    bad = next((c for c in text if unicodedata.category(c) in _FORBIDDEN_CATEGORIES), None)
    if bad is not None:
        raise PromptError(f"prompt {number} ({text[:20]!r}): contains the control character "
                          f"U+{ord(bad):04X}")


@dataclass(frozen=True)
class PromptSet:
    """A validated prompt set and its generation (0: the set the run started with)."""

    prompts: tuple[str, ...]
    generation: int
    warnings: tuple[str, ...] = ()      # e.g. a prompt the model reads only the start of


class PromptController:
    """The one place prompts change at run time (see the module docstring)."""

    def __init__(self, prompts: Iterable[str]) -> None:
        self._changed = threading.Condition()
        self._active = PromptSet(validate_prompts(prompts), 0)
        self._pending: PromptSet | None = None
        self._failed: tuple[int, str] = (-1, "")
        self._next_generation = 1

    @property
    def active(self) -> PromptSet:
        return self._active

    @property
    def pending(self) -> PromptSet | None:
        return self._pending

    @property
    def last_failure(self) -> tuple[int, str]:
        """(generation, message) of the newest set the detector could not apply."""
        return self._failed

    def request(self, texts: Iterable[Any]) -> int:
        """Ask for a new prompt set; its generation number.  PromptError: nothing changes."""
        prompts = validate_prompts(texts)
        with self._changed:
            generation = self._next_generation
            self._next_generation += 1
            self._pending = PromptSet(prompts, generation)   # replaces one not taken yet
            self._changed.notify_all()
        return generation

    # -- the inference worker's side ------------------------------------------------

    def take(self) -> PromptSet | None:
        """The newest pending set, or None; called between frames."""
        with self._changed:
            pending, self._pending = self._pending, None
            return pending

    def applied(self, prompt_set: PromptSet, warnings: Iterable[str] = ()) -> None:
        with self._changed:
            self._active = dataclasses.replace(prompt_set, warnings=tuple(warnings))
            self._changed.notify_all()

    def failed(self, prompt_set: PromptSet, message: str) -> None:
        with self._changed:
            self._failed = (prompt_set.generation, message)
            self._changed.notify_all()

    def wait(self, generation: int, timeout_s: float) -> PromptSet | None:
        """The active set once `generation` (or a newer one) is active; None on timeout
        or when the detector failed to apply it (see last_failure)."""
        with self._changed:
            self._changed.wait_for(lambda: self._active.generation >= generation
                                   or self._failed[0] >= generation, timeout_s)
            return self._active if self._active.generation >= generation else None


# --------------------------------------------------------------------------- the view


VIEW_KEYS = ("threshold", "paused", "heatmap")


class ControlError(ValueError):
    """A view change that cannot be applied; one line for the user."""


def check_view_change(name: str, value: Any) -> float | bool:
    """A validated value for one of VIEW_KEYS (the threshold's range is the config's)."""
    if name == "threshold":
        lo, hi = field_range(DetectorConfig, "threshold")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                math.isfinite(value) and lo <= value <= hi):
            raise ControlError(f"threshold: must be a number in {lo:g}..{hi:g} (got {value!r})")
        return round(float(value), 2)
    if name in ("paused", "heatmap"):
        if not isinstance(value, bool):
            raise ControlError(f"{name}: must be true or false (got {value!r})")
        return value
    raise ControlError(f"{name}: unknown setting (allowed: {', '.join(VIEW_KEYS)})")


class ViewControl:
    """Threshold, pause and heat-map changes for the render loop (newest value wins)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, float | bool] = {}

    def request(self, name: str, value: Any) -> None:
        checked = check_view_change(name, value)
        with self._lock:
            self._pending[name] = checked

    def take(self) -> dict[str, float | bool]:
        with self._lock:
            pending, self._pending = self._pending, {}
            return pending


@dataclass(frozen=True, eq=False)
class LiveStatus:
    """One shown frame as the render loop saw it (read by front ends such as the web view)."""

    frame_index: int
    captured_at: float                  # time.monotonic() when the frame was read
    capture_fps: float
    inference_fps: float
    latency_ms: float | None            # capture to result
    threshold: float
    paused: bool
    heatmap: bool
    frames_dropped: int                 # frames inference never saw (latest-frame-wins)
    detections: Detections | None
