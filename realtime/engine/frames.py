"""Frames on the device: one upload, then resize, normalise and crop there.

A BGR uint8 frame crosses to the device once (through a reused pinned buffer
on CUDA, asynchronously); everything after that - colour order, resizing with
the processor's filter, scaling, mean/std, window crops - is tensor work on
the device, so no per-crop CPU work exists.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from .model import InputSpec


class FrameUploader:
    """Copies BGR uint8 frames to the device as (1, 3, H, W) float RGB 0..255."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._pinned: torch.Tensor | None = None
        self._copied: torch.cuda.Event | None = None

    def __call__(self, frame_bgr: np.ndarray) -> torch.Tensor:
        check_frame(frame_bgr)
        host = torch.from_numpy(np.ascontiguousarray(frame_bgr))
        if self.device.type == "cuda":
            if self._pinned is None or self._pinned.shape != host.shape:
                self._pinned = torch.empty(host.shape, dtype=torch.uint8, pin_memory=True)
            elif self._copied is not None:
                self._copied.synchronize()     # the last async copy has left the buffer
            self._pinned.copy_(host)
            pixels = self._pinned.to(self.device, non_blocking=True)
            self._copied = torch.cuda.Event()
            self._copied.record()
        else:
            pixels = host.to(self.device)
        return pixels.permute(2, 0, 1).flip(0).unsqueeze(0).float()


def check_frame(frame_bgr) -> None:
    """ValueError, saying what is expected, unless `frame_bgr` is a non-empty HxWx3 uint8
    array (BGR, as cv2.imread and cv2.VideoCapture.read return)."""
    expected = "expected an HxWx3 uint8 BGR image (a numpy array, as cv2.imread returns)"
    if not isinstance(frame_bgr, np.ndarray):
        raise ValueError(f"{expected}, got {type(frame_bgr).__name__}")
    shape = "x".join(str(n) for n in frame_bgr.shape) or "a scalar"
    if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
        hint = " (grey: cv2.cvtColor(image, cv2.COLOR_GRAY2BGR); BGRA: COLOR_BGRA2BGR)" if (
            frame_bgr.ndim == 2 or (frame_bgr.ndim == 3 and frame_bgr.shape[2] in (1, 4))) else ""
        raise ValueError(f"{expected}, got shape {shape}{hint}")
    if frame_bgr.dtype != np.uint8:
        raise ValueError(f"{expected}, got dtype {frame_bgr.dtype} (scale 0..1 floats by 255 "
                         "and convert with .astype(np.uint8))")
    if frame_bgr.shape[0] == 0 or frame_bgr.shape[1] == 0:
        raise ValueError(f"{expected}, got an empty {shape} image")


def resize(pixels: torch.Tensor, height: int, width: int, spec: InputSpec) -> torch.Tensor:
    """Resize with the processor's filter (antialiased, like PIL), clamped like uint8 output."""
    if pixels.shape[-2:] == (height, width):
        return pixels
    smooth = spec.resample in ("bilinear", "bicubic")
    out = F.interpolate(pixels, size=(height, width), mode=spec.resample,
                        antialias=smooth, align_corners=False if smooth else None)
    return out.clamp_(0.0, 255.0)


def normalise(pixels: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """(pixels * rescale - mean) / std as one fused multiply-add."""
    scale, shift = _scale_shift(spec, pixels.device)
    return torch.addcmul(shift, pixels, scale)


@functools.lru_cache(maxsize=16)
def _scale_shift(spec: InputSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Built once per device: a blocking host-to-device copy per frame would
    # synchronise the GPU twice a frame.
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    return (spec.rescale / std).to(device), (-mean / std).to(device)


def aspect_input_size(frame_h: int, frame_w: int, short_px: int, patch_px: int) -> tuple[int, int]:
    """(h, w) with the short side near `short_px`, the aspect kept, both multiples of the patch."""
    scale = short_px / min(frame_h, frame_w)
    snap = lambda v: max(patch_px, int(round(v * scale / patch_px)) * patch_px)
    return snap(frame_h), snap(frame_w)


def centre_crop_square(pixels: torch.Tensor, size_px: int, spec: InputSpec) -> torch.Tensor:
    """CLIP's own preprocessing of a whole image: shortest edge to size, centre crop."""
    h, w = pixels.shape[-2:]
    scale = size_px / min(h, w)
    new_h, new_w = max(size_px, round(h * scale)), max(size_px, round(w * scale))
    resized = resize(pixels, new_h, new_w, spec)
    top, left = (new_h - size_px) // 2, (new_w - size_px) // 2
    return resized[..., top:top + size_px, left:left + size_px]


def crop_windows(image: torch.Tensor, rows_idx: torch.Tensor, cols_idx: torch.Tensor
                 ) -> torch.Tensor:
    """(N, 3, S, S) crops of a (1, 3, H, W) image in one gather.

    rows_idx and cols_idx are (N, S) pixel indices of each crop's rows and
    columns; indexing with them is a single device kernel whatever N is.
    """
    crops = image[0][:, rows_idx[:, :, None], cols_idx[:, None, :]]
    return crops.permute(1, 0, 2, 3)
