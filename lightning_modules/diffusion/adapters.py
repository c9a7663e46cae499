"""What each fine-tuning mode trains, set up on the loaded base model.

- full: every UNet weight (DreamBooth), optionally the text encoder;
- lora: low-rank adapters (peft) on the UNet attention projections, optionally on the text
  encoder's, the base weights frozen;
- textual_inversion: only the embedding rows of the new identifier tokens;
- custom_diffusion: the cross-attention key/value projections of the UNet plus the new
  tokens' rows (Custom Diffusion's "modifier tokens").
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import CustomDiffusionAttnProcessor
from peft import LoraConfig
from transformers import CLIPTextModel

FinetuneMode = Literal["full", "lora", "textual_inversion", "custom_diffusion"]
UNET_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TEXT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")
CUSTOM_DIFFUSION_WEIGHTS = "pytorch_custom_diffusion_weights.safetensors"


def train_token_rows(text_encoder: CLIPTextModel, token_ids: Sequence[int]) -> torch.nn.Parameter:
    """Let only the given rows of the embedding table learn: the gradient of every other row
    is zeroed, so with no weight decay on this table those rows never move."""
    table = text_encoder.get_input_embeddings().weight
    table.requires_grad_(True)
    keep = torch.zeros(table.shape[0], 1, dtype=torch.bool)
    keep[list(token_ids)] = True

    def only_new_rows(grad: torch.Tensor) -> torch.Tensor:
        return grad * keep.to(grad.device, grad.dtype)

    table.register_hook(only_new_rows)
    return table


def add_unet_lora(unet: UNet2DConditionModel, rank: int, alpha: float, dropout: float = 0.0) -> None:
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, init_lora_weights="gaussian",
                                target_modules=list(UNET_LORA_TARGETS)))


def add_text_encoder_lora(text_encoder: CLIPTextModel, rank: int, alpha: float, dropout: float = 0.0) -> None:
    text_encoder.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                                        init_lora_weights="gaussian", target_modules=list(TEXT_LORA_TARGETS)))


def _hidden_size(unet: UNet2DConditionModel, processor_name: str) -> int:
    channels = unet.config.block_out_channels
    if processor_name.startswith("mid_block"):
        return channels[-1]
    block = int(processor_name.split(".")[1])
    return list(reversed(channels))[block] if processor_name.startswith("up_blocks") else channels[block]


def add_custom_diffusion(unet: UNet2DConditionModel) -> list[torch.nn.Parameter]:
    """Swap in diffusers' Custom Diffusion processors: trainable copies of every
    cross-attention to_k / to_v (the image-text binding), self-attention untouched."""
    weights = unet.state_dict()
    processors = {}
    for name in unet.attn_processors:
        layer = name.removesuffix(".processor")
        cross = not name.endswith("attn1.processor")
        processor = CustomDiffusionAttnProcessor(
            train_kv=cross, train_q_out=False, hidden_size=_hidden_size(unet, name),
            cross_attention_dim=unet.config.cross_attention_dim if cross else None)
        if cross:
            processor.load_state_dict({"to_k_custom_diffusion.weight": weights[f"{layer}.to_k.weight"],
                                       "to_v_custom_diffusion.weight": weights[f"{layer}.to_v.weight"]})
        processors[name] = processor.to(unet.device, unet.dtype)
    unet.set_attn_processor(processors)  # each becomes a submodule of its attention layer
    return [p for processor in processors.values() for p in processor.parameters()]


def set_up_mode(mode: FinetuneMode, unet: UNet2DConditionModel, text_encoder: CLIPTextModel,
                identifier_ids: Sequence[int], *, train_text_encoder: bool, train_identifier_embeddings: bool,
                lora_rank: int, lora_alpha: float) -> None:
    """Freeze the base model, then open up exactly what `mode` trains."""
    unet.requires_grad_(False)
    text_encoder.requires_grad_(False)
    if mode == "full":
        unet.requires_grad_(True)
        if train_text_encoder:
            text_encoder.requires_grad_(True)
    elif mode == "lora":
        add_unet_lora(unet, lora_rank, lora_alpha)
        if train_text_encoder:
            add_text_encoder_lora(text_encoder, lora_rank, lora_alpha)
    elif mode == "custom_diffusion":
        for parameter in add_custom_diffusion(unet):
            parameter.requires_grad_(True)
    elif mode != "textual_inversion":
        raise ValueError(f"unknown fine-tuning mode {mode!r}")
    if mode in ("textual_inversion", "custom_diffusion") or train_identifier_embeddings:
        if not (mode == "full" and train_text_encoder):  # the whole table trains already
            train_token_rows(text_encoder, identifier_ids)


def trainable(modules: Iterable[torch.nn.Module]) -> list[tuple[str, torch.nn.Parameter]]:
    return [(f"{i}.{name}", p) for i, module in enumerate(modules) for name, p in module.named_parameters()
            if p.requires_grad]
