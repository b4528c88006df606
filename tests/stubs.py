"""A stand-in for ClipModel whose embeddings the tests control exactly.

Texts map to fixed axes of the embedding space: each known word gets its own
axis, everything else the "background" axis.  An image embeds as the mix of
the "white" axis and the background axis in proportion to the fraction of
bright pixels it holds, so geometry (where the white blobs are) fully decides
the scores.
"""

from __future__ import annotations

import torch

from realtime.engine.model import InputSpec

DIM = 8
AXES = {"white": 0, "black": 1, "red": 2}   # texts naming one of these get that axis
BACKGROUND_AXIS = 7


class StubClip:
    def __init__(self, image_px: int = 32, patch_px: int = 8, logit_scale: float = 100.0):
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.spec = InputSpec(image_px, patch_px, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 1 / 255,
                              "bilinear")
        self.logit_scale = logit_scale
        self.max_text_tokens = 77
        self.text_calls = 0
        self.image_batches: list[int] = []
        self.config = None

    def tokenizer(self, text):
        class _Ids:
            input_ids = text.split()
        return _Ids()

    def encode_text(self, texts):
        self.text_calls += 1
        out = torch.zeros(len(texts), DIM)
        for i, text in enumerate(texts):
            axis = next((a for word, a in AXES.items() if word in text), BACKGROUND_AXIS)
            out[i, axis] = 1.0
        return out

    def _embed(self, bright_fraction: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(bright_fraction), DIM)
        out[:, AXES["white"]] = bright_fraction
        out[:, BACKGROUND_AXIS] = 1.0 - bright_fraction
        return torch.nn.functional.normalize(out, dim=-1)

    def encode_images(self, pixels: torch.Tensor, any_size: bool = False,
                      bucket: bool = False) -> torch.Tensor:
        self.image_batches.append(len(pixels))
        bright = (pixels.mean(dim=1) > 0.5).float().mean(dim=(1, 2))
        return self._embed(bright)

    def patch_embeddings(self, pixels: torch.Tensor, variant: str = "maskclip") -> torch.Tensor:
        p = self.spec.patch_px
        cells = torch.nn.functional.avg_pool2d((pixels.mean(dim=1, keepdim=True) > 0.5).float(), p)
        return self._embed(cells.flatten())
