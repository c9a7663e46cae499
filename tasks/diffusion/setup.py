"""What the diffusion stages share: SynthWorld captions, seeded loaders, and the pictures they log."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from lightning_modules.diffusion.data import CaptionedImage
from tasks.core.params import Params
from tasks.core.errors import InputDataError

DISPLAY_SCALE = 4   # tiny-model pictures are 32 px: enlarge them (nearest) for viewing


def manifest_rows(params: Params) -> list[dict]:
    manifest = params.paths.data / "augmented" / "manifest.csv"
    if not manifest.is_file():
        raise InputDataError(f"{manifest}: missing; run the augment stage first (dvc repro augment)")
    with manifest.open(newline="") as f:
        return list(csv.DictReader(f))


def class_captions(params: Params) -> list[CaptionedImage]:
    """Training images of the augment stage captioned by class and scene only
    ("a cartoon on a beach"): what a base model knows before it meets the subjects."""
    root = params.paths.data / "augmented"
    return [CaptionedImage(root / row["image"], f"a {row['class_noun']} {row['scene_caption']}".strip())
            for row in manifest_rows(params) if row["split"] == "train"]


def seeded_loader(dataset: Dataset, batch_size: int, params: Params, shuffle: bool = True) -> DataLoader:
    generator = torch.Generator().manual_seed(params.seed)
    return DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=shuffle, drop_last=True,
                      num_workers=params.trainer.num_workers, generator=generator)


def enlarge(picture: np.ndarray, scale: int = DISPLAY_SCALE) -> np.ndarray:
    return np.asarray(Image.fromarray(picture).resize((picture.shape[1] * scale, picture.shape[0] * scale),
                                                       Image.Resampling.NEAREST))
