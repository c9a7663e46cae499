"""ControlNet-OpenPose for the tiny model: built from its UNet, trained on SynthWorld's pose pairs.

ControlNet (Zhang et al. 2023) copies the UNet's encoder and middle block, feeds it the condition
image through a small convolutional embedding, and adds the copy's features to the frozen UNet's
skip connections through zero-initialised convolutions: at step 0 it changes nothing, and training
(the UNet, VAE and text encoder frozen, the plain denoising loss) teaches it to steer. diffusers'
`ControlNetModel.from_unet` builds it; a real checkpoint (an OpenPose ControlNet for SD 1.5) loads
by path with `ControlNetModel.from_pretrained` into the same sampler.

The condition embedding halves the image once per level after the first: it must bring the pose
image to the latent size, so it gets as many levels as the VAE halves plus one (Stable Diffusion:
a factor 8, four levels of 16, 32, 96 and 256 channels; the tiny 32-pixel model: a factor 2, two).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import yaml
from diffusers import ControlNetModel, UNet2DConditionModel
from PIL import Image

from lightning_modules.diffusion.data import CaptionedImage, CaptionedImages
from lightning_modules.diffusion.losses import encode_latents

# Stable Diffusion's condition embedding channels, one per level.
EMBEDDING_CHANNELS = (16, 32, 96, 256)


class PairsError(ValueError):
    """The pose pairs folder cannot be read: the message names the file and entry."""


def build_controlnet(unet: UNet2DConditionModel, resolution: int) -> ControlNetModel:
    """A ControlNet initialised from `unet` (its encoder's weights), whose condition embedding
    takes `resolution`-pixel images to the UNet's latent size."""
    factor = resolution // unet.config.sample_size
    if factor < 1 or factor & (factor - 1) or factor > 2 ** (len(EMBEDDING_CHANNELS) - 1):
        raise ValueError(f"the pose image ({resolution} px) must be a power of two, at most "
                         f"{2 ** (len(EMBEDDING_CHANNELS) - 1)}, times the latents' size ({unet.config.sample_size})")
    levels = int(math.log2(factor)) + 1
    return ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=EMBEDDING_CHANNELS[:levels])


def control_residuals(controlnet: ControlNetModel, latents: torch.Tensor, t: torch.Tensor, context: torch.Tensor,
                      condition: torch.Tensor, scale: float = 1.0) -> dict[str, object]:
    """The UNet's extra keyword arguments for one call: ControlNet's down-block and middle residuals."""
    down, middle = controlnet(latents, t, encoder_hidden_states=context, controlnet_cond=condition,
                              conditioning_scale=scale, return_dict=False)
    return {"down_block_additional_residuals": down, "mid_block_additional_residual": middle}


@dataclass(frozen=True)
class PosePair:
    image: Path
    pose: Path
    mask: Path
    caption: str


def read_pairs(folder: Path) -> list[PosePair]:
    """The pairs of a folder written by SynthWorld (poses/pairs.yaml), or one of your own in that
    format: {pairs: [{image, pose, mask, caption}, ...]}, paths relative to the folder."""
    index = folder / "pairs.yaml"
    if not index.is_file():
        raise PairsError(f"{index}: no pose pairs (run dvc repro synthesize, or write pairs.yaml)")
    try:
        entries = (yaml.safe_load(index.read_text()) or {}).get("pairs")
    except yaml.YAMLError as err:
        raise PairsError(f"{index}: not YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(entries, list) or not entries:
        raise PairsError(f"{index}: pairs: expected a non-empty list of {{image, pose, mask, caption}}")
    pairs = []
    for k, entry in enumerate(entries):
        missing = [key for key in ("image", "pose", "mask", "caption") if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise PairsError(f"{index}: pairs[{k}]: {missing[0]} missing")
        paths = {key: folder / str(entry[key]) for key in ("image", "pose", "mask")}
        absent = [key for key, path in paths.items() if not path.is_file()]
        if absent:
            raise PairsError(f"{index}: pairs[{k}].{absent[0]}: {paths[absent[0]]} not found")
        pairs.append(PosePair(caption=str(entry["caption"]), **paths))
    return pairs


def load_condition(path: Path, resolution: int) -> torch.Tensor:
    """A pose image -> 3 x r x r in [0, 1] (nearest: thin limbs keep their colours)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.size != (resolution, resolution):
            image = image.resize((resolution, resolution), Image.Resampling.NEAREST)
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


class PosePairs(CaptionedImages):
    """Picture, caption (dropped now and then, for classifier-free guidance) and pose image. The
    dropouts are redrawn every epoch by the loader's epoch listener (set_epoch), resumes included."""

    def __init__(self, pairs: Sequence[PosePair], tokenizer, resolution: int, caption_dropout: float = 0.0,
                 seed: int = 0):
        super().__init__([CaptionedImage(p.image, p.caption, p.mask) for p in pairs], tokenizer, resolution,
                         caption_dropout=caption_dropout, seed=seed)
        self.poses = [p.pose for p in pairs]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**super().__getitem__(index), "condition": load_condition(self.poses[index], self.resolution)}


class ControlNetTraining(L.LightningModule):
    """The denoising loss through the frozen UNet with ControlNet's residuals; ControlNet alone learns."""

    def __init__(self, controlnet: ControlNetModel, unet: UNet2DConditionModel, vae, text_encoder, scheduler,
                 lr: float, weight_decay: float):
        super().__init__()
        self.controlnet, self.unet, self.vae, self.text_encoder = controlnet, unet, vae, text_encoder
        self.noise_scheduler = scheduler
        self.lr, self.weight_decay = lr, weight_decay
        for frozen in (unet, vae, text_encoder):
            frozen.requires_grad_(False)

    def on_fit_start(self) -> None:
        self.controlnet.train()
        for frozen in (self.unet, self.vae, self.text_encoder):
            frozen.eval()

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.no_grad():
            latents = encode_latents(self.vae, batch["pixel_values"])
            context = self.text_encoder(batch["input_ids"])[0]
        noise = torch.randn_like(latents)
        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device)
        noisy = self.noise_scheduler.add_noise(latents, noise, t)
        residuals = control_residuals(self.controlnet, noisy, t, context, batch["condition"].to(noisy.dtype))
        prediction = self.unet(noisy, t, context, **residuals).sample
        return F.mse_loss(prediction.float(), noise.float())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.compute_loss(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"ControlNet loss is {loss.item()} at step {self.global_step}")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.controlnet.parameters(), lr=self.lr, weight_decay=self.weight_decay)


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def load_mask_array(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("L")
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(image) > 0

