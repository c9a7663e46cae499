"""Builders of the tiny base models: the same diffusers / transformers classes as Stable
Diffusion, CLIP and DINO, shrunk to run on a CPU in seconds.

Each builder returns freshly initialised modules; the zoo stage saves them with
`save_pretrained`, and every later stage loads them with `from_pretrained`, the code path a
real stable-diffusion-2-1-base or CLIP ViT-B/32 directory takes too.
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModel,
    CLIPVisionConfig,
    PreTrainedTokenizerFast,
    ViTConfig,
    ViTImageProcessor,
    ViTModel,
)


@dataclass(frozen=True)
class TinySizes:
    resolution: int = 32          # pixels; the VAE halves it once per level after the first
    latent_channels: int = 4
    vae_channels: tuple[int, ...] = (32, 64)   # 2 levels: latents at resolution / 2; 3: / 4
    unet_channels: tuple[int, ...] = (32, 64)
    text_width: int = 64          # text encoder hidden size = UNet cross-attention width
    text_layers: int = 2
    vision_width: int = 64
    vision_layers: int = 2
    patch_size: int = 4
    projection_dim: int = 64


def _text_config(vocab_size: int, max_length: int, sizes: TinySizes, eos_token_id: int, bos_token_id: int) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=vocab_size, hidden_size=sizes.text_width, intermediate_size=2 * sizes.text_width,
                          num_hidden_layers=sizes.text_layers, num_attention_heads=max(1, sizes.text_width // 32),
                          max_position_embeddings=max_length, projection_dim=sizes.projection_dim,
                          bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id)


def tiny_text_to_image(tokenizer: PreTrainedTokenizerFast, sizes: TinySizes) -> dict:
    """Stable Diffusion's five components: UNet, VAE, text encoder, tokenizer, scheduler."""
    text_encoder = CLIPTextModel(_text_config(len(tokenizer), tokenizer.model_max_length, sizes,
                                              tokenizer.eos_token_id, tokenizer.bos_token_id))
    levels = len(sizes.unet_channels)
    unet = UNet2DConditionModel(
        sample_size=sizes.resolution // 2 ** (len(sizes.vae_channels) - 1),
        in_channels=sizes.latent_channels,
        out_channels=sizes.latent_channels,
        block_out_channels=sizes.unet_channels,
        layers_per_block=1,
        # Cross-attention at the coarser levels and in the middle, as Stable Diffusion does.
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        cross_attention_dim=sizes.text_width,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=sizes.latent_channels,
        block_out_channels=tuple(sizes.vae_channels), down_block_types=("DownEncoderBlock2D",) * len(sizes.vae_channels),
        up_block_types=("UpDecoderBlock2D",) * len(sizes.vae_channels), norm_num_groups=8,
        sample_size=sizes.resolution,
    )
    # Stable Diffusion's training schedule; samplers are swapped at generation time.
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012, prediction_type="epsilon", clip_sample=False,
                              steps_offset=1)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": scheduler}


def tiny_clip(tokenizer: PreTrainedTokenizerFast, sizes: TinySizes) -> tuple[CLIPModel, CLIPImageProcessor]:
    """CLIP with text and vision towers and their projections (CLIP-I / CLIP-T)."""
    text = _text_config(len(tokenizer), tokenizer.model_max_length, sizes, tokenizer.eos_token_id, tokenizer.bos_token_id)
    vision = CLIPVisionConfig(hidden_size=sizes.vision_width, intermediate_size=2 * sizes.vision_width,
                              num_hidden_layers=sizes.vision_layers, num_attention_heads=max(1, sizes.vision_width // 32),
                              image_size=sizes.resolution, patch_size=sizes.patch_size,
                              projection_dim=sizes.projection_dim)
    config = CLIPConfig(text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=sizes.projection_dim)
    processor = CLIPImageProcessor(size={"shortest_edge": sizes.resolution},
                                   crop_size={"height": sizes.resolution, "width": sizes.resolution})
    return CLIPModel(config), processor


def tiny_dino(sizes: TinySizes) -> tuple[ViTModel, ViTImageProcessor]:
    """A ViT of DINO's kind (the DINO metric reads its [CLS] feature)."""
    config = ViTConfig(hidden_size=sizes.vision_width, intermediate_size=2 * sizes.vision_width,
                       num_hidden_layers=sizes.vision_layers, num_attention_heads=max(1, sizes.vision_width // 32),
                       image_size=sizes.resolution, patch_size=sizes.patch_size, add_pooling_layer=False)
    processor = ViTImageProcessor(size={"height": sizes.resolution, "width": sizes.resolution})
    return ViTModel(config, add_pooling_layer=False), processor
