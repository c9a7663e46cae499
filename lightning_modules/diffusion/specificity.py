"""Does fine-tuning change what the identifier prompt asks for, and not what other prompts ask for?

With classifier-free guidance a prompt c steers sampling through its guidance direction

    g(c) = eps(z_t, t, c) - eps(z_t, t, "")

so the change of g(c) from the base model to the fine-tuned one, on the same noisy latents,
is what fine-tuning did to the meaning of c. The change of eps(z_t, t, "") itself is the same
for every prompt and is left out. DreamBooth wants g("a <id> <class>") to move (the subject)
and g of other prompts to stay (no language drift); the ratio of the two is the identifier's
specificity. Textual inversion trains only the identifier rows, so other prompts' shift is
exactly zero there.
"""

from __future__ import annotations

from typing import Sequence

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel, PreTrainedTokenizerBase

from lightning_modules.diffusion.data import tokenize


@torch.no_grad()
def probe_latents(vae: AutoencoderKL, scheduler: DDPMScheduler, pixels: torch.Tensor, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed noisy latents of `pixels` (in [-1, 1]) at timesteps spread over the schedule:
    the posterior mode (no sampling) and seeded noise, so the probe is the same every time."""
    latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mode() * vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed)).to(latents)
    last = scheduler.config.num_train_timesteps - 1
    timesteps = torch.linspace(0.1 * last, 0.9 * last, len(latents)).round().long().to(latents.device)
    return scheduler.add_noise(latents, noise, timesteps), timesteps


@torch.no_grad()
def guidance_directions(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, tokenizer: PreTrainedTokenizerBase,
                        noisy: torch.Tensor, timesteps: torch.Tensor, prompts: Sequence[str]
                        ) -> dict[str, torch.Tensor]:
    """g(c) for each prompt on the probe latents (float32, on the CPU)."""
    modes = [unet.training, text_encoder.training]
    unet.eval()
    text_encoder.eval()
    try:
        def eps(prompt: str) -> torch.Tensor:
            ids = tokenize(tokenizer, [prompt] * len(noisy)).to(text_encoder.device)
            context = text_encoder(ids)[0].to(unet.dtype)
            return unet(noisy.to(unet.device, unet.dtype), timesteps.to(unet.device), context).sample.float().cpu()

        unconditional = eps("")
        return {prompt: eps(prompt) - unconditional for prompt in prompts}
    finally:
        unet.train(modes[0])
        text_encoder.train(modes[1])


def prompt_shift(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> dict[str, float]:
    """Mean absolute change of each prompt's guidance direction."""
    return {prompt: float((after[prompt] - before[prompt]).abs().mean()) for prompt in before}


def specificity(shift: dict[str, float], identifier_prompts: Sequence[str], other_prompts: Sequence[str]
                ) -> dict[str, float]:
    """Mean shift of the identifier prompts, mean and largest shift of the others, and the ratio
    of the identifier mean to the largest other (inf when no other prompt moved at all)."""
    identifier = sum(shift[p] for p in identifier_prompts) / len(identifier_prompts)
    others = [shift[p] for p in other_prompts]
    largest = max(others)
    return {"identifier_shift": identifier, "other_shift": sum(others) / len(others), "largest_other_shift": largest,
            "specificity": identifier / largest if largest > 0 else float("inf")}


class LanguageDrift:
    """The guidance directions of the identifier prompts and of other prompts (class prompts,
    scene-only prompts) on fixed noisy latents of the subjects' `pixels`, measured at
    construction (before fine-tuning) and again by `measure` (after it).

    `components` holds the unet, vae, text_encoder, tokenizer and scheduler being fine-tuned;
    they are read, not copied, so `measure` sees whatever training did to them."""

    def __init__(self, components: dict, identifier_prompts: Sequence[str], other_prompts: Sequence[str],
                 pixels: torch.Tensor, seed: int):
        self.components = components
        self.identifier_prompts, self.other_prompts = list(identifier_prompts), list(other_prompts)
        self.noisy, self.timesteps = probe_latents(components["vae"], components["scheduler"], pixels, seed)
        self.before = self.directions()

    def directions(self) -> dict[str, torch.Tensor]:
        c = self.components
        return guidance_directions(c["unet"], c["text_encoder"], c["tokenizer"], self.noisy, self.timesteps,
                                   self.identifier_prompts + self.other_prompts)

    def measure(self) -> dict:
        """`specificity` of the shifts since construction, and every prompt's shift, rounded."""
        shift = prompt_shift(self.before, self.directions())
        result = specificity(shift, self.identifier_prompts, self.other_prompts)
        # JSON and MLflow have no infinity: no other prompt moved at all (textual inversion)
        result = {k: (round(v, 6) if v != float("inf") else None) for k, v in result.items()}
        return {**result, "prompts": {p: round(v, 6) for p, v in shift.items()}}
