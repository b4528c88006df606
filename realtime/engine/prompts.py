"""Prompts: cleaning the user's texts and caching their CLIP text embeddings.

The text encoder runs when the prompt set changes, never per frame: each
distinct text is encoded once (all its templates in one batch with the other
new texts) and kept.
"""

from __future__ import annotations

import logging
from typing import Iterable, Sequence

import torch

from ..control import PromptError, validate_prompts  # noqa: F401 (PromptError: its old home)
from .model import ClipModel

log = logging.getLogger(__name__)


CLI_HINT = "pass --prompt TEXT (repeatable) or --prompts-file FILE with one prompt a line"


def clean_prompts(texts: Iterable[str] | str) -> tuple[str, ...]:
    """Strip whitespace, drop empty texts, merge duplicates (first one wins), and check
    the limits every prompt set obeys (realtime.control.validate_prompts).

    Labels in the output are the prompts as given, bar surrounding whitespace
    and Unicode normalisation (NFC).  A single string is one prompt (not one
    prompt per character).
    """
    if isinstance(texts, str):
        texts = (texts,)
    return validate_prompts(texts, none_hint=CLI_HINT)


def read_prompts_file(path: str) -> tuple[str, ...]:
    """One prompt per line; blank lines and lines starting with # are skipped."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except OSError as exc:
        raise PromptError(f"--prompts-file {path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise PromptError(f"--prompts-file {path}: not UTF-8 text") from None
    return tuple(line for line in lines if line and not line.startswith("#"))


def _bare(text: str) -> str:
    """Lower case, without a leading article: "A Person" and "person" say the same."""
    words = text.casefold().split()
    if words and words[0] in ("a", "an", "the"):
        words = words[1:]
    return " ".join(words)


class PromptBank:
    """Cached, template-averaged text embeddings for a CLIP model."""

    def __init__(self, model: ClipModel, templates: Sequence[str] = ("{}",),
                 background: Sequence[str] = ()) -> None:
        self.model = model
        self.templates = tuple(templates)
        self.background = tuple(background)
        self._cache: dict[str, torch.Tensor] = {}
        self.truncated: dict[str, int] = {}   # texts over the token limit: their token count

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), D) unit-norm embeddings; only texts not seen before are encoded."""
        new = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if new:
            self._warn_if_truncated(new)
            filled = [template.format(text) for text in new for template in self.templates]
            embeddings = self.model.encode_text(filled).view(len(new), len(self.templates), -1)
            # Prompt ensembling (Radford et al. 2021): average the template
            # embeddings of one prompt, then renormalise.
            averaged = torch.nn.functional.normalize(embeddings.mean(dim=1), dim=-1)
            self._cache.update(zip(new, averaged))
        return torch.stack([self._cache[t] for t in texts])

    def with_background(self, prompts: Sequence[str]) -> torch.Tensor:
        """Embeddings of the prompts followed by the background prompts that are not
        also prompts (a user may well look for "a wall" or "person")."""
        asked = {_bare(p) for p in prompts}
        background = [b for b in self.background if _bare(b) not in asked]
        return self.embed(list(prompts) + background)

    def warnings(self, texts: Sequence[str]) -> tuple[str, ...]:
        """One line for each of `texts` that the model reads only the start of."""
        limit = self.model.max_text_tokens
        return tuple(f"prompt {text!r} is {self.truncated[text]} tokens long; the model reads "
                     f"the first {limit}" for text in texts if text in self.truncated)

    def _warn_if_truncated(self, texts: Sequence[str]) -> None:
        limit = self.model.max_text_tokens
        for text in texts:
            for template in self.templates:
                length = len(self.model.tokenizer(template.format(text)).input_ids)
                if length > limit:
                    self.truncated[text] = length
                    log.warning("%s", self.warnings([text])[0])
                    break
