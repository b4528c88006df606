"""Train the small offline "shapes" CLIP on synthetic scenes (realtime/scenes.py).

No machine of this project can download CLIP weights, so the demo and the
tests that need a model with real meaning use this one.  It is a plain
``CLIPModel`` (ViT, 64 px input, 8 px patches) saved with ``save_pretrained``
next to a ``CLIPProcessor``, so it loads like any Hub checkpoint.

What the images imitate (see ``realtime/engine/methods.py``):

* windows:  square crops of 1/4 .. 2/3 of a scene's short side, resized to
  64 px (bicubic antialiased like PIL/torch, sometimes INTER_AREA);
* classify: whole single-shape frames, shortest edge to 64 px, centre crop;
* dense:    whole scenes at 64 px on the short side (both sides multiples of
  the patch, position embeddings interpolated), read through MaskCLIP's
  value path of the last block.

Targets are soft distributions over the 24 captions plus "background": a
shape counts fully once >= 70 % of its pixels are in the crop, partly
(linearly) from 10 % up; several full shapes share the mass; a crop without
shape pixels is background (spread over all DEFAULT_BACKGROUND_PROMPTS).
Each image is scored against the embeddings of *all* distinct texts of a
caption family (never in-batch captions, so repeated captions in a batch are
no false negatives) with a soft-target cross-entropy at the learned
``logit_scale``.  An auxiliary loss trains the MaskCLIP patch tokens of the
whole scenes (patch >= 50 % inside a shape -> its caption, patch without shape
pixels -> background).

Usage::

    python tools/train_shapes_clip.py --out models/shapes-clip --steps 2000
    python tools/train_shapes_clip.py --out models/shapes-clip --eval-only
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime.config import DEFAULT_BACKGROUND_PROMPTS  # noqa: E402
from realtime.engine.model import maskclip_head, maskclip_patch_tokens, pooled  # noqa: E402
from realtime.scenes import (  # noqa: E402
    BACKGROUND_STYLES,
    COLORS,
    DEFAULT_MAX_ANGLE,
    SHAPES,
    Scene,
    all_captions,
    random_scene,
)
from tools.clip_factory import DEFAULT_WORDS, clip_config, make_processor, write_tokenizer  # noqa: E402

# The bundled model's geometry; --image-px, --patch-px, --mean and --std make others
# (the contrastive-only held-out models: see models/README.md).
IMAGE_SIZE = 64
PATCH_SIZE = 8
MEAN = (0.5, 0.5, 0.5)
STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Geometry:
    """How the model sees images: square input side, patch side, normalisation."""

    image_px: int = IMAGE_SIZE
    patch_px: int = PATCH_SIZE
    mean: tuple[float, float, float] = MEAN
    std: tuple[float, float, float] = STD


GEOMETRY = Geometry()
MODEL_SIZES = dict(
    vision_hidden_size=128,
    vision_intermediate_size=512,
    vision_num_hidden_layers=4,
    vision_num_attention_heads=4,
    text_hidden_size=128,
    text_intermediate_size=512,
    text_num_hidden_layers=3,
    text_num_attention_heads=4,
    projection_dim=128,
)
ASPECTS = {"4:3": ((320, 240), (640, 480)), "16:9": ((1280, 720), (640, 360))}
SHAPE_SIZES = (0.10, 0.45)  # of the short side
CROP_SIZES = (0.25, 2 / 3)  # of the short side
SHAPE_CROP = (1.1, 2.5)  # crops around a shape: side / the shape's box side
FULL, SEEN = 0.70, 0.10  # fraction of a shape inside an image: counts fully / at all
CAPTIONS = all_captions()
N_CLASSES = len(CAPTIONS) + 1  # the captions, then "background"
BG = len(CAPTIONS)
CAPTION_INDEX = {c: i for i, c in enumerate(CAPTIONS)}


# --------------------------------------------------------------------------- texts


@dataclass(frozen=True)
class Family:
    """Texts scored together in one softmax, and how class targets map onto them."""

    name: str
    texts: tuple[str, ...]
    projection: np.ndarray  # (N_CLASSES, len(texts)): class distribution -> text distribution
    weight: float


def _family(name: str, names: list[str], of_caption, weight: float) -> Family:
    """``of_caption(color, kind)`` names the text a caption maps to."""
    n_bg = len(DEFAULT_BACKGROUND_PROMPTS)
    texts = (*names, *DEFAULT_BACKGROUND_PROMPTS)
    projection = np.zeros((N_CLASSES, len(texts)), dtype=np.float32)
    for i, (color, kind) in enumerate((c, k) for c in COLORS for k in SHAPES):
        projection[i, names.index(of_caption(color, kind))] = 1.0
    projection[BG, len(names) :] = 1.0 / n_bg
    return Family(name, texts, projection, weight)


def text_families() -> tuple[Family, ...]:
    """"a red circle" (the form tests type) first and weighted most, then variants."""
    bare = [f"{c} {k}" for c in COLORS for k in SHAPES]
    kinds = [f"a {k}" for k in SHAPES]
    colors = [f"a {c} shape" for c in COLORS]
    return (
        _family("main", list(CAPTIONS), lambda c, k: f"a {c} {k}", 1.0),
        _family("bare", bare, lambda c, k: f"{c} {k}", 0.15),
        _family("kind", kinds, lambda c, k: f"a {k}", 0.15),
        _family("color", colors, lambda c, k: f"a {c} shape", 0.15),
    )


# --------------------------------------------------------------------------- data


def _ramp(fraction: np.ndarray) -> np.ndarray:
    """How much a shape with ``fraction`` of its pixels in view counts (0..1)."""
    return np.clip((fraction - SEEN) / (FULL - SEEN), 0.0, 1.0)


def class_target(scene: Scene, counts: np.ndarray, inside: np.ndarray) -> tuple[np.ndarray, float]:
    """Soft class distribution of a view that holds ``inside[i]`` of ``counts[i]`` pixels
    of shape i, and its sample weight (1 when unambiguous, 0.5 otherwise)."""
    target = np.zeros(N_CLASSES, dtype=np.float32)
    if inside.sum() == 0:
        target[BG] = 1.0
        return target, 1.0
    share = _ramp(inside / np.maximum(counts, 1))
    for i, w in enumerate(share):
        target[CAPTION_INDEX[scene.labels[i]]] += w
    target[BG] = 1.0 - share.max()
    target /= target.sum()
    clean = bool(np.all((inside == 0) | (share == 1)))  # every shape in view is whole
    return target, 1.0 if clean else 0.5


def _shape_counts(scene: Scene, region: tuple[slice, slice] | None = None) -> np.ndarray:
    index = scene.index_map if region is None else scene.index_map[region]
    return np.bincount(index.ravel().astype(np.int64) + 1, minlength=len(scene.shapes) + 1)[1:]


def resize_rgb(bgr: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """BGR crop -> RGB uint8 at (height, width): antialiased bicubic (like the
    detector's resize) most of the time, INTER_AREA otherwise."""
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if rng.random() < 0.3:
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.BICUBIC))


def dense_size(width: int, height: int, geometry: Geometry = GEOMETRY) -> tuple[int, int]:
    """(w, h) of the dense input: short side the input size, both multiples of the patch."""
    patch = geometry.patch_px
    scale = geometry.image_px / min(width, height)
    snap = lambda v: max(patch, int(round(v * scale / patch)) * patch)
    return snap(width), snap(height)


def centre_region(height: int, width: int) -> tuple[slice, slice]:
    """The part of a frame that CLIP's whole-image preprocessing (shortest edge to the
    input size, centre crop) keeps."""
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return slice(top, top + side), slice(left, left + side)


def patch_targets(scene: Scene, index_map: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-patch class targets and weights of the view ``index_map`` (of ``scene``) cut
    into a ``grid`` (cols, rows) of patches: >= 50 % inside a shape -> its caption, no
    shape pixel -> background, anything else -> weight 0."""
    n_patches = grid[0] * grid[1]
    targets = np.zeros((n_patches, N_CLASSES), dtype=np.float32)
    weights = np.zeros(n_patches, dtype=np.float32)
    present = [i for i in range(len(scene.shapes)) if (index_map == i).any()]
    cover = np.zeros((max(1, len(present)), n_patches), dtype=np.float32)
    for row, i in enumerate(present):
        mask = (index_map == i).astype(np.float32)
        cover[row] = cv2.resize(mask, grid, interpolation=cv2.INTER_AREA).ravel()
    empty = ~(cv2.resize((index_map >= 0).astype(np.float32), grid, interpolation=cv2.INTER_AREA).ravel() > 0)
    targets[empty, BG], weights[empty] = 1.0, 1.0
    best, owned = cover.argmax(0), cover.max(0) >= 0.5
    for row, i in enumerate(present):
        sel = owned & (best == row)
        targets[sel, CAPTION_INDEX[scene.labels[i]]], weights[sel] = 1.0, 1.0
    return targets, weights


class SceneData:
    """Deterministic stream of training / evaluation images from one seed."""

    def __init__(self, seed: int, geometry: Geometry = GEOMETRY, styles: tuple[str, ...] = ()) -> None:
        self.rng = np.random.default_rng(seed)
        self.geometry = geometry
        self.styles = styles  # background styles to draw from; () = all of realtime.scenes

    def scene(self, size: tuple[int, int], n_shapes: int | None = None) -> Scene:
        rng = self.rng
        n = int(rng.integers(1, 5)) if n_shapes is None else n_shapes
        duplicate = n >= 2 and rng.random() < 0.15
        style = str(rng.choice(self.styles)) if self.styles else None
        return random_scene(rng, *size, n, size_range=SHAPE_SIZES, duplicate=duplicate, style=style,
                            with_index_map=True)

    def _crop_box(self, scene: Scene, mode: str) -> tuple[int, int, int]:
        """(x, y, side) of a square crop: around a shape (1.1-2.5 times its box, so
        the shape fills a good part of the view, as in the windows that should
        win), anywhere, or (tried) empty; the last two 1/4..2/3 of the short side."""
        rng, (h, w) = self.rng, scene.frame.shape[:2]
        short = min(w, h)
        if mode == "shape":
            x1, y1, x2, y2 = scene.boxes[rng.integers(len(scene.boxes))]
            extent = max(x2 - x1, y2 - y1)
            side = int(min(short, max(extent * rng.uniform(*SHAPE_CROP), CROP_SIZES[0] * short / 2) + 2))
            x = int(rng.integers(max(0, x2 - side), min(x1, w - side) + 1))
            y = int(rng.integers(max(0, y2 - side), min(y1, h - side) + 1))
            return x, y, side
        side = int(rng.uniform(*CROP_SIZES) * short)
        for _ in range(12 if mode == "empty" else 1):
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            if mode != "empty" or not (scene.index_map[y : y + side, x : x + side] >= 0).any():
                break
        return x, y, side

    def windows(self, scene: Scene, n: int):
        """``n`` window crops of ``scene``: images, class targets, weights."""
        counts = _shape_counts(scene)
        modes = self.rng.choice(["shape", "random", "empty"], size=n, p=[0.55, 0.2, 0.25])
        views = []
        for mode in modes:
            x, y, side = self._crop_box(scene, str(mode))
            region = (slice(y, y + side), slice(x, x + side))
            views.append(self._view(scene, counts, region))
        return [list(part) for part in zip(*views)]

    def _view(self, scene: Scene, counts: np.ndarray, region: tuple[slice, slice]):
        """A square region as a model input: image, class target, weight, patch targets."""
        target, weight = class_target(scene, counts, _shape_counts(scene, region))
        side = self.geometry.image_px
        image = resize_rgb(scene.frame[region], side, side, self.rng)
        grid = (side // self.geometry.patch_px,) * 2
        return image, target, weight, patch_targets(scene, scene.index_map[region], grid)

    def whole_frame(self, size: tuple[int, int]):
        """A single-shape frame as the classify method sees it."""
        scene = self.scene(size, n_shapes=1)
        return self._view(scene, _shape_counts(scene), centre_region(*scene.frame.shape[:2]))

    def dense(self, scene: Scene):
        """The whole scene at the dense input size and per-patch class targets/weights."""
        h, w = scene.frame.shape[:2]
        in_w, in_h = dense_size(w, h, self.geometry)
        image = resize_rgb(scene.frame, in_w, in_h, self.rng)
        patch = self.geometry.patch_px
        targets, weights = patch_targets(scene, scene.index_map, (in_w // patch, in_h // patch))
        return image, targets, weights

    def batch(self, n_windows: int, n_frames: int, crops_per_scene: int = 6):
        """One training step's data: views (window crops, then whole frames) as
        (images, targets, weights, patch targets), and whole scenes for the dense loss."""
        aspect = "16:9" if self.rng.random() < 0.2 else "4:3"
        sizes = ASPECTS[aspect]
        views, scenes = [], []
        while len(views) < n_windows:
            scene = self.scene(sizes[self.rng.integers(len(sizes))])
            scenes.append(scene)
            views.extend(zip(*self.windows(scene, crops_per_scene)))
        del views[n_windows:]
        views.extend(self.whole_frame(sizes[self.rng.integers(len(sizes))]) for _ in range(n_frames))
        return [list(part) for part in zip(*views)], scenes


def to_pixels(images: list[np.ndarray] | np.ndarray, geometry: Geometry = GEOMETRY) -> torch.Tensor:
    """RGB uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    array = torch.from_numpy(np.ascontiguousarray(np.stack(images))).permute(0, 3, 1, 2).float()
    mean = torch.tensor(geometry.mean).view(1, 3, 1, 1)
    std = torch.tensor(geometry.std).view(1, 3, 1, 1)
    return (array / 255.0 - mean) / std


# --------------------------------------------------------------------------- model


def encode_texts(model, tokens: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.normalize(pooled(model.get_text_features(**tokens)), dim=-1)


def encode_images(model, pixels: torch.Tensor) -> torch.Tensor:
    return F.normalize(pooled(model.get_image_features(pixel_values=pixels)), dim=-1)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    loss = -(target * F.log_softmax(logits, dim=-1)).sum(-1)
    return (loss * weight).sum() / weight.sum().clamp(min=1e-6)


def sincos_positions(grid: int, dim: int) -> torch.Tensor:
    """(1 + grid*grid, dim) 2-D sine-cosine position table (MAE-style), zero for the class token."""
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(torch.arange(grid, dtype=torch.float32), torch.arange(grid, dtype=torch.float32), indexing="ij")
    parts = [f(c.reshape(-1, 1) * omega) for c in (ys, xs) for f in (torch.sin, torch.cos)]
    table = torch.zeros(1 + grid * grid, dim)
    table[1:, : 4 * quarter] = torch.cat(parts, dim=1)
    return table


def xavier_init(module: torch.nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every linear layer and the patch
    embedding of ``module`` (the ViT recipe of timm/MAE)."""
    for child in module.modules():
        if isinstance(child, (torch.nn.Linear, torch.nn.Conv2d)):
            torch.nn.init.xavier_uniform_(child.weight.view(child.weight.shape[0], -1))
            if child.bias is not None:
                torch.nn.init.zeros_(child.bias)


def build_model(tokenizer, seed: int, sizes: dict[str, int], pos_scale: float = 0.0, xavier: bool = True,
                geometry: Geometry = GEOMETRY):
    """A fresh CLIPModel.  ``xavier`` re-initialises the vision tower's linear layers and
    patch embedding (CLIP's own small-std init learns shapes several times slower from
    scratch); ``pos_scale`` > 0 starts the vision position embeddings from a 2-D sine-cosine
    table (a spatial prior)."""
    from transformers import CLIPModel

    config = clip_config(tokenizer, geometry.image_px, geometry.patch_px, **sizes)
    torch.manual_seed(seed)
    model = CLIPModel(config)
    if xavier:
        xavier_init(model.vision_model)
    if pos_scale > 0:
        embedding = model.vision_model.embeddings.position_embedding
        with torch.no_grad():
            grid = geometry.image_px // geometry.patch_px
            embedding.weight.copy_(pos_scale * sincos_positions(grid, embedding.weight.shape[1]))
    return model


def _optimizer(model, lr: float) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    rest = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    groups = [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- training


class Trainer:
    def __init__(self, model, tokenizer, args) -> None:
        self.model, self.args = model, args
        self.families = text_families()
        self.tokens = [tokenizer(list(f.texts), padding=True, return_tensors="pt") for f in self.families]
        self.projections = [torch.from_numpy(f.projection) for f in self.families]
        main = self.families[0].projection
        self.dense_projection = torch.from_numpy(main)
        self.optimizer = _optimizer(model, args.lr)
        self.geometry = geometry_of(args)
        self.data = SceneData(args.seed, self.geometry, styles_of(args))

    def step(self, step: int) -> dict[str, float]:
        args, model = self.args, self.model
        n_frames = round(args.batch * args.frame_share)
        (images, targets, weights, patches), scenes = self.data.batch(args.batch - n_frames, n_frames)
        for group in self.optimizer.param_groups:
            group["lr"] = args.lr * _lr_factor(step, args.steps, args.warmup)
        scale = model.logit_scale.exp()
        texts = [encode_texts(model, t) for t in self.tokens]
        vision = model.vision_model(pixel_values=to_pixels(images, self.geometry), output_hidden_states=True)
        image_emb = F.normalize(model.visual_projection(vision.pooler_output), dim=-1)
        target = torch.from_numpy(np.stack(targets))
        weight = torch.tensor(weights)
        losses = {}
        for family, text, projection in zip(self.families, texts, self.projections):
            losses[family.name] = family.weight * soft_cross_entropy(
                scale * image_emb @ text.T, target @ projection, weight
            )
        if args.dense_weight > 0:
            crop_tokens = maskclip_head(model, vision.hidden_states[-2])
            losses["dense"] = args.dense_weight * self._patch_loss(crop_tokens, patches, texts[0], scale)
            if args.dense_scenes > 0:
                views = [self.data.dense(scene) for scene in scenes[: args.dense_scenes]]
                scene_images, scene_targets, scene_weights = zip(*views)
                scene_tokens = maskclip_patch_tokens(model, to_pixels(list(scene_images), self.geometry))
                losses["dense_scene"] = args.dense_weight * self._patch_loss(
                    scene_tokens, list(zip(scene_targets, scene_weights)), texts[0], scale
                )
        total = sum(losses.values())
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.optimizer.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(100.0))
        return {k: float(v.detach()) for k, v in losses.items()} | {"scale": float(scale.detach())}

    def _patch_loss(self, tokens: torch.Tensor, patches, text: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Soft cross-entropy of MaskCLIP patch tokens (N, P, D) against their
        per-patch targets [(targets (P, classes), weights (P,)), ...]."""
        tokens = F.normalize(tokens, dim=-1)
        logits = scale * tokens.reshape(-1, tokens.shape[-1]) @ text.T
        target = torch.from_numpy(np.concatenate([t for t, _ in patches])) @ self.dense_projection
        weight = torch.from_numpy(np.concatenate([w for _, w in patches]))
        is_bg = target[:, len(CAPTIONS) :].sum(-1) > 0.5
        # balance shape and background patches (background patches outnumber shapes)
        shape_loss = soft_cross_entropy(logits, target, weight * ~is_bg)
        bg_loss = soft_cross_entropy(logits, target, weight * is_bg)
        return shape_loss + 0.5 * bg_loss


def train(args) -> tuple[object, object, float]:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    out = Path(args.out)
    tokenizer = write_tokenizer(out, DEFAULT_WORDS)
    model = build_model(tokenizer, args.seed, model_sizes(args), args.pos_scale, args.init == "xavier",
                        geometry_of(args)).train()
    trainer = Trainer(model, tokenizer, args)
    start = time.perf_counter()
    running: dict[str, float] = {}
    bar = tqdm(range(args.steps), desc="train", mininterval=args.progress_every, file=sys.stderr)
    for step in bar:
        metrics = trainer.step(step)
        running = {k: 0.9 * running.get(k, v) + 0.1 * v for k, v in metrics.items()}
        bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()}, refresh=False)
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            summary = " ".join(f"{k}={v:.3f}" for k, v in running.items())
            tqdm.write(f"step {step + 1}/{args.steps} {time.perf_counter() - start:.0f}s {summary}", file=sys.stderr)
        if args.eval_every and (step + 1) % args.eval_every == 0:
            quick = quick_eval(model, tokenizer, args.seed + 20_000, geometry=geometry_of(args))
            tqdm.write(f"step {step + 1} quick held-out: " + " ".join(f"{k}={v:.3f}" for k, v in quick.items()), file=sys.stderr)
            model.train()
    return model.eval(), tokenizer, time.perf_counter() - start


# --------------------------------------------------------------------------- evaluation


@torch.inference_mode()
def evaluate(model, tokenizer, processor, seed: int, n: int, geometry: Geometry = GEOMETRY) -> dict[str, float]:
    """Held-out metrics on scenes from a seed the training never used (every background style)."""
    data = SceneData(seed, geometry)
    texts = list(CAPTIONS) + list(DEFAULT_BACKGROUND_PROMPTS)
    text = encode_texts(model, tokenizer(texts, padding=True, return_tensors="pt"))
    scale = float(model.logit_scale.exp())
    metrics = {}
    metrics.update(_eval_windows(model, data, text, n))
    metrics.update(_eval_frames(model, processor, data, text, n // 2))
    metrics.update(_eval_dense(model, data, text, n // 2))
    metrics["logit_scale"] = scale
    return metrics


@torch.inference_mode()
def quick_eval(model, tokenizer, seed: int, n: int = 240, geometry: Geometry = GEOMETRY) -> dict[str, float]:
    """A small window-crop evaluation to watch progress (same seed every time)."""
    model.eval()
    texts = list(CAPTIONS) + list(DEFAULT_BACKGROUND_PROMPTS)
    text = encode_texts(model, tokenizer(texts, padding=True, return_tensors="pt"))
    return _eval_windows(model, SceneData(seed, geometry), text, n)


def _class_of(target: np.ndarray) -> int | None:
    """The single class of an unambiguous target, else None."""
    return int(target.argmax()) if target.max() == 1.0 else None


def _eval_windows(model, data: SceneData, text: torch.Tensor, n: int) -> dict[str, float]:
    images, classes = [], []
    while len(images) < n:
        size = ASPECTS["4:3" if data.rng.random() < 0.7 else "16:9"][data.rng.integers(2)]
        scene = data.scene(size)
        for image, target, weight, _ in zip(*data.windows(scene, 6)):
            if weight == 1.0 and _class_of(target) is not None:
                images.append(image)
                classes.append(_class_of(target))
    classes_t = torch.tensor(classes[:n])
    sims = encode_images(model, to_pixels(images[:n], data.geometry)) @ text.T
    predicted = sims.argmax(-1).clamp(max=BG)  # any background prompt -> background
    bg = classes_t == BG
    return {
        "window_accuracy": float((predicted == classes_t).float().mean()),
        "window_shape_accuracy": float((predicted[~bg] == classes_t[~bg]).float().mean()),
        "background_rejection": float((predicted[bg] == BG).float().mean()),
        "window_count": float(len(classes_t)),
        "background_count": float(bg.sum()),
    }


def _eval_frames(model, processor, data: SceneData, text: torch.Tensor, n: int) -> dict[str, float]:
    """Whole single-shape frames through the saved processor; top-1 over the captions.
    Frames whose shape is less than 70 % inside the centre crop are skipped."""
    images, classes = [], []
    while len(images) < n:
        size = ASPECTS["4:3" if data.rng.random() < 0.7 else "16:9"][data.rng.integers(2)]
        scene = data.scene(size, n_shapes=1)
        region = centre_region(*scene.frame.shape[:2])
        target, _ = class_target(scene, _shape_counts(scene), _shape_counts(scene, region))
        if _class_of(target) is not None and _class_of(target) != BG:
            images.append(cv2.cvtColor(scene.frame, cv2.COLOR_BGR2RGB))
            classes.append(_class_of(target))
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    sims = encode_images(model, pixels) @ text[: len(CAPTIONS)].T
    return {"frame_top1": float((sims.argmax(-1) == torch.tensor(classes)).float().mean())}


def _eval_dense(model, data: SceneData, text: torch.Tensor, n: int) -> dict[str, float]:
    """Does the MaskCLIP similarity map of the right caption peak on the shape?

    strict: the arg-max patch's centre lies inside the GT box; loose: the patch
    overlaps it.  Single-shape frames, then 3-shape frames (each shape's caption).
    """
    results = {}
    for n_shapes, key in ((1, "dense_peak_in_box"), (3, "dense_peak_in_box_3shapes")):
        strict = loose = total = 0
        for _ in range(n // n_shapes):
            size = ASPECTS["4:3" if data.rng.random() < 0.7 else "16:9"][data.rng.integers(2)]
            scene = data.scene(size, n_shapes=n_shapes)
            h, w = scene.frame.shape[:2]
            in_w, in_h = dense_size(w, h, data.geometry)
            image = resize_rgb(scene.frame, in_w, in_h, data.rng)
            sims = F.normalize(maskclip_patch_tokens(model, to_pixels([image], data.geometry))[0], dim=-1) @ text.T
            patch = data.geometry.patch_px
            cols = in_w // patch
            for box, label in zip(scene.boxes, scene.labels):
                r, c = divmod(int(sims[:, CAPTION_INDEX[label]].argmax()), cols)
                sx, sy = w / in_w, h / in_h
                px0, py0, px1, py1 = c * patch * sx, r * patch * sy, (c + 1) * patch * sx, (r + 1) * patch * sy
                cx, cy = (px0 + px1) / 2, (py0 + py1) / 2
                strict += box[0] <= cx < box[2] and box[1] <= cy < box[3]
                loose += px0 < box[2] and px1 > box[0] and py0 < box[3] and py1 > box[1]
                total += 1
        results[key] = strict / total
        results[key + "_loose"] = loose / total
    return results


# --------------------------------------------------------------------------- output


def _dense_loss_lines(args, px: int) -> list[str]:
    return [
        "Dense (MaskCLIP) auxiliary loss: the patch tokens of every training image (from the same",
        f"forward pass) and of whole scenes ({px} px short side, interpolated position embeddings) are",
        "taken through the last block's value path exactly like the detector's dense method",
        "(v = out_proj(v_proj(ln1 x)) + x; v = v + mlp(ln2 v); post_layernorm; visual_projection)",
        "and scored against the same texts: patches >= 50 % inside a shape are trained towards its",
        "caption, patches without shape pixels towards background, mixed patches are ignored",
        f"(weight {args.dense_weight}; background patches count half). Without it the value path of",
        "such a small model does not localise (see the ablation below); this loss is what makes",
        "the model suitable for the dense method.",
    ]


def write_report(out: Path, args, metrics: dict[str, float], seconds: float, n_params: int) -> None:
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    command = "python tools/train_shapes_clip.py " + " ".join(shlex.quote(a) for a in args.argv)
    size_mb = (out / "model.safetensors").stat().st_size / 1e6
    sizes = model_sizes(args)
    geo = geometry_of(args)
    px, patch = geo.image_px, geo.patch_px
    objective = ("image-text contrastive loss plus a MaskCLIP patch loss" if args.dense_weight > 0
                 else "only CLIP's image-text contrastive objective, no patch or dense loss")
    styles = ", ".join(styles_of(args)) if args.backgrounds else "all of `realtime.scenes.BACKGROUND_STYLES`"
    lines = [
        f"# {out.name}: a small CLIP trained on synthetic coloured shapes",
        "",
        f"Objective: {objective}.",
        "",
        "Made offline by `tools/train_shapes_clip.py` (deterministic: fixed seeds, one process,",
        f"{args.threads} torch threads, CPU). It is a plain `CLIPModel` + `CLIPProcessor`",
        "(`save_pretrained`), so it loads like any Hub checkpoint:",
        "`CLIPModel.from_pretrained('models/shapes-clip')`, `AutoProcessor.from_pretrained(...)`.",
        "",
        "## Command",
        "",
        f"    {command}",
        "",
        f"- steps: {args.steps}, batch: {args.batch}, lr: {args.lr}, seed: {args.seed}, dense weight: {args.dense_weight}",
        f"- training wall time: {seconds / 60:.1f} min",
        f"- parameters: {n_params / 1e6:.2f} M, `model.safetensors`: {size_mb:.1f} MB (fp32)",
        f"- vision: ViT {sizes['vision_num_hidden_layers']} layers x {sizes['vision_hidden_size']},"
        f" input {px} px, patch {patch} px; text: {sizes['text_num_hidden_layers']} layers x"
        f" {sizes['text_hidden_size']}, word-level vocabulary (unknown words fall back to characters),"
        f" 32 tokens; projection {sizes['projection_dim']}",
        f"- image mean/std: {geo.mean} / {geo.std}; the learned `logit_scale` is saved"
        f" (exp = {metrics['logit_scale']:.1f})",
        "",
        "## Data (generated on the fly by `realtime/scenes.py`, never repeated)",
        "",
        "- scenes: 320x240 / 640x480 (80 % of steps) or 1280x720 / 640x360, 1-4 non-overlapping shapes",
        f"  ({len(SHAPES)} kinds x {len(COLORS)} colours = {len(CAPTIONS)} captions) of 10-45 % of the short side,",
        "  15 % with two instances of one caption, upright with a tilt of up to"
        f" +-{DEFAULT_MAX_ANGLE:g} degrees (as `realtime.scenes` draws them), on muted textured backgrounds",
        f"  ({styles}; the held-out metrics below use every style);",
        f"- window crops ({1 - args.frame_share:.0%} of each batch): 55 % around a shape (side 1.1-2.5 times the shape's box,",
        "  so that the shape fills a good part of the view, like the windows that should win), 20 %",
        "  anywhere and 25 % looking for empty background (side 1/4..2/3 of the short side), resized",
        f"  to {px} px with antialiased bicubic (PIL, like the detector's resize) or INTER_AREA, BGR->RGB;",
        f"- whole frames ({args.frame_share:.0%}): single-shape frames, shortest edge to {px} px and centre crop (classify method);",
        *([f"- dense scenes: {args.dense_scenes} of each step's scenes, whole, short side {px} px, both sides multiples of {patch}."]
          if args.dense_weight > 0 else []),
        "",
        "Targets are soft distributions over the captions + background: a shape counts fully when",
        ">= 70 % of its pixels are in view, linearly from 10 %; several full shapes share the mass;",
        "no shape pixel at all = background (spread over all `DEFAULT_BACKGROUND_PROMPTS`).",
        "Ambiguous views (partial shapes) get half weight.",
        "",
        "## Loss",
        "",
        "Each image is scored against the embeddings of *all* distinct texts of a family (not the",
        "in-batch captions, so duplicated captions are no false negatives) with a soft-target",
        "cross-entropy at the learned `logit_scale`. Families: `a {color} {shape}` + background",
        "prompts (weight 1; the form tests type), and lighter variants `{color} {shape}`, `a {shape}`,",
        "`a {color} shape` (0.15 each).",
        "",
        *(_dense_loss_lines(args, px) if args.dense_weight > 0 else [
            "No dense or patch loss: like every public CLIP, nothing trained the patch tokens to",
            "localise, so this model is a fair test of anything built on patch maps (refine, dense)."]),
        "",
        f"Initialisation (`--init {args.init}`): the vision tower's linear layers and patch embedding",
        "are Xavier-uniform with zero biases (CLIP's own init, made for a pretrained-size model, left",
        "a from-scratch ViT of this size on a loss plateau several times longer: in a 300-step probe",
        "on shape crops, 94 % vs 57 % shape accuracy), and the position embeddings start from a",
        f"2-D sine-cosine table (scale {args.pos_scale}) instead of noise.",
        "Optimiser: AdamW (betas 0.9/0.98, weight decay 0.05 on matrices), linear warm-up",
        f"({args.warmup} steps), cosine decay to 5 %, gradient clipping at 1, `logit_scale`",
        "clamped to <= ln 100.",
        "",
        "## Held-out metrics (scenes from another seed)",
        "",
        "| metric | value |",
        "| --- | --- |",
        *(f"| {k} | {v:.3f} |" for k, v in metrics.items()),
        "",
        "- window_accuracy: arg-max over the 24 captions + 7 background prompts of unambiguous window",
        "  crops (one shape >= 70 % inside and nothing else, or no shape pixel), any background prompt",
        "  counting as background; window_shape_accuracy: the same on the crops with a shape;",
        "- background_rejection: share of background crops whose best text is a background prompt;",
        "- frame_top1: whole single-shape frames through the saved processor, top-1 over the 24 captions",
        "  (frames whose shape is < 70 % inside the centre crop are left out);",
        "- dense_peak_in_box: share of shapes whose caption's MaskCLIP similarity peaks at a patch whose",
        "  centre lies in the ground-truth box (`_loose`: the patch overlaps the box); single-shape",
        "  frames, then frames with 3 shapes.",
        "",
        *_ablation_lines(args),
        "## Caveats",
        "",
        "- It only knows these shapes, colours and background prompts; other words are tokenized",
        "  character by character and carry little meaning.",
        f"- Shapes of ~10 % of the short side are ~{0.1 * px:.0f} px at the dense/classify input ({px} px), {'less than' if 0.1 * px < patch else 'about'}",
        "  one 8 px patch: the classify and dense methods are weakest there.",
    ]
    (out / "TRAINING.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def model_sizes(args) -> dict[str, int]:
    width, layers = args.vision_width, args.vision_layers
    return dict(MODEL_SIZES, vision_hidden_size=width, vision_intermediate_size=4 * width,
                vision_num_hidden_layers=layers, vision_num_attention_heads=width // 32)


def _ablation_lines(args) -> list[str]:
    """A table comparing this model with other runs (``--ablation DIR,DIR``), e.g. short
    runs with and without the dense loss, read from their metrics and training records."""
    if not args.ablation:
        return []
    ours = json.loads((Path(args.out) / "metrics.json").read_text(encoding="utf-8"))
    keys = [k for k in ours if k.startswith("dense_") or k in ("window_accuracy", "frame_top1")]
    columns = []
    for directory in args.ablation.split(","):
        metrics = json.loads((Path(directory) / "metrics.json").read_text(encoding="utf-8"))
        _, argv = _training_record(Path(directory))
        run = parse_args(argv or [])
        columns.append((f"{run.steps} steps, dense weight {run.dense_weight}", metrics))
    columns.append((f"this model ({args.steps} steps)", ours))
    return [
        "## Ablation: the dense loss",
        "",
        "Runs that differ only in `--steps` and `--dense-weight` (and `--out`):",
        "",
        "| metric | " + " | ".join(name for name, _ in columns) + " |",
        "| --- |" + " --- |" * len(columns),
        *(f"| {k} | " + " | ".join(f"{m.get(k, float('nan')):.3f}" for _, m in columns) + " |" for k in keys),
        "",
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="models/shapes-clip", help="output directory")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=128, help="images per step")
    parser.add_argument("--frame-share", type=float, default=0.25, help="share of whole single-shape frames per batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-px", type=int, default=IMAGE_SIZE, help="square input side of the vision tower")
    parser.add_argument("--patch-px", type=int, default=PATCH_SIZE, help="patch side (must divide --image-px)")
    parser.add_argument("--mean", type=float, nargs=3, default=MEAN, help="image normalisation mean (RGB)")
    parser.add_argument("--std", type=float, nargs=3, default=STD, help="image normalisation std (RGB)")
    parser.add_argument("--backgrounds", default="", help="comma-separated background styles to train on (default: all)")
    parser.add_argument("--dense-weight", type=float, default=0.5, help="MaskCLIP patch loss weight (0: off)")
    parser.add_argument("--dense-scenes", type=int, default=4, help="whole scenes per step for the dense loss")
    parser.add_argument("--vision-width", type=int, default=MODEL_SIZES["vision_hidden_size"])
    parser.add_argument("--vision-layers", type=int, default=MODEL_SIZES["vision_num_hidden_layers"])
    parser.add_argument("--pos-scale", type=float, default=0.3, help="sine-cosine position init scale (0: random)")
    parser.add_argument("--init", choices=("xavier", "clip"), default="xavier", help="vision tower initialisation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-images", type=int, default=1200)
    parser.add_argument("--eval-every", type=int, default=0, help="quick held-out check every N steps (0: never)")
    parser.add_argument("--ablation", default="", help="comma-separated run directories to compare with in TRAINING.md")
    parser.add_argument("--eval-only", action="store_true", help="evaluate the model in --out, no training")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--progress-every", type=float, default=30.0, help="seconds between progress bar updates")
    args = parser.parse_args(argv)
    if args.image_px % args.patch_px:
        parser.error(f"--patch-px {args.patch_px} must divide --image-px {args.image_px}")
    unknown = set(styles_of(args)) - set(BACKGROUND_STYLES)
    if unknown:
        parser.error(f"--backgrounds: unknown style(s) {sorted(unknown)} (allowed: {', '.join(BACKGROUND_STYLES)})")
    args.argv = argv
    return args


def geometry_of(args) -> Geometry:
    return Geometry(args.image_px, args.patch_px, tuple(args.mean), tuple(args.std))


def styles_of(args) -> tuple[str, ...]:
    return tuple(s.strip() for s in args.backgrounds.split(",") if s.strip())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from transformers import AutoProcessor, CLIPModel

    out = Path(args.out)
    torch.set_num_threads(args.threads)
    if args.eval_only:
        model, processor = CLIPModel.from_pretrained(out).eval(), AutoProcessor.from_pretrained(out)
        seconds, train_argv = _training_record(out)
        if train_argv is not None:  # rewrite the report for the stored training run
            args = parse_args(train_argv + [a for a in ("--ablation", args.ablation) if args.ablation])
    else:
        model, tokenizer, seconds = train(args)
        model.save_pretrained(out)
        geo = geometry_of(args)
        make_processor(tokenizer, geo.image_px, geo.mean, geo.std).save_pretrained(out)
        processor = AutoProcessor.from_pretrained(out)  # evaluate what was saved
        record = {"argv": args.argv, "seconds": seconds}
        (out / "training_record.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    metrics = evaluate(model, processor.tokenizer, processor, args.seed + 10_000, args.eval_images,
                       geometry_of(args))
    if seconds is not None:
        write_report(out, args, metrics, seconds, sum(p.numel() for p in model.parameters()))
        print(f"trained {args.steps} steps in {seconds / 60:.1f} min; held-out metrics:")
    print(json.dumps(metrics, indent=2))


def _training_record(out: Path) -> tuple[float | None, list[str] | None]:
    path = out / "training_record.json"
    if not path.exists():
        return None, None
    record = json.loads(path.read_text(encoding="utf-8"))
    return float(record["seconds"]), list(record["argv"])


if __name__ == "__main__":
    main()
