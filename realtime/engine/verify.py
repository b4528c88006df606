"""Box verification: each candidate box, cropped from the frame, classified by CLIP.

A window region's gate probability belongs to the windows, not to the box:
a 3 x 3-tile window sees a good part of the frame, so the window that makes
"a purple circle" certain may also cover a purple square next to it, and
when the refine pass splits that region into one box per object, every box
inherits the circle's certainty.  Verification asks CLIP about each box on
its own - a square crop around it, at the model's input size, all crops in
one batch - with the same softmax over the prompts and the background
prompts, and keeps the boxes whose own prompt reaches the gate.  This is
CLIP in the regime it was trained for (one object filling an image); the
box's probability and similarity are what the box then reports.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .boxes import Boxes
from .frames import normalise, resize
from .methods import unit_scores
from .model import ClipModel


def crop_squares(boxes: np.ndarray, frame_w: int, frame_h: int, margin: float) -> np.ndarray:
    """(N, 4) integer squares around each box, `margin` of its long side added on each side.

    A square that fits the frame is shifted inside it (real context rather
    than padding); a larger one stays centred on the box and reaches past the
    frame, and the part outside is padded when cropping.
    """
    long_side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    side = np.maximum(np.ceil(long_side * (1.0 + 2.0 * margin)), 1.0)
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    x0, y0 = np.round(centre_x - side / 2), np.round(centre_y - side / 2)
    fits = side <= min(frame_w, frame_h)
    x0 = np.where(fits, np.clip(x0, 0, frame_w - side), x0)
    y0 = np.where(fits, np.clip(y0, 0, frame_h - side), y0)
    return np.stack([x0, y0, x0 + side, y0 + side], axis=1).astype(np.int64)


class BoxVerifier:
    """Re-scores candidate boxes by classifying their crops (one batch per frame).

    Each box is classified on two crops: its own (`margin` of context) and one
    with more context (`context`, 0: none).  A textured patch of background
    can look like the prompt up close and rarely does among its surroundings,
    while an object stays itself in both; a box keeps the lower of its two
    probabilities, and so must pass the gate on both.
    """

    def __init__(self, model: ClipModel, margin: float, context: float = 0.0) -> None:
        self.model, self.margin, self.context = model, margin, context

    def crops(self, pixels: torch.Tensor, squares: np.ndarray) -> torch.Tensor:
        """(N, 3, S, S) normalised crops of a (1, 3, H, W) frame; outside the frame
        is the dataset mean (zero after normalising), as in the occlusion masks."""
        spec, size = self.model.spec, self.model.spec.image_px
        frame_h, frame_w = pixels.shape[-2:]
        out = []
        for x0, y0, x1, y1 in squares.tolist():
            scale = size / (x1 - x0)
            inner = pixels[..., max(y0, 0):min(y1, frame_h), max(x0, 0):min(x1, frame_w)]
            height = min(size, max(1, round(inner.shape[-2] * scale)))
            width = min(size, max(1, round(inner.shape[-1] * scale)))
            top = min(size - height, round((max(y0, 0) - y0) * scale))
            left = min(size - width, round((max(x0, 0) - x0) * scale))
            image = normalise(resize(inner, height, width, spec), spec)
            out.append(F.pad(image, (left, size - width - left, top, size - height - top)))
        return torch.cat(out)

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor, found: Boxes, text: torch.Tensor,
                 num_prompts: int, gate: float) -> Boxes:
        if len(found.boxes) == 0:
            return found
        probs, sims = self.scores(pixels, found, text, num_prompts)
        keep = probs >= gate
        return Boxes(found.boxes[keep], probs[keep], sims[keep], found.label_ids[keep])

    @torch.inference_mode()
    def scores(self, pixels: torch.Tensor, found: Boxes, text: torch.Tensor,
               num_prompts: int) -> tuple[np.ndarray, np.ndarray]:
        """(probability, similarity) of each box's own prompt: the lower probability
        of its own crop and its context crop, the similarity on its own crop."""
        margins = (self.margin, self.context) if self.context > 0 else (self.margin,)
        frame_w, frame_h = pixels.shape[-1], pixels.shape[-2]
        squares = np.concatenate([crop_squares(found.boxes, frame_w, frame_h, m)
                                  for m in margins])
        embeddings = self.model.encode_images(self.crops(pixels, squares), bucket=True)
        sims, probs = unit_scores(embeddings, text, num_prompts, self.model.logit_scale)
        rows = torch.arange(len(squares), device=sims.device)
        labels = torch.as_tensor(np.tile(found.label_ids, len(margins)), device=sims.device)
        both = torch.stack([probs[rows, labels], sims[rows, labels]]).float().cpu().numpy()
        both = both.reshape(2, len(margins), len(found.boxes))
        return both[0].min(axis=0), both[1, 0]
