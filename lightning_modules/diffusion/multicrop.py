"""DINO's multi-crop views (Caron et al. 2021, sec. 3.1), drawn for a whole batch at once.

Two global views at the model's image size and a few local views at half of it, each a random
resized crop with a horizontal flip and a colour jitter. The crops are drawn inside the
training step (not by the data loader), from the generator the trainer seeds per batch:
a resumed run draws the same views as the uninterrupted one, and the work runs on the
accelerator as one grid_sample per view instead of per-image PIL calls.

With subject masks the views serve the DINO metric, which must tell subjects apart whatever
the scene around them (DreamBooth compares generated subjects in new contexts with real ones):
- the student's views put the subject on a random scene with probability `background_swap`
  (the background augmentations of Ryali et al. 2021), so that the scene is no clue;
- the teacher sees its two global views with the subject alone, on the image processor's
  mean colour (a zero input), so its targets are about the subject from the first step on.
The student thus learns to find in any scene the subject the teacher describes. SynthWorld's
exact masks make both clean. Without masks the views are DINO's own, for both networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

# RandomResizedCrop's aspect ratios (torchvision's and DINO's default): 3/4 to 4/3.
LOG_ASPECT = (math.log(3 / 4), math.log(4 / 3))
# Luma weights of RGB (ITU-R 601), the grey that contrast and saturation pivot around.
LUMA = (0.299, 0.587, 0.114)


def load_square(path: Path, size: int) -> torch.Tensor:
    """An RGB image as a uint8 3 x size x size tensor (box-resampled)."""
    with Image.open(path) as image:
        image = image.convert("RGB").resize((size, size), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


def square_picture(rgb: np.ndarray, mask: np.ndarray, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 3 x size x size pixels, uint8 1 x size x size mask, 255 on the subject) of an
    image of any shape: its longer side box-resampled to `size`, centred, the rest background."""
    height, width = mask.shape
    scale = size / max(height, width)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    pixels = np.zeros((size, size, 3), np.uint8)
    alpha = np.zeros((size, size), np.uint8)
    top, left = (size - new[1]) // 2, (size - new[0]) // 2
    pixels[top:top + new[1], left:left + new[0]] = np.asarray(
        Image.fromarray(rgb).resize(new, Image.Resampling.BOX))
    alpha[top:top + new[1], left:left + new[0]] = np.asarray(
        Image.fromarray(mask.astype(np.uint8) * 255).resize(new, Image.Resampling.BOX))
    return torch.from_numpy(pixels).permute(2, 0, 1), torch.from_numpy(alpha)[None]


class SubjectPictures(Dataset):
    """Pictures of subjects held in memory: uint8 pixels (N x 3 x S x S) and masks (N x 1 x S x S)."""

    def __init__(self, pixels: torch.Tensor, masks: torch.Tensor):
        self.pixels, self.masks = pixels, masks

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"pixels": self.pixels[index], "mask": self.masks[index]}


@dataclass(frozen=True)
class MultiCropSettings:
    global_size: int                                  # the model's image size
    local_size: int                                   # DINO: 96 for 224, i.e. a bit under half
    local_crops: int
    global_crop_scale: tuple[float, float] = (0.4, 1.0)    # share of the image area (DINO's values)
    local_crop_scale: tuple[float, float] = (0.05, 0.4)
    color_jitter: float = 0.2                         # brightness / contrast / saturation: 1 +- this
    background_swap: float = 0.0                      # share of student views on a random scene
    jitter_probability: float = 0.8
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)  # the image processor's normalisation
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)


def local_size_for(global_size: int, patch_size: int) -> int:
    """Half the global size, rounded down to whole patches (at least one patch)."""
    return max(patch_size, global_size // 2 // patch_size * patch_size)


class Views(NamedTuple):
    student: list[torch.Tensor]   # the 2 global views, then the local ones
    teacher: list[torch.Tensor]   # the 2 global views as the teacher sees them


class MultiCrop(nn.Module):
    """A batch of pictures (uint8, B x 3 x H x W) and optional masks -> normalised `Views`;
    `backgrounds` (N x 3 x H x W uint8 scenes) are what background swaps draw from."""

    def __init__(self, settings: MultiCropSettings, backgrounds: Optional[torch.Tensor] = None):
        super().__init__()
        self.settings = settings
        # Not persistent: read from the data each run, never carried in a checkpoint.
        self.register_buffer("backgrounds", backgrounds, persistent=False)

    def forward(self, images: torch.Tensor, masks: Optional[torch.Tensor] = None) -> Views:
        s = self.settings
        images = images.float() / 255.0
        alpha = None if masks is None else masks.float() / 255.0
        globals_ = [self.view(images, alpha, s.global_size, s.global_crop_scale) for _ in range(2)]
        locals_ = [self.view(images, alpha, s.local_size, s.local_crop_scale)[0] for _ in range(s.local_crops)]
        return Views([student for student, _ in globals_] + locals_, [teacher for _, teacher in globals_])

    def view(self, images: torch.Tensor, alpha: Optional[torch.Tensor], size: int,
             scale: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """(the student's view, the teacher's view) of one crop of every picture."""
        s = self.settings
        factors = jitter_factors(images.shape[0], s.color_jitter, s.jitter_probability, images.device)
        if alpha is None:
            view = self.normalise(color_jitter(random_resized_crop(images, size, scale), factors))
            return view, view
        background = images
        if self.backgrounds is not None and s.background_swap > 0:
            background = random_backgrounds(images, self.backgrounds, s.background_swap)
        # One crop of the picture, its mask and its background, so that they stay aligned.
        crop = random_resized_crop(torch.cat([images, alpha, background], 1), size, scale)
        picture, alpha, background = crop[:, :3], crop[:, 3:4], crop[:, 4:]
        student = color_jitter(alpha * picture + (1 - alpha) * background, factors)
        mean = picture.new_tensor(s.mean).view(1, 3, 1, 1)
        teacher = alpha * color_jitter(picture, factors) + (1 - alpha) * mean
        return self.normalise(student), self.normalise(teacher)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        mean = images.new_tensor(self.settings.mean).view(1, 3, 1, 1)
        std = images.new_tensor(self.settings.std).view(1, 3, 1, 1)
        return (images - mean) / std


def random_backgrounds(images: torch.Tensor, backgrounds: torch.Tensor, probability: float) -> torch.Tensor:
    """Per picture: a random scene (flipped half of the time) with probability `probability`,
    else the picture itself (its own background)."""
    batch, device = images.shape[0], images.device
    picked = backgrounds[torch.randint(len(backgrounds), (batch,), device=device)].float() / 255.0
    picked = torch.where(torch.rand(batch, 1, 1, 1, device=device) < 0.5, picked.flip(-1), picked)
    return torch.where(torch.rand(batch, 1, 1, 1, device=device) < probability, picked, images)


def random_resized_crop(images: torch.Tensor, size: int, scale: tuple[float, float]) -> torch.Tensor:
    """A crop per image of a random share `scale` of its area and aspect 3/4..4/3, flipped
    left-right half of the time, resampled to size x size (bilinear)."""
    batch, device = images.shape[0], images.device
    area = torch.empty(batch, device=device).uniform_(*scale)
    aspect = torch.exp(torch.empty(batch, device=device).uniform_(*LOG_ASPECT))
    # Widths and heights as fractions of the image side; a crop never leaves the image.
    width = torch.sqrt(area * aspect).clamp(max=1.0)
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    # Crop centres in grid_sample's [-1, 1] coordinates.
    centre_x = (torch.rand(batch, device=device) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(batch, device=device) * 2 - 1) * (1 - height)
    flip = torch.where(torch.rand(batch, device=device) < 0.5, -1.0, 1.0)
    theta = torch.zeros(batch, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 2] = width * flip, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta, [batch, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def jitter_factors(batch: int, strength: float, probability: float, device: torch.device) -> torch.Tensor:
    """B x 3 x 1 x 1 x 1 brightness, contrast and saturation factors in [1 - strength,
    1 + strength], all 1 for the pictures (1 - probability of them) left alone."""
    drawn = torch.empty(batch, 3, 1, 1, 1, device=device).uniform_(1 - strength, 1 + strength)
    applied = torch.rand(batch, 1, 1, 1, 1, device=device) < probability
    return torch.where(applied, drawn, torch.ones_like(drawn))


def color_jitter(images: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Brightness, contrast and saturation scaled by `factors` (jitter_factors). No hue shift
    and no greyscale (DINO has both): a subject's colours are part of its identity, which the
    DINO metric is to see."""
    luma = images.new_tensor(LUMA).view(1, 3, 1, 1)
    images = (images * factors[:, 0]).clamp(0, 1)                                  # brightness
    grey_mean = (images * luma).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    images = ((images - grey_mean) * factors[:, 1] + grey_mean).clamp(0, 1)        # contrast
    grey = (images * luma).sum(1, keepdim=True)
    return ((images - grey) * factors[:, 2] + grey).clamp(0, 1)                    # saturation
