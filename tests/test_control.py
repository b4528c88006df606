"""Run-time control: one validation for every prompt, the prompt controller's latest-wins
slot and generations, and the view changes the render loop takes."""

from __future__ import annotations

import threading
import unicodedata

import pytest

from realtime.control import (MAX_PROMPT_CHARS, MAX_PROMPTS, ControlError, PromptController,
                              PromptError, ViewControl, validate_prompts)


def test_prompts_are_normalised_stripped_and_merged():
    decomposed = unicodedata.normalize("NFD", "un café")
    assert decomposed != "un café"
    assert validate_prompts([f"  {decomposed} ", "un café", "", "a dog: brown", "🐈‍⬛ cat"]) == (
        "un café", "a dog: brown", "🐈‍⬛ cat")


@pytest.mark.parametrize("texts, fragment", [
    ([], "no prompt given"),
    (["  ", ""], "no prompt given"),
    ("a cat", "must be a list of texts"),
    (["a cat", 3], "prompt 2: must be a text"),
    (["x" * (MAX_PROMPT_CHARS + 1)], f"{MAX_PROMPT_CHARS + 1} characters; at most"),
    (["a\ncat"], "control character U+000A"),
    (["a cat", "tab\there"], "prompt 2 ('tab\\there'): contains the control character U+0009"),
    (["line\u2028break"], "U+2028"),
    ([f"p{i}" for i in range(MAX_PROMPTS + 1)], f"{MAX_PROMPTS + 1} prompts given"),
])
def test_bad_prompt_sets_are_refused_with_one_line(texts, fragment):
    with pytest.raises(PromptError) as error:
        validate_prompts(texts)
    assert fragment in str(error.value) and "\n" not in str(error.value)


def test_limits_themselves_are_allowed():
    prompts = [f"{i:02d}" + "x" * (MAX_PROMPT_CHARS - 2) for i in range(MAX_PROMPTS)]
    assert len(validate_prompts(prompts)) == MAX_PROMPTS


def test_the_newest_request_wins_and_each_gets_a_generation():
    control = PromptController(["a cat"])
    assert control.active.prompts == ("a cat",) and control.active.generation == 0
    first, second = control.request(["a dog"]), control.request(["a bird", "a fish"])
    assert (first, second) == (1, 2)
    taken = control.take()
    assert taken.prompts == ("a bird", "a fish") and taken.generation == 2
    assert control.take() is None                     # the dog was never applied
    control.applied(taken, ["a warning"])
    assert control.active.generation == 2 and control.active.warnings == ("a warning",)


def test_a_bad_request_changes_nothing():
    control = PromptController(["a cat"])
    control.request(["a dog"])
    with pytest.raises(PromptError):
        control.request(["bad\x00prompt"])
    assert control.take().prompts == ("a dog",)


def test_wait_returns_when_the_worker_applied_it_or_failed():
    control = PromptController(["a cat"])
    generation = control.request(["a dog"])

    def worker():
        control.applied(control.take())

    threading.Timer(0.05, worker).start()
    assert control.wait(generation, timeout_s=5.0).prompts == ("a dog",)
    failing = control.request(["a bird"])
    threading.Timer(0.05, lambda: control.failed(control.take(), "out of memory")).start()
    assert control.wait(failing, timeout_s=5.0) is None
    assert control.last_failure == (failing, "out of memory")
    assert control.active.prompts == ("a dog",)
    assert control.wait(99, timeout_s=0.01) is None


def test_view_changes_are_validated_and_the_newest_value_wins():
    view = ViewControl()
    view.request("threshold", 0.3)
    view.request("threshold", 0.72)
    view.request("paused", True)
    assert view.take() == {"threshold": 0.72, "paused": True}
    assert view.take() == {}
    for name, value, fragment in [("threshold", 1.5, "0..1"), ("threshold", "0.5", "number"),
                                  ("threshold", True, "number"), ("paused", 1, "true or false"),
                                  ("zoom", 2, "unknown setting")]:
        with pytest.raises(ControlError, match=fragment):
            view.request(name, value)
    assert view.take() == {}
