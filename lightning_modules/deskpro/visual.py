"""Pictures for DeSKPro: retrieval rows and the attention maps of the paper's Fig. 3."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from lightning_modules.core.visual import image_grid

CORRECT, WRONG, QUERY = (40, 200, 60), (220, 40, 40), (60, 90, 230)


def _for_display(grid: np.ndarray, tile_height: int, min_height: int = 128) -> np.ndarray:
    """Surveillance-size tiles (64 x 32) are too small to see: enlarge by a whole factor, pixels kept sharp."""
    factor = -(-min_height // max(tile_height, 1))
    return grid if factor <= 1 else grid.repeat(factor, axis=0).repeat(factor, axis=1)


def as_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1).permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def _framed(image: np.ndarray, color: tuple[int, int, int], width: int = 3) -> np.ndarray:
    framed = image.copy()
    framed[:width], framed[-width:], framed[:, :width], framed[:, -width:] = color, color, color, color
    return framed


def retrieval_rows(query_images: Sequence[torch.Tensor], gallery_images: Sequence[torch.Tensor],
                   distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                   g_camids: np.ndarray, query_indices: Sequence[int], top: int = 10) -> np.ndarray:
    """One row per query: the query (blue frame), then its top gallery matches, green when the
    identity is right, red when not. Same-identity same-camera gallery images are left out,
    as the evaluation leaves them out."""
    tiles = []
    for q in query_indices:
        order = np.argsort(distmat[q], kind="stable")
        keep = ~((g_pids[order] == q_pids[q]) & (g_camids[order] == q_camids[q]))
        query_tile = _framed(as_uint8(query_images[q]), QUERY)
        shown = order[keep][:top]
        tiles.append(query_tile)
        for g in shown:
            tiles.append(_framed(as_uint8(gallery_images[g]), CORRECT if g_pids[g] == q_pids[q] else WRONG))
        tiles.extend(np.full_like(query_tile, 255) for _ in range(top - len(shown)))  # small galleries
    return _for_display(image_grid(tiles, columns=top + 1), tiles[0].shape[0])


def colored(values: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A (h, w) map of values in [0, 1], colored and resized to (H, W) for display."""
    rgb = (colormaps["jet"](values.float().clamp(0, 1).numpy())[..., :3] * 255).astype(np.uint8)
    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.NEAREST))


def heatmap(values: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """`colored` after scaling each map to [0, 1] on its own."""
    v = values.float()
    return colored((v - v.min()) / (v.max() - v.min()).clamp(min=1e-8), size)


def attention_panels(images: torch.Tensor, attention: torch.Tensor, feature_map: torch.Tensor,
                     attended: torch.Tensor) -> np.ndarray:
    """Fig. 3: per image, the image, the CSA attention Psi_hat, and the feature maps F and F_att
    (channel-mean activation) - cloth regions should fade from F to F_att."""
    size = tuple(images.shape[-2:])
    tiles = []
    for i in range(images.shape[0]):
        picture = as_uint8(images[i])
        tiles += [picture,
                  # attention on its own absolute scale (0..1): low where clothes are
                  (0.5 * picture + 0.5 * colored(attention[i, 0], size)).astype(np.uint8),
                  heatmap(feature_map[i].abs().mean(0), size),
                  heatmap(attended[i].abs().mean(0), size)]
    return _for_display(image_grid(tiles, columns=8 if len(tiles) >= 8 else len(tiles)), size[0])
