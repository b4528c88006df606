"""Build small CLIP models and their processors offline.

No machine of this project can download CLIP weights, so tests and the
trainer (``tools/train_shapes_clip.py``) build everything here:

* :func:`write_tokenizer` writes a word-level BPE vocabulary that still
  tokenizes *any* text (unknown words fall back to byte-level characters);
* :func:`clip_config` / :func:`make_processor` give a small ``CLIPConfig``
  whose special-token ids match that tokenizer, and a ``CLIPProcessor``
  whose normalisation is deliberately *not* OpenAI's;
* :func:`tiny_clip` saves a tiny random ``CLIPModel`` + processor that
  ``CLIPModel.from_pretrained`` and ``AutoProcessor.from_pretrained`` load
  back offline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import torch
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

from realtime.config import DEFAULT_BACKGROUND_PROMPTS
from realtime.scenes import COLORS, SHAPES

__all__ = [
    "BOS",
    "EOS",
    "DEFAULT_WORDS",
    "MODEL_MAX_LENGTH",
    "write_tokenizer",
    "clip_config",
    "make_processor",
    "tiny_clip",
]

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
SUFFIX = "</w>"
MODEL_MAX_LENGTH = 32

DEFAULT_WORDS: tuple[str, ...] = tuple(
    dict.fromkeys(
        ["a", "an", "the", "of", "photo", "shape", "object", *COLORS, *SHAPES]
        + [word for prompt in DEFAULT_BACKGROUND_PROMPTS for word in prompt.split()]
    )
)

_SIZE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
_SMALL_TOWER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


# --------------------------------------------------------------------------- tokenizer


def _byte_alphabet() -> list[str]:
    """GPT-2's byte-to-unicode table: one printable symbol for each of the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            symbols.append(256 + extra)
            extra += 1
    return [chr(s) for s in symbols]


def _pieces(base: CLIPTokenizer, words: Iterable[str]) -> list[str]:
    """The byte-level pre-tokens of ``words``, exactly as the tokenizer will see them."""
    backend = base.backend_tokenizer
    pieces: dict[str, None] = {}
    for word in words:
        normalized = backend.normalizer.normalize_str(word)
        for piece, _ in backend.pre_tokenizer.pre_tokenize_str(normalized):
            pieces[piece] = None
    return list(pieces)


def _apply_merges(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """BPE: repeatedly merge the adjacent pair of lowest rank (leftmost on ties)."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get(pair, len(ranks)), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
        rank, i = min(pairs)
        if rank == len(ranks):
            break
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def _merges_for(pieces: Sequence[str]) -> tuple[list[tuple[str, str]], list[str]]:
    """Merges (in rank order) that turn every piece into one token, and the new tokens.

    A merge appended later has the lowest priority, so it can never change a
    piece that is already a single token: one pass over the pieces suffices.
    """
    ranks: dict[tuple[str, str], int] = {}
    tokens: list[str] = []
    for piece in pieces:
        symbols = _apply_merges([*piece[:-1], piece[-1] + SUFFIX], ranks)
        while len(symbols) > 1:
            pair = (symbols[0], symbols[1])
            ranks[pair] = len(ranks)
            tokens.append(pair[0] + pair[1])
            symbols = _apply_merges(symbols, ranks)
    return list(ranks), tokens


def write_tokenizer(
    directory: str | Path, words: Iterable[str] = DEFAULT_WORDS, model_max_length: int = MODEL_MAX_LENGTH
) -> CLIPTokenizer:
    """Write ``vocab.json`` and ``merges.txt`` into ``directory`` and return the tokenizer.

    The vocabulary holds every byte-level character bare and with ``</w>``
    (so any text, non-ASCII included, tokenizes), every word of ``words`` as
    one ``word</w>`` token (with the merges that build it), and the two
    special tokens last (``<|startoftext|>``, then ``<|endoftext|>``, which
    is also the padding token).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    alphabet = _byte_alphabet()
    vocab = {symbol: i for i, symbol in enumerate([*alphabet, *(a + SUFFIX for a in alphabet)])}
    base = CLIPTokenizer(vocab=dict(vocab), merges=[])
    merges, merged = _merges_for(_pieces(base, words))
    for token in [*merged, BOS, EOS]:
        vocab.setdefault(token, len(vocab))
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (directory / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


# --------------------------------------------------------------------------- model and processor


def _tower(prefix: str, sizes: dict[str, int]) -> dict[str, int]:
    """Sizes of one tower: shared keys, overridden by ``text_``/``vision_`` prefixed ones."""
    tower = dict(_SMALL_TOWER)
    tower.update({k: v for k, v in sizes.items() if k in _SIZE_KEYS})
    tower.update({k[len(prefix) :]: v for k, v in sizes.items() if k.startswith(prefix)})
    return tower


def clip_config(
    tokenizer: CLIPTokenizer, image_size: int = 64, patch_size: int = 8, **sizes: int
) -> CLIPConfig:
    """A small ``CLIPConfig`` matched to ``tokenizer`` (vocab size, special ids, length).

    ``sizes`` may hold ``hidden_size``, ``intermediate_size``,
    ``num_hidden_layers``, ``num_attention_heads`` (both towers), the same
    keys prefixed with ``text_`` or ``vision_`` (one tower), and
    ``projection_dim``.
    """
    unknown = [k for k in sizes if k.removeprefix("text_").removeprefix("vision_") not in (*_SIZE_KEYS, "projection_dim")]
    if unknown:
        raise TypeError(f"unknown size arguments: {unknown}")
    text = _tower("text_", sizes)
    vision = _tower("vision_", sizes)
    projection_dim = int(sizes.get("projection_dim", text["hidden_size"]))
    text_config = dict(
        text,
        vocab_size=len(tokenizer),
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        projection_dim=projection_dim,
    )
    vision_config = dict(
        vision, image_size=image_size, patch_size=patch_size, projection_dim=projection_dim
    )
    return CLIPConfig(
        text_config=text_config, vision_config=vision_config, projection_dim=projection_dim
    )


def make_processor(
    tokenizer: CLIPTokenizer,
    image_size: int = 64,
    image_mean: Sequence[float] = (0.5, 0.5, 0.5),
    image_std: Sequence[float] = (0.5, 0.5, 0.5),
) -> CLIPProcessor:
    """A ``CLIPProcessor``: shortest edge resized to ``image_size`` (bicubic), centre crop."""
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(image_mean),
        image_std=list(image_std),
    )
    return CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def tiny_clip(
    directory: str | Path,
    image_size: int = 64,
    patch_size: int = 8,
    words: Iterable[str] = DEFAULT_WORDS,
    seed: int = 0,
    **sizes: int,
) -> Path:
    """Save a tiny *random* ``CLIPModel`` and its processor into ``directory``.

    Weights depend only on ``seed`` and the sizes (the global torch RNG is left
    untouched).  Returns ``directory`` as a ``Path``.
    """
    directory = Path(directory)
    tokenizer = write_tokenizer(directory, words)
    config = clip_config(tokenizer, image_size, patch_size, **sizes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    model.save_pretrained(directory)
    make_processor(tokenizer, image_size).save_pretrained(directory)
    return directory
