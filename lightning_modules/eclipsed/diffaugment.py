"""Differentiable augmentation (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient
GAN Training") for a discriminator that sees few real images.

With a few hundred faces the discriminator memorises the real set within a few thousand
iterations and its gradient stops telling the generator what a face looks like. DiffAugment
shows D every image (real and generated, in D's step and in G's) through the same random
transformations; they are differentiable, so G's gradient flows back through them, and since
D never sees an unaugmented image, the augmentations do not leak into what G draws.

Policies, on images in [-1, 1]:
- color: brightness +/-0.5, saturation x[0, 2], contrast x[0.5, 1.5], per image;
- translation: a shift of up to 1/8 of the size in x and y, zero-filled;
- cutout: a square of half the size zeroed at a random place.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _color(x: torch.Tensor) -> torch.Tensor:
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (torch.rand(b, 1, 1, 1, device=x.device, dtype=x.dtype) + 0.5) + mean


def _pixel_grid(b: int, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = torch.arange(h, device=device).view(1, h, 1).expand(b, h, w)
    xs = torch.arange(w, device=device).view(1, 1, w).expand(b, h, w)
    return ys, xs


def _translation(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    sy, sx = int(h * TRANSLATION_RATIO + 0.5), int(w * TRANSLATION_RATIO + 0.5)
    dy = torch.randint(-sy, sy + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(-sx, sx + 1, (b, 1, 1), device=x.device)
    ys, xs = _pixel_grid(b, h, w, x.device)
    # Read each output pixel from (y - dy, x - dx) of a one-pixel zero border around the image.
    src_y = (ys - dy + 1).clamp(0, h + 1)
    src_x = (xs - dx + 1).clamp(0, w + 1)
    padded = F.pad(x, (1, 1, 1, 1))
    index = (src_y * (w + 2) + src_x).view(b, 1, h * w).expand(b, c, h * w)
    return padded.flatten(2).gather(2, index).view(b, c, h, w)


def _cutout(x: torch.Tensor) -> torch.Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), device=x.device)
    ys, xs = _pixel_grid(b, h, w, x.device)
    inside = ((ys - cy + ch // 2).clamp(min=-1) // ch == 0) & ((xs - cx + cw // 2).clamp(min=-1) // cw == 0)
    # clamp(min=-1) // n == 0 exactly when 0 <= value < n
    return x * (~inside).unsqueeze(1).to(x.dtype)


_OPS = {"color": _color, "translation": _translation, "cutout": _cutout}


def diff_augment(images: torch.Tensor, policies: Sequence[str]) -> torch.Tensor:
    """images [B, C, H, W] through each policy in order, independently per image."""
    for policy in policies:
        images = _OPS[policy](images)
    return images
