"""Segmentation samples: image in [0, 1] and per-pixel class indices, from a subject's binary mask
(the augment manifest: label = subject index) or from a label map whose values are the classes
(SynthWorld's face part maps: label None)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lightning_modules.core.resumable import ResumableLoader, shuffled_loader


@dataclass(frozen=True)
class SegmentationItem:
    image: Path
    mask: Path
    label: Optional[int]  # class index of the subject (0 is background); None: the mask holds the classes


class SubjectSegmentationDataset(Dataset):
    def __init__(self, items: Sequence[SegmentationItem], image_size: int):
        self.items = list(items)
        # The U-Net halves the resolution five times.
        self.size = max(32, image_size // 32 * 32)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.items[index]
        image = Image.open(item.image).convert("RGB")
        mask = self._open_mask(item)
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BILINEAR)
            mask = mask.resize((self.size, self.size), Image.NEAREST)
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255.0
        return pixels, torch.from_numpy(self._labels(item, mask))

    @staticmethod
    def _open_mask(item: SegmentationItem) -> Image.Image:
        mask = Image.open(item.mask)
        # A label map is read by value (a palette map by index): converting it would change the labels.
        return mask if item.label is None and mask.mode in ("L", "P") else mask.convert("L")

    @staticmethod
    def _labels(item: SegmentationItem, mask: Image.Image) -> np.ndarray:
        values = np.asarray(mask).astype(np.int64)
        return values if item.label is None else (values > 0).astype(np.int64) * item.label

    def class_pixel_counts(self, num_classes: int) -> torch.Tensor:
        """Pixels of each class over the whole split, at the training size (masks only are read)."""
        counts = torch.zeros(num_classes, dtype=torch.long)
        for item in self.items:
            mask = self._open_mask(item)
            if mask.size != (self.size, self.size):
                mask = mask.resize((self.size, self.size), Image.NEAREST)
            counts += torch.bincount(torch.from_numpy(self._labels(item, mask)).flatten(), minlength=num_classes)
        return counts


class SubjectSegmentationDataModule(L.LightningDataModule):
    def __init__(self, splits: dict[str, Sequence[SegmentationItem]], image_size: int, batch_size: int,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.splits = splits
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(SubjectSegmentationDataset(self.splits[split], self.image_size), batch_size=self.batch_size,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> ResumableLoader:
        # Shuffled by (seed, epoch) and resumable mid-epoch: a killed run resumes exactly.
        return shuffled_loader(SubjectSegmentationDataset(self.splits["train"], self.image_size), self.batch_size,
                               seed=self.seed, num_workers=self.num_workers,
                               persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
