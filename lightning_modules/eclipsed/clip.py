"""CLIP as eCLIPsed uses it: the prompt's embedding once, the generator's images embedded with
gradients flowing back to the latent directions.

CLIP's own image processor works on PIL images or numpy arrays, outside autograd; here the same
steps (resize to the processor's crop size, normalise with its mean and std) are torch ops on
the generator's output, so the CLIP loss reaches the directions.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_modules.core.metrics.generation import clip_image_embeddings, clip_text_embeddings


def _side(size: Any, *keys: str) -> Optional[int]:
    """A side from a processor's size (a dict, transformers 5's SizeDict, or a number)."""
    if isinstance(size, (int, float)):
        return int(size)
    for key in keys:
        value = getattr(size, key, None) if not isinstance(size, dict) else size.get(key)
        if value:
            return int(value)
    return None


def processor_geometry(processor: Any) -> tuple[int, list[float], list[float]]:
    """(side, mean, std) of a CLIPImageProcessor: the crop it feeds the vision tower."""
    side = _side(getattr(processor, "crop_size", None), "height") or _side(processor.size, "shortest_edge", "height")
    if side is None:
        raise ValueError("the CLIP image processor names no crop size or size")
    return side, list(processor.image_mean), list(processor.image_std)


class ClipEmbedder(nn.Module):
    """Differentiable CLIP embeddings of generator images (in [-1, 1]) and of prompts.

    Frozen: eval mode, no parameter gradients; gradients flow through it to its inputs only.
    """

    def __init__(self, clip: nn.Module, tokenizer: Any, side: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.clip = clip.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.side = side
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std)).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_processor(cls, clip: nn.Module, tokenizer: Any, processor: Any) -> "ClipEmbedder":
        return cls(clip, tokenizer, *processor_geometry(processor))

    def train(self, mode: bool = True) -> "ClipEmbedder":
        return super().train(False)   # frozen: dropout stays off whatever the caller's mode

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """Generator images in [-1, 1] -> what CLIP's vision tower reads (resize + normalise)."""
        pixels = (images.clamp(-1, 1) + 1) / 2
        if pixels.shape[-2:] != (self.side, self.side):
            pixels = F.interpolate(pixels, size=(self.side, self.side), mode="bicubic", align_corners=False,
                                   antialias=pixels.shape[-1] > self.side)
        return (pixels - self.mean) / self.std

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings (B x D), differentiable in `images`."""
        return clip_image_embeddings(self.clip, self.pixel_values(images))

    @torch.no_grad()
    def texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (N x D)."""
        # input ids alone, padded to the full length: how the judges and pretrain_clip read prompts
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return clip_text_embeddings(self.clip, ids.to(self.mean.device))
