"""Pictures people look at: image grids and mask overlays (arrays in, arrays out)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

# One distinct color per class index (0 = background is left untinted).
OVERLAY_COLORS = np.array([
    (0, 0, 0), (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
    (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195), (128, 128, 0),
], np.uint8)


def image_grid(images: Sequence[np.ndarray], columns: int, pad: int = 2) -> np.ndarray:
    """Tile HxWx3 uint8 images (resized to the first one's size) into one picture."""
    if not images:
        raise ValueError("image_grid needs at least one image")
    h, w = images[0].shape[:2]
    rows = -(-len(images) // columns)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, image in enumerate(images):
        if image.shape[:2] != (h, w):
            image = np.asarray(Image.fromarray(image).resize((w, h)))
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = image
    return grid


def overlay_labels(image: np.ndarray, labels: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Tint each labelled pixel with its class color and outline the label borders."""
    colors = OVERLAY_COLORS[labels % len(OVERLAY_COLORS)]
    tinted = image.astype(np.float32)
    fg = labels > 0
    tinted[fg] = (1 - alpha) * tinted[fg] + alpha * colors[fg]
    edge = np.zeros_like(fg)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    tinted[edge] = (255, 255, 255)
    return tinted.astype(np.uint8)


DISPLAY_SCALE = 4   # tiny-model pictures are 32 px: enlarge them (nearest) for viewing


def enlarge(picture: np.ndarray, scale: int = DISPLAY_SCALE) -> np.ndarray:
    return np.asarray(Image.fromarray(picture).resize((picture.shape[1] * scale, picture.shape[0] * scale),
                                                       Image.Resampling.NEAREST))
