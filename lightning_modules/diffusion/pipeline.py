"""Loading a text-to-image model from a diffusers directory and sampling from it.

The tiny model and a downloaded Stable Diffusion go through the same calls. Training uses
the DDPM schedule of the directory's scheduler config; sampling swaps in DDIM (fewer steps),
as schedulers are interchangeable objects in diffusers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from tqdm.auto import tqdm
from transformers import AutoTokenizer, CLIPTextModel

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def load_text_to_image(path: Path) -> dict:
    """The five Stable Diffusion components from `path` (a pipeline directory)."""
    path = Path(path)
    return {
        "unet": UNet2DConditionModel.from_pretrained(path, subfolder="unet"),
        "vae": AutoencoderKL.from_pretrained(path, subfolder="vae"),
        "text_encoder": CLIPTextModel.from_pretrained(path, subfolder="text_encoder"),
        "tokenizer": AutoTokenizer.from_pretrained(path, subfolder="tokenizer"),
        "scheduler": DDPMScheduler.from_pretrained(path, subfolder="scheduler"),
    }


def make_pipeline(components: dict) -> StableDiffusionPipeline:
    """A stock StableDiffusionPipeline over (possibly training) components, DDIM sampling."""
    pipe = StableDiffusionPipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=components["unet"], scheduler=DDIMScheduler.from_config(components["scheduler"].config),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_pipeline(components: dict, directory: Path) -> None:
    pipe = make_pipeline(components)
    pipe.scheduler = components["scheduler"]   # keep the training schedule in the saved directory
    pipe.save_pretrained(directory, safe_serialization=True)


def resolution_of(components: dict) -> int:
    """Pixel size the UNet was built for: latent size x the VAE's downsampling."""
    vae_scale = 2 ** (len(components["vae"].config.block_out_channels) - 1)
    return components["unet"].config.sample_size * vae_scale


@torch.no_grad()
def generate(pipe: StableDiffusionPipeline, prompts: Sequence[str], *, seed: int, steps: int,
             guidance_scale: float, progress: bool = True, desc: str = "generate") -> np.ndarray:
    """One image per prompt as N x H x W x 3 uint8. Image i always starts from the noise of
    generator (seed + i), so a prompt's picture does not depend on what else is in the batch."""
    modules = [pipe.unet, pipe.text_encoder, pipe.vae]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    size = resolution_of({"unet": pipe.unet, "vae": pipe.vae})
    images = []
    try:
        for i, prompt in enumerate(tqdm(prompts, desc=desc, unit="image", disable=not progress)):
            generator = torch.Generator(device="cpu").manual_seed(seed + i)
            out = pipe(prompt, num_inference_steps=steps, guidance_scale=guidance_scale, height=size, width=size,
                       generator=generator, output_type="np")
            images.append((np.clip(out.images[0], 0, 1) * 255).round().astype(np.uint8))
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)
    return np.stack(images)
