"""Validation images during fine-tuning: every N steps the current weights draw each
subject's prompt from fixed noise, so the grids of a run show the subject appearing."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import lightning as L
import numpy as np

from lightning_modules.diffusion.pipeline import generate, make_pipeline
from lightning_modules.core.visual import image_grid


class ValidationImages(L.Callback):
    def __init__(self, prompts: Sequence[str], every_n_steps: int, *, tokenizer: Any, seed: int, steps: int,
                 guidance_scale: float, sink: Callable[[int, np.ndarray], None]):
        self.prompts, self.every_n_steps, self.tokenizer = list(prompts), every_n_steps, tokenizer
        self.seed, self.steps, self.guidance_scale, self.sink = seed, steps, guidance_scale, sink

    def draw(self, module: L.LightningModule) -> np.ndarray:
        pipe = make_pipeline({"unet": module.unet, "vae": module.vae, "text_encoder": module.text_encoder,
                              "tokenizer": self.tokenizer, "scheduler": module.noise_scheduler})
        images = generate(pipe, self.prompts, seed=self.seed, steps=self.steps, guidance_scale=self.guidance_scale,
                          progress=False)
        return image_grid(list(images), columns=len(images))

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and trainer.is_global_zero:
            self.sink(step, self.draw(pl_module))
