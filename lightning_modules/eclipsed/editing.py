"""Editing with learned directions: sequential edits and edit strips.

A direction is a tensor num_ws x w_dim over the generator's style inputs (zero on the layers it
leaves alone; in W the same vector on each chosen layer). Sequential editing applies several
learned directions one after the other, each with its own strength alpha: in a linear latent
space this is w + alpha_1 d_1 + alpha_2 d_2 + ..., so the order does not matter and an edit can
be undone by the opposite alpha.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

Edit = tuple[torch.Tensor, float]


def latent_size(generator: torch.nn.Module) -> int:
    """The size of the generator's z (StyleGAN2: the same as w's)."""
    return int(getattr(generator, "z_dim", None) or generator.w_dim)


def seeded_latents(seeds: Sequence[int], z_dim: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """z ~ N(0, I) per seed (B x z_dim), each from its own generator: an image's latent depends on
    its seed alone, not on the batch it is drawn in."""
    z = torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
    return z if device is None else z.to(device)


@torch.no_grad()
def style_codes(generator: torch.nn.Module, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
    """z -> ws (B x num_ws x w_dim) with the truncation trick (toward the generator's mean w)."""
    return generator.broadcast(generator.mapping(z, truncation))


def seed_codes(generator: torch.nn.Module, seeds: Sequence[int], truncation: float = 1.0) -> torch.Tensor:
    """The style codes of latent seeds: the faces every evaluation and page draws."""
    return style_codes(generator, seeded_latents(seeds, latent_size(generator)), truncation)


def apply_edits(ws: torch.Tensor, edits: Sequence[Edit]) -> torch.Tensor:
    """ws (B x num_ws x w_dim) moved along each (direction, alpha) in turn."""
    edited = ws
    for direction, alpha in edits:
        if direction.shape != ws.shape[1:]:
            raise ValueError(f"a direction of shape {tuple(direction.shape)} for style codes of shape "
                             f"{tuple(ws.shape[1:])}")
        edited = edited + float(alpha) * direction.to(ws)
    return edited


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Generator images in [-1, 1] (B x 3 x H x W) -> uint8 B x H x W x 3."""
    pixels = ((images.detach().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def render(generator: torch.nn.Module, ws: torch.Tensor, edits: Sequence[Edit] = ()) -> torch.Tensor:
    """Images (in [-1, 1]) of ws after the edits, with the generator's constant noise: the only
    difference between two renders of one seed is the edit."""
    return generator.synthesis(apply_edits(ws, edits), noise="const")


@torch.no_grad()
def edit_strip(generator: torch.nn.Module, ws: torch.Tensor, direction: torch.Tensor,
               alphas: Sequence[float], base: Sequence[Edit] = ()) -> np.ndarray:
    """uint8 rows x alphas x H x W x 3: each seed's row of images along one direction (after any
    `base` edits, for sequential strips)."""
    columns = [to_uint8(render(generator, ws, [*base, (direction, a)])) for a in alphas]
    return np.stack(columns, axis=1)
