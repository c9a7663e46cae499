"""Faces with their attribute and identity targets, for the face judge: images in [0, 1] at the
judge's size, targets in the order of FaceAttributeClassifier.head_names."""

from __future__ import annotations

from typing import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_modules.core.resumable import ResumableLoader, shuffled_loader
from lightning_modules.data.faces import FaceRecord
from lightning_modules.judges.data import read_pixels
from lightning_modules.judges.network import resize_to


def face_targets(records: Sequence[FaceRecord], attributes: Sequence[str], identities: Sequence[int]) -> torch.Tensor:
    """N x (attributes + 1): each record's value index per attribute, then its identity's index."""
    index = {identity: i for i, identity in enumerate(identities)}
    rows = [[record.attributes[name] for name in attributes] + [index[record.identity]] for record in records]
    return torch.tensor(rows, dtype=torch.long).view(len(rows), len(attributes) + 1)


class FaceAttributeDataset(Dataset):
    """All faces decoded and resized once, when the dataset is made (a thousand 64 px faces are
    50 MB as floats; decoding the PNGs again every epoch would cost more than the training)."""

    def __init__(self, records: Sequence[FaceRecord], attributes: Sequence[str], identities: Sequence[int],
                 image_size: int):
        self.records = list(records)
        pixels = [resize_to(read_pixels(record.image)[None], image_size)[0] for record in self.records]
        self.pixels = torch.stack(pixels) if pixels else torch.zeros(0, 3, image_size, image_size)
        self.targets = face_targets(self.records, attributes, identities)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.pixels[index], self.targets[index]


class FaceAttributeDataModule(L.LightningDataModule):
    def __init__(self, splits: dict[str, Sequence[FaceRecord]], attributes: Sequence[str], identities: Sequence[int],
                 image_size: int, batch_size: int, num_workers: int = 0, seed: int = 0):
        super().__init__()
        self.splits, self.attributes, self.identities = splits, list(attributes), list(identities)
        self.image_size, self.batch_size, self.num_workers, self.seed = image_size, batch_size, num_workers, seed
        self._datasets: dict[str, FaceAttributeDataset] = {}

    def dataset(self, split: str) -> FaceAttributeDataset:
        if split not in self._datasets:
            self._datasets[split] = FaceAttributeDataset(self.splits[split], self.attributes, self.identities,
                                                         self.image_size)
        return self._datasets[split]

    def train_dataloader(self) -> ResumableLoader:
        # Shuffled by (seed, epoch) and resumable mid-epoch: a killed run resumes exactly.
        return shuffled_loader(self.dataset("train"), self.batch_size, seed=self.seed, num_workers=self.num_workers,
                               persistent_workers=self.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), batch_size=self.batch_size, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0)
