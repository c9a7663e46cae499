"""Image/caption datasets for the diffusion stages (the stage hands over paths and prompts)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class CaptionedImage:
    path: Path
    caption: str
    mask: Optional[Path] = None   # where the subjects are (non-zero); None: no subject in the picture
    # Hard negative captions: what the picture is not, one detail away from `caption` (CLIP).
    negatives: tuple[str, ...] = ()


def load_pixels(path: Path, resolution: int) -> torch.Tensor:
    """RGB image -> 3 x r x r float tensor in [-1, 1] (area-resized, as diffusion models expect)."""
    with Image.open(path) as image:
        image = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BOX)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def load_mask(path: Optional[Path], resolution: int) -> torch.Tensor:
    """1 x r x r float subject mask in [0, 1] (area-resized, so a thin subject keeps its share
    of each pixel); zeros where `path` is None."""
    if path is None:
        return torch.zeros(1, resolution, resolution)
    with Image.open(path) as image:
        mask = Image.fromarray((np.asarray(image.convert("L")) > 0).astype(np.uint8) * 255)
    mask = mask.resize((resolution, resolution), Image.Resampling.BOX)
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None]


def tokenize(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> torch.Tensor:
    return tokenizer(list(prompts), padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


class CaptionedImages(Dataset):
    """Pairs for base pretraining and CLIP. A caption is dropped (replaced by "") with
    probability `caption_dropout`, which is what classifier-free guidance samples from.

    Which captions are dropped is drawn from (seed, epoch, index): redrawn every epoch, so over
    a run every image serves now and then as an unconditional sample (not the same tenth every
    time), yet reproducible by seed and alike on every rank. The training module moves the
    epoch on (`set_epoch`) at every epoch start."""

    def __init__(self, items: Sequence[CaptionedImage], tokenizer: PreTrainedTokenizerBase, resolution: int,
                 caption_dropout: float = 0.0, seed: int = 0, image_processor: Callable | None = None,
                 masks: bool = False, negatives: int = 0):
        self.items, self.tokenizer, self.resolution = list(items), tokenizer, resolution
        self.masks = masks   # also hand over each item's subject mask ("subject_mask")
        # Hand over up to `negatives` hard negative captions per item ("negative_input_ids", and
        # "negative_mask": which of the K rows are real; an item may have fewer or none).
        self.negatives = negatives
        # A CLIP image processor normalises as the vision tower expects; else [-1, 1].
        self.image_processor = image_processor
        self.caption_dropout, self.seed = caption_dropout, seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def dropped(self, index: int) -> bool:
        """Whether item `index` goes without its caption in the current epoch."""
        return bool(self.caption_dropout) and \
            random.Random(f"{self.seed}/{self.epoch}/{index}").random() < self.caption_dropout

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.items[index]
        if self.image_processor is not None:
            with Image.open(item.path) as image:
                pixels = self.image_processor(images=image.convert("RGB"), return_tensors="pt").pixel_values[0]
        else:
            pixels = load_pixels(item.path, self.resolution)
        return {"pixel_values": pixels, **self.conditioning(index)}

    def conditioning(self, index: int) -> dict[str, torch.Tensor]:
        """What goes with item `index`'s picture: its caption's ids (empty when dropped this
        epoch) and, with `masks`, its subject mask."""
        item = self.items[index]
        caption = "" if self.dropped(index) else item.caption
        sample = {"input_ids": tokenize(self.tokenizer, [caption])[0]}
        if self.masks:
            sample["subject_mask"] = load_mask(item.mask, self.resolution)
        if self.negatives:
            kept = list(item.negatives[:self.negatives])
            sample["negative_input_ids"] = tokenize(self.tokenizer, kept + [""] * (self.negatives - len(kept)))
            sample["negative_mask"] = torch.arange(self.negatives) < len(kept)
        return sample


class EncodedImages(Dataset):
    """A CaptionedImages whose pictures come as the frozen VAE's latent distribution (mean and
    std per latent pixel), encoded once instead of at every step: with the VAE frozen the UNet's
    training sees the same distribution, and a step skips the encoder (on the tiny 32 px model
    about a tenth of a step; more at higher resolutions). Latents are sampled from it in the
    training step. Captions, their dropout and the subject masks are the wrapped dataset's."""

    def __init__(self, images: CaptionedImages, vae, batch_size: int = 64):
        self.images = images
        means, stds = [], []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                pixels = torch.stack([load_pixels(item.path, images.resolution)
                                      for item in images.items[start:start + batch_size]])
                distribution = vae.encode(pixels.to(vae.dtype)).latent_dist
                means.append(distribution.mean.float())
                stds.append(distribution.std.float())
        self.means, self.stds = torch.cat(means), torch.cat(stds)

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.images.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"latent_mean": self.means[index], "latent_std": self.stds[index], **self.images.conditioning(index)}


class DreamBoothPairs(Dataset):
    """Instance images with their "a <id> <class>" prompts, each paired with a class image of
    the same class and its "a <class>" prompt (prior preservation), drawn in turn."""

    def __init__(self, instances: Sequence[CaptionedImage], instance_classes: Sequence[str],
                 class_images: dict[str, Sequence[CaptionedImage]], tokenizer: PreTrainedTokenizerBase,
                 resolution: int, masks: bool = False):
        self.instances, self.instance_classes = list(instances), list(instance_classes)
        self.masks = masks   # also hand over the instance's subject mask ("subject_mask")
        self.class_images = {k: list(v) for k, v in class_images.items()}
        self.tokenizer, self.resolution = tokenizer, resolution
        self.prior = bool(self.class_images)

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.instances[index]
        sample = {"pixel_values": load_pixels(item.path, self.resolution),
                  "input_ids": tokenize(self.tokenizer, [item.caption])[0]}
        if self.masks:
            sample["subject_mask"] = load_mask(item.mask, self.resolution)
        if self.prior:
            pool = self.class_images[self.instance_classes[index]]
            prior = pool[index % len(pool)]
            sample["class_pixel_values"] = load_pixels(prior.path, self.resolution)
            sample["class_input_ids"] = tokenize(self.tokenizer, [prior.caption])[0]
        return sample
