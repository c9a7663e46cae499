"""Image/caption datasets for the diffusion stages (the stage hands over paths and prompts)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class CaptionedImage:
    path: Path
    caption: str


def load_pixels(path: Path, resolution: int) -> torch.Tensor:
    """RGB image -> 3 x r x r float tensor in [-1, 1] (area-resized, as diffusion models expect)."""
    with Image.open(path) as image:
        image = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BOX)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


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
                 caption_dropout: float = 0.0, seed: int = 0, image_processor: Callable | None = None):
        self.items, self.tokenizer, self.resolution = list(items), tokenizer, resolution
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
        caption = "" if self.dropped(index) else item.caption
        if self.image_processor is not None:
            with Image.open(item.path) as image:
                pixels = self.image_processor(images=image.convert("RGB"), return_tensors="pt").pixel_values[0]
        else:
            pixels = load_pixels(item.path, self.resolution)
        return {"pixel_values": pixels, "input_ids": tokenize(self.tokenizer, [caption])[0]}


class DreamBoothPairs(Dataset):
    """Instance images with their "a <id> <class>" prompts, each paired with a class image of
    the same class and its "a <class>" prompt (prior preservation), drawn in turn."""

    def __init__(self, instances: Sequence[CaptionedImage], instance_classes: Sequence[str],
                 class_images: dict[str, Sequence[CaptionedImage]], tokenizer: PreTrainedTokenizerBase,
                 resolution: int):
        self.instances, self.instance_classes = list(instances), list(instance_classes)
        self.class_images = {k: list(v) for k, v in class_images.items()}
        self.tokenizer, self.resolution = tokenizer, resolution
        self.prior = bool(self.class_images)

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.instances[index]
        sample = {"pixel_values": load_pixels(item.path, self.resolution),
                  "input_ids": tokenize(self.tokenizer, [item.caption])[0]}
        if self.prior:
            pool = self.class_images[self.instance_classes[index]]
            prior = pool[index % len(pool)]
            sample["class_pixel_values"] = load_pixels(prior.path, self.resolution)
            sample["class_input_ids"] = tokenize(self.tokenizer, [prior.caption])[0]
        return sample
