import logging

import pytest
import torch

from realtime.engine.prompts import PromptBank, PromptError, clean_prompts, read_prompts_file
from tests.stubs import StubClip


def test_clean_prompts_strips_merges_duplicates_and_keeps_order():
    assert clean_prompts([" a cat ", "a dog", "a cat", "", "  ", "chat noir 🐈", "a dog"]) == (
        "a cat", "a dog", "chat noir 🐈")


def test_no_usable_prompt_is_an_error_that_says_how_to_give_one():
    with pytest.raises(PromptError, match="--prompt TEXT"):
        clean_prompts(["", "   "])


def test_prompts_file_skips_blanks_and_comments(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# what to find\na red mug\n\n  a fluffy cat  \nün café\n", encoding="utf-8")
    assert read_prompts_file(str(path)) == ("a red mug", "a fluffy cat", "ün café")
    with pytest.raises(PromptError, match="cannot read"):
        read_prompts_file(str(tmp_path / "missing.txt"))


def test_background_prompts_that_the_user_asks_for_are_not_competitors():
    stub = StubClip()
    bank = PromptBank(stub, background=("a wall", "a person", "background"))
    encoded = []
    original = stub.encode_text
    stub.encode_text = lambda texts: encoded.append(list(texts)) or original(texts)
    text = bank.with_background(["Person", "the Wall"])
    assert encoded == [["Person", "the Wall", "background"]]
    assert text.shape[0] == 3


def test_templates_are_averaged_per_prompt():
    stub = StubClip()
    bank = PromptBank(stub, templates=("{}", "a photo of {}"))
    (white,) = bank.embed(["white"])
    # Both templates contain "white": the average is the white axis itself.
    assert torch.allclose(white, stub.encode_text(["white"])[0])


def test_too_long_prompt_warns(caplog):
    stub = StubClip()
    stub.max_text_tokens = 4
    with caplog.at_level(logging.WARNING, logger="realtime.engine.prompts"):
        PromptBank(stub).embed(["a very long prompt that goes on"])
    assert "the model reads the first 4" in caplog.text
