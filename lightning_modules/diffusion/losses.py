"""The denoising objective shared by base pretraining and subject fine-tuning."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPTextModel


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, pixels: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> scaled VAE latents (the VAE is frozen whenever the UNet trains)."""
    latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample()
    return latents * vae.config.scaling_factor


def subject_weights(masks: torch.Tensor, size: tuple[int, int], subject_weight: float) -> torch.Tensor:
    """Per-pixel loss weights 1 + w * (share of the pixel covered by a subject), at `size`.

    SynthWorld's subjects cover about 5 % of a picture: with a plain mean the class of the
    subject is a few percent of the loss and a small model learns the scene long before it.
    The weights are normalised to mean 1 per image, so the loss keeps its scale."""
    coverage = F.interpolate(masks.float(), size=size, mode="area")
    weights = 1.0 + subject_weight * coverage
    return weights / weights.mean(dim=(1, 2, 3), keepdim=True)


def denoising_losses(unet: UNet2DConditionModel, text_encoder: CLIPTextModel, scheduler: DDPMScheduler,
                     latents: torch.Tensor, input_ids: torch.Tensor,
                     weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-sample noise-prediction loss || target - eps_theta(z_t, t, c) ||^2.

    The target is the noise (epsilon) or the velocity (v), as the scheduler's config says;
    timesteps are uniform over the training schedule. `weights` (N x 1 x h x w, at the
    latents' size) weigh the squared error per latent pixel.
    """
    noise = torch.randn_like(latents)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    context = text_encoder(input_ids)[0]
    prediction = unet(noisy, timesteps, context).sample
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        target = noise
    elif kind == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        raise ValueError(f"unsupported prediction_type {kind!r} (epsilon or v_prediction)")
    error = F.mse_loss(prediction.float(), target.float(), reduction="none")
    if weights is not None:
        error = error * weights
    return error.mean(dim=(1, 2, 3))
