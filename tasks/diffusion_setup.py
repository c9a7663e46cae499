"""What the diffusion stages share: SynthWorld captions, step-counted resumable fits,
and the pictures they log."""

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
from lightning_modules.training import MetricsHistory
from tasks.config import Params
from tasks.errors import InputDataError
from tasks.trainer import build_trainer, checkpoint_dir, mlflow_logger, resume_path

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


def fit_steps(params: Params, stage: str, module: L.LightningModule, loader: DataLoader, *, max_steps: int,
              run, checkpoint_key: dict, callbacks: Sequence[L.Callback] = (), accumulate_grad_batches: int = 1
              ) -> tuple[L.Trainer, MetricsHistory, Path]:
    """Train for `max_steps` optimizer steps with the shared Trainer factory, resuming from
    the last checkpoint a killed run left under the same key."""
    checkpoints = checkpoint_dir(params, stage, checkpoint_key)
    resume: Optional[Path] = resume_path(checkpoints)
    if resume is not None and run is not None:
        print(f"Resuming {stage} from {resume}", flush=True)
    history = MetricsHistory(every_n_steps=params.trainer.log_every_n_steps, val_keys=())
    trainer = build_trainer(params, checkpoints=checkpoints, max_epochs=-1, max_steps=max_steps,
                            logger=mlflow_logger(params, run) if run is not None else False,
                            callbacks=[history, *callbacks], limit_val_batches=0,
                            accumulate_grad_batches=accumulate_grad_batches)
    trainer.fit(module, train_dataloaders=loader, ckpt_path=resume)
    return trainer, history, checkpoints


def enlarge(picture: np.ndarray, scale: int = DISPLAY_SCALE) -> np.ndarray:
    return np.asarray(Image.fromarray(picture).resize((picture.shape[1] * scale, picture.shape[0] * scale),
                                                       Image.Resampling.NEAREST))
