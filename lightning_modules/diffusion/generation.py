"""Generation as Lightning `predict`: a prompt set's items drawn on one device or many.

Each item's starting noise comes from a generator seeded with the item's own seed (on the
CPU, whatever the device), and DDIM sampling adds no noise of its own. Batches are fixed
chunks of the prompt set (items 0..B-1, B..2B-1, ...), dealt whole to the ranks: a batch's
arithmetic can differ in the last bit with its composition (a 1-level pixel change in about
1 of 50,000 values, measured), so keeping the chunks fixed makes an image bit-identical on
1 or N devices (given the same intra-op threads per process: on a CPU the thread count also
orders a matmul's sums). The ranks' images are gathered to rank zero by index (the distributed
sampler pads the last ranks with repeated chunks; the index keeps one of each).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import lightning as L
import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from lightning.pytorch.callbacks import BasePredictionWriter
from torch.utils.data import DataLoader, Dataset

from lightning_modules.diffusion.pipeline import resolution_of
from lightning_modules.diffusion.prompt_sets import PromptItem


class PromptChunks(Dataset):
    """A prompt set as fixed batches: element k is items [kB, (k+1)B)."""

    def __init__(self, items: Sequence[PromptItem], batch_size: int):
        self.items, self.batch_size = list(items), batch_size

    def __len__(self) -> int:
        return -(-len(self.items) // self.batch_size)

    def __getitem__(self, chunk: int) -> dict[str, Any]:
        items = self.items[chunk * self.batch_size:(chunk + 1) * self.batch_size]
        return {"index": torch.tensor([i.index for i in items]), "prompt": [i.prompt for i in items],
                "seed": [i.seed for i in items]}


def prompt_loader(items: Sequence[PromptItem], batch_size: int) -> DataLoader:
    """In order, one chunk per batch (no automatic batching); Lightning deals the chunks over
    the ranks with its distributed sampler."""
    return DataLoader(PromptChunks(items, batch_size), batch_size=None, shuffle=False)


class TextToImageGenerator(L.LightningModule):
    """Draws a batch of prompts with a stock pipeline; images come back as uint8 N x H x W x 3."""

    def __init__(self, pipe: StableDiffusionPipeline, steps: int, guidance_scale: float):
        super().__init__()
        self.pipe = pipe
        # Registered so that Lightning moves them to the device (the pipeline follows them).
        self.unet, self.vae, self.text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
        self.steps, self.guidance_scale = steps, guidance_scale
        self.size = resolution_of({"unet": pipe.unet, "vae": pipe.vae})

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, torch.Tensor]:
        seeds = [int(s) for s in batch["seed"]]
        generators = [torch.Generator(device="cpu").manual_seed(seed) for seed in seeds]
        out = self.pipe(list(batch["prompt"]), num_inference_steps=self.steps, guidance_scale=self.guidance_scale,
                        height=self.size, width=self.size, generator=generators, output_type="np")
        images = (np.clip(out.images, 0, 1) * 255).round().astype(np.uint8)
        return {"index": batch["index"], "images": torch.from_numpy(images)}


class GatheredImages(BasePredictionWriter):
    """Collects every rank's images on rank zero, keyed by item index."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.images: dict[int, np.ndarray] = {}

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Sequence[Any],
                           batch_indices: Optional[Sequence[Any]]) -> None:
        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        index = torch.cat([b["index"] for b in batches]).to(pl_module.device)
        images = torch.cat([b["images"] for b in batches]).to(pl_module.device)
        if trainer.world_size > 1:
            # Ranks hold as many chunks, not always as many items (the last chunk may be
            # short): pad to the longest with index -1 so that all_gather's shapes agree.
            longest = int(pl_module.all_gather(torch.tensor(len(index), device=index.device)).max())
            pad = longest - len(index)
            index = torch.cat([index, index.new_full((pad,), -1)])
            images = torch.cat([images, images.new_zeros((pad, *images.shape[1:]))])
            index = pl_module.all_gather(index).flatten(0, 1)
            images = pl_module.all_gather(images).flatten(0, 1)
        if trainer.is_global_zero:
            for i, image in zip(index.cpu().tolist(), images.cpu().numpy()):
                if i >= 0:
                    self.images.setdefault(int(i), image)
