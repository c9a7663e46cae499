"""Real renders with their class and scene labels, for the judge: image in [0, 1] at the judge's size."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from lightning_modules.core.errors import InputDataError
from lightning_modules.core.resumable import ResumableLoader, shuffled_loader
from lightning_modules.judges.network import resize_to

NO_SCENE = -1   # a render whose scene has no caption: it teaches the class head only


@dataclass(frozen=True)
class JudgedImage:
    image: Path
    class_index: int
    scene_index: int   # NO_SCENE when the scene has no caption


def read_pixels(path: Path) -> torch.Tensor:
    """3 x H x W float in [0, 1]; an unreadable file is an InputDataError naming it."""
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB")).copy()
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise InputDataError(f"{path}: not a readable image ({err.__class__.__name__})") from None
    return torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0


class JudgedImageDataset(Dataset):
    """All images decoded and resized once, when the dataset is made: at the judge's small size
    they take a few MB, and decoding the PNGs again every epoch would cost more than training."""

    def __init__(self, items: Sequence[JudgedImage], image_size: int):
        self.items = list(items)
        self.image_size = image_size
        pixels = [resize_to(read_pixels(item.image)[None], image_size)[0] for item in self.items]
        self.pixels = torch.stack(pixels) if pixels else torch.zeros(0, 3, image_size, image_size)
        self.class_targets = torch.tensor([item.class_index for item in self.items], dtype=torch.long)
        self.scene_targets = torch.tensor([item.scene_index for item in self.items], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.pixels[index], self.class_targets[index], self.scene_targets[index]


class JudgedImageDataModule(L.LightningDataModule):
    def __init__(self, splits: dict[str, Sequence[JudgedImage]], image_size: int, batch_size: int,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.splits, self.image_size, self.batch_size = splits, image_size, batch_size
        self.num_workers, self.seed = num_workers, seed
        self._datasets: dict[str, JudgedImageDataset] = {}

    def dataset(self, split: str) -> JudgedImageDataset:
        if split not in self._datasets:
            self._datasets[split] = JudgedImageDataset(self.splits[split], self.image_size)
        return self._datasets[split]

    def train_dataloader(self) -> ResumableLoader:
        # Shuffled by (seed, epoch) and resumable mid-epoch: a killed run resumes exactly.
        return shuffled_loader(self.dataset("train"), self.batch_size, seed=self.seed, num_workers=self.num_workers,
                               persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)
