"""Base-model pretraining for the tiny models: the prior DreamBooth preserves, and a CLIP
whose image/text similarities mean something on SynthWorld.

- `VaePretrainer`: the autoencoder first (reconstruction + a small KL term), so latents are
  a compressed image and decoding gives pictures;
- `TextToImagePretrainer`: UNet and text encoder on captions ("a cartoon on a beach") with
  the VAE frozen; captions are dropped at random (redrawn every epoch) so classifier-free
  guidance works;
- `ClipPretrainer`: CLIP's symmetric contrastive loss on image/caption pairs.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import CLIPModel, CLIPTextModel

from lightning_modules.diffusion.losses import denoising_losses, encode_latents, subject_weights
from lightning_modules.core.losses import check_finite
from lightning_modules.core.optim import adam


class VaePretrainer(L.LightningModule):
    def __init__(self, vae: AutoencoderKL, lr: float, kl_weight: float, subject_weight: float = 0.0):
        super().__init__()
        self.vae, self.lr, self.kl_weight = vae, lr, kl_weight
        self.subject_weight = subject_weight   # see losses.subject_weights; needs "subject_mask"

    def on_fit_start(self) -> None:
        self.vae.train()

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, reconstruction loss): reconstruction MSE (weighted towards the subjects' pixels)
        + kl_weight * KL per pixel value."""
        pixels = batch["pixel_values"]
        posterior = self.vae.encode(pixels).latent_dist
        reconstruction = self.vae.decode(posterior.sample()).sample
        error = F.mse_loss(reconstruction, pixels, reduction="none")
        if self.subject_weight:
            error = error * subject_weights(batch["subject_mask"], pixels.shape[-2:], self.subject_weight)
        reconstruction_loss = error.mean()
        kl = posterior.kl().mean() / pixels[0].numel()
        return reconstruction_loss + self.kl_weight * kl, reconstruction_loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, reconstruction_loss = self.compute_loss(batch)
        check_finite(loss, "VAE loss", self.global_step)
        self.log("train/reconstruction", reconstruction_loss, on_step=True, on_epoch=False)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return adam(self.vae.parameters(), lr=self.lr, weight_decay=0.0)


@torch.no_grad()
def latent_scaling_factor(vae: AutoencoderKL, pixels: torch.Tensor) -> float:
    """1 / std of the latents, so the diffusion model sees unit-variance inputs (the role
    of Stable Diffusion's 0.18215)."""
    latents = vae.encode(pixels).latent_dist.sample()
    return float(1.0 / latents.std().clamp_min(1e-6))


class TextToImagePretrainer(L.LightningModule):
    def __init__(self, unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder: CLIPTextModel,
                 scheduler: DDPMScheduler, lr: float, weight_decay: float, subject_weight: float = 0.0):
        super().__init__()
        self.unet, self.vae, self.text_encoder, self.noise_scheduler = unet, vae, text_encoder, scheduler
        self.lr, self.weight_decay = lr, weight_decay
        self.subject_weight = subject_weight   # see losses.subject_weights; needs "subject_mask"
        vae.requires_grad_(False)

    def on_fit_start(self) -> None:
        # from_pretrained hands over modules in eval mode; the frozen VAE stays there.
        self.unet.train()
        self.text_encoder.train()
        self.vae.eval()

    def on_train_start(self) -> None:
        # A resumed run starts mid-epoch, where Lightning skips on_train_epoch_start.
        self._redraw_caption_dropout()

    def on_train_epoch_start(self) -> None:
        self._redraw_caption_dropout()

    def _redraw_caption_dropout(self) -> None:
        # Pretraining runs by max_steps over many epochs: without this the same images would be
        # the unconditional ones in every epoch. A loader with workers forks them when an epoch's
        # iterator is made, which Lightning does after this hook, except for the first epoch of a
        # run (a resumed run's workers draw that one epoch as epoch 0 would).
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if "latent_mean" in batch:   # encoded once by data.EncodedImages: sample from the posterior
            mean, std = batch["latent_mean"], batch["latent_std"]
            latents = (mean + std * torch.randn_like(mean)) * self.vae.config.scaling_factor
        else:
            latents = encode_latents(self.vae, batch["pixel_values"])
        weights = subject_weights(batch["subject_mask"], latents.shape[-2:], self.subject_weight) \
            if self.subject_weight else None
        return denoising_losses(self.unet, self.text_encoder, self.noise_scheduler, latents, batch["input_ids"],
                                weights).mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = check_finite(self.compute_loss(batch), "denoising loss", self.global_step)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return adam(params, lr=self.lr, weight_decay=self.weight_decay)


class ClipPretrainer(L.LightningModule):
    def __init__(self, clip: CLIPModel, lr: float, weight_decay: float):
        super().__init__()
        self.clip, self.lr, self.weight_decay = clip, lr, weight_decay

    def on_fit_start(self) -> None:
        self.clip.train()

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """CLIP's symmetric cross-entropy over the batch's image/caption similarities.

        Hard negative captions (NegCLIP, Yuksekgonul et al. 2023), where the batch has them, join
        the captions every image is matched against: a face must then tell "a person with
        glasses" from the same caption without them, which the batch's other captions, differing
        in hair from most faces, seldom ask. They are not pictures, so the caption-to-image
        direction stays over the batch's own captions."""
        ids = batch["input_ids"]
        texts = ids
        if "negative_input_ids" in batch:
            texts = torch.cat([ids, batch["negative_input_ids"][batch["negative_mask"]]])
        out = self.clip(input_ids=texts, pixel_values=batch["pixel_values"])
        # Same captions are positives of each other, not negatives: CLIP's one-hot targets would
        # push apart two "a dog on a beach" pictures (or a face from a negative that is its caption).
        same = (ids[:, None, :] == texts[None, :, :]).all(-1).float()
        logits = out.logits_per_image
        own = len(ids)
        image_to_text = torch.sum(-same / same.sum(1, keepdim=True) * F.log_softmax(logits, 1), 1).mean()
        same_own = same[:, :own].t()
        text_to_image = torch.sum(-same_own / same_own.sum(1, keepdim=True) * F.log_softmax(logits[:, :own].t(), 1),
                                  1).mean()
        return 0.5 * (image_to_text + text_to_image)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = check_finite(self.compute_loss(batch), "CLIP loss", self.global_step)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return adam(self.clip.parameters(), lr=self.lr, weight_decay=self.weight_decay)

