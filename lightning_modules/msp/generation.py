"""MSP generation as Lightning `predict`: compositions drawn on one device or many.

One batch is one composition with all its seeds (its segments go through the UNet together,
tracks x seeds). The batches are dealt whole to the ranks, and every image starts from its own
seed's noise, so an image is the same on 1 or N devices; the platform's `GatheredImages`
collects them on rank zero by item index.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_modules.msp.sampler import CompositeSampler


@dataclass
class CompositionJob:
    """One composition to draw: its item indices and seeds, masks, prompts, scaffolding and pose."""

    indices: list[int]
    seeds: list[int]
    masks: torch.Tensor                     # S x H x W bool
    prompts: list[str]
    global_prompt: str
    subject_segments: list[int]
    scaffolding: Optional[torch.Tensor]     # 3 x H x W in [0, 1]
    pose: Optional[torch.Tensor] = None     # 3 x H x W in [0, 1]: ControlNet's condition


class CompositionJobs(Dataset):
    def __init__(self, jobs: Sequence[CompositionJob]):
        self.jobs = list(jobs)

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, k: int) -> dict[str, Any]:
        job = self.jobs[k]
        return {"index": torch.tensor(job.indices), "seeds": job.seeds, "masks": job.masks, "prompts": job.prompts,
                "global_prompt": job.global_prompt, "subject_segments": job.subject_segments,
                "scaffolding": job.scaffolding, "pose": job.pose}


def composition_loader(jobs: Sequence[CompositionJob]) -> DataLoader:
    """One composition per batch, in order (no automatic batching: the jobs differ in segments)."""
    return DataLoader(CompositionJobs(jobs), batch_size=None, shuffle=False, collate_fn=lambda job: job)


class CompositionGenerator(L.LightningModule):
    def __init__(self, sampler: CompositeSampler):
        super().__init__()
        self.sampler = sampler
        # Registered so that Lightning moves them to the device (the sampler uses the same objects).
        self.unet, self.vae, self.text_encoder = sampler.unet, sampler.vae, sampler.text_encoder
        self.segmenter, self.controlnet = sampler.segmenter, sampler.controlnet
        self.sal_loss: list[float] = []

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        generators = [torch.Generator(device="cpu").manual_seed(int(s)) for s in batch["seeds"]]
        images = self.sampler(batch["masks"], batch["prompts"], batch["global_prompt"], generators,
                              scaffolding=batch["scaffolding"], subject_segments=batch["subject_segments"],
                              pose=batch["pose"])
        self.sal_loss += self.sampler.trace.sal_loss
        pixels = (images.permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
        return {"index": batch["index"], "images": torch.from_numpy(pixels)}
