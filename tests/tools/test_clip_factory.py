"""tools/clip_factory.py: offline tokenizer and tiny random CLIP models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, CLIPModel, CLIPTokenizer

from tools.clip_factory import BOS, DEFAULT_WORDS, EOS, clip_config, tiny_clip, write_tokenizer

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> CLIPTokenizer:
    return write_tokenizer(tmp_path_factory.mktemp("tok"), DEFAULT_WORDS)


@pytest.fixture(scope="module", params=[64, 96])
def tiny(request, tmp_path_factory):
    path = tiny_clip(tmp_path_factory.mktemp(f"clip{request.param}"), image_size=request.param)
    return request.param, path


def test_tokenizer_files(tmp_path):
    write_tokenizer(tmp_path, ["red", "circle"])
    vocab = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))
    merges = (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()
    assert merges[0] == "#version: 0.2"
    assert {"red</w>", "circle</w>", BOS, EOS} <= set(vocab)
    for char in "az09!~":
        assert char in vocab and char + "</w>" in vocab
    assert sorted(vocab.values()) == list(range(len(vocab)))
    assert vocab[EOS] == len(vocab) - 1  # highest id, like OpenAI's tokenizer


def test_known_words_are_single_tokens(tokenizer):
    for word in DEFAULT_WORDS:
        ids = tokenizer(word)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
        assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == [word + "</w>"]
    tokens = tokenizer.tokenize("A Red  CIRCLE")
    assert tokens == ["a</w>", "red</w>", "circle</w>"]


@pytest.mark.parametrize("text", ["zebra", "a zebra on the moon", "café", "猫", "🙂 x2", "naïve Ünïcode"])
def test_any_text_tokenizes(tokenizer, text):
    ids = tokenizer(text)["input_ids"]
    unk = tokenizer.unk_token_id
    assert len(ids) > 2 and unk not in ids[1:-1]  # nothing falls back to the unknown token
    assert tokenizer.decode(ids, skip_special_tokens=True).replace(" ", "") == text.lower().replace(" ", "")


def test_unknown_word_is_split_into_characters(tokenizer):
    assert tokenizer.tokenize("zebra") == ["z", "e", "b", "r", "a</w>"]


def test_long_text_is_truncated_to_model_max_length(tokenizer):
    ids = tokenizer(" ".join(["circle"] * 100), truncation=True)["input_ids"]
    assert len(ids) == tokenizer.model_max_length == 32


def test_config_matches_tokenizer(tokenizer):
    config = clip_config(tokenizer, 64, 8, hidden_size=48, vision_num_hidden_layers=3)
    text = config.text_config
    assert text.vocab_size == len(tokenizer)
    assert (text.bos_token_id, text.eos_token_id, text.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert text.max_position_embeddings >= tokenizer.model_max_length
    assert text.hidden_size == config.vision_config.hidden_size == 48
    assert config.vision_config.num_hidden_layers == 3 and text.num_hidden_layers == 2
    with pytest.raises(TypeError):
        clip_config(tokenizer, 64, 8, bogus=1)


def test_tiny_clip_round_trips_offline(tiny, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    size, path = tiny
    model = CLIPModel.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    assert model.config.vision_config.image_size == size and model.config.vision_config.patch_size == 8
    images = processor.image_processor
    assert images.crop_size["height"] == images.crop_size["width"] == size
    assert images.size["shortest_edge"] == size
    assert not np.allclose(images.image_mean, OPENAI_CLIP_MEAN)
    assert processor.tokenizer.model_max_length <= model.config.text_config.max_position_embeddings

    frame = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    inputs = processor(text=["a red circle", "a zebra"], images=[frame], return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (1, 3, size, size)
    with torch.inference_mode():
        out = model(**inputs)
        dense = model.get_image_features(
            pixel_values=torch.zeros(1, 3, size, size + 16), interpolate_pos_encoding=True)
    assert out.logits_per_image.shape == (1, 2)
    assert torch.isfinite(out.logits_per_image).all()
    assert dense.pooler_output.shape[-1] == model.config.projection_dim


def test_tiny_clip_is_deterministic(tmp_path):
    a = CLIPModel.from_pretrained(tiny_clip(tmp_path / "a", seed=3))
    b = CLIPModel.from_pretrained(tiny_clip(tmp_path / "b", seed=3))
    c = CLIPModel.from_pretrained(tiny_clip(tmp_path / "c", seed=4))
    pa, pb, pc = (m.text_projection.weight for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)


def test_text_features_pool_at_the_eos_token(tiny):
    _, path = tiny
    model = CLIPModel.from_pretrained(path).eval()
    tokenizer = AutoProcessor.from_pretrained(path).tokenizer
    texts = ["a red circle", "a blue circle", "a red circle on the floor"]
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    assert (tokens["input_ids"] == model.config.text_config.eos_token_id).any(dim=1).all()
    with torch.inference_mode():
        out = model.get_text_features(**tokens)
    features = out if isinstance(out, torch.Tensor) else out.pooler_output
    # pooling at a fixed position (e.g. BOS, as a wrong eos id would) makes all rows equal
    assert not torch.allclose(features[0], features[1], atol=1e-5)
    assert not torch.allclose(features[0], features[2], atol=1e-5)
    # padding does not change a text's embedding: it is read at its own first EOS
    alone = tokenizer(texts[:1], return_tensors="pt")
    with torch.inference_mode():
        single = model.get_text_features(**alone)
    single = single if isinstance(single, torch.Tensor) else single.pooler_output
    torch.testing.assert_close(single[0], features[0], atol=1e-5, rtol=1e-4)
