"""MSP-Diffusion A.1: zoom, occasional crop and random translation onto a background scene.

Each sample draws its own parameters from a generator seeded by (seed, sample key), so a
sample's pixels never depend on which other samples were made, in what order, or by how
many workers. The geometric work is done by albumentations with the image and its mask in
one call, so the mask follows every transform exactly (nearest-neighbour for the mask).
"""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np


@dataclass(frozen=True)
class AugmentParams:
    canvas_size: int = 512
    zoom_range: tuple[float, float] = (0.4, 0.5)
    crop_probability: float = 0.1
    crop_range: tuple[float, float] = (0.65, 0.95)


@dataclass(frozen=True)
class SampleDraw:
    """The random choices behind one augmented image (kept for the manifest)."""

    zoom: float
    crop: float  # fraction of the subject kept; 1.0 = not cropped
    crop_x: float
    crop_y: float
    shift_x: float
    shift_y: float


def tight_crop(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cut image and mask to the subject's bounding box."""
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return image[y0:y1, x0:x1], mask[y0:y1, x0:x1]


class SubjectAugmenter:
    def __init__(self, params: AugmentParams, seed: int):
        self.params = params
        self.seed = seed

    def draw(self, key: tuple[int, ...]) -> SampleDraw:
        rng = np.random.default_rng([self.seed, *key])
        p = self.params
        cropped = rng.random() < p.crop_probability
        return SampleDraw(
            zoom=float(rng.uniform(*p.zoom_range)),
            crop=float(rng.uniform(*p.crop_range)) if cropped else 1.0,
            crop_x=float(rng.random()),
            crop_y=float(rng.random()),
            shift_x=float(rng.random()),
            shift_y=float(rng.random()),
        )

    def transform(self, draw: SampleDraw, height: int, width: int) -> A.Compose:
        """The albumentations pipeline for one draw of a (height x width) tight subject crop."""
        c = self.params.canvas_size
        ch, cw = max(1, round(height * draw.crop)), max(1, round(width * draw.crop))
        y0, x0 = round((height - ch) * draw.crop_y), round((width - cw) * draw.crop_x)
        # Zoom: the whole subject's longest side becomes `zoom` of the canvas; a crop keeps
        # that scale and shows only part of the subject.
        scale = draw.zoom * c / max(height, width)
        th, tw = max(1, min(c, round(ch * scale))), max(1, min(c, round(cw * scale)))
        top, left = round((c - th) * draw.shift_y), round((c - tw) * draw.shift_x)
        return A.Compose([
            A.Crop(x_min=x0, y_min=y0, x_max=x0 + cw, y_max=y0 + ch),
            A.Resize(th, tw, interpolation=cv2.INTER_AREA, mask_interpolation=cv2.INTER_NEAREST),
            A.Pad(padding=(left, top, c - tw - left, c - th - top), fill=0, fill_mask=0,
                  border_mode=cv2.BORDER_CONSTANT),
        ])

    def background(self, scene: np.ndarray) -> np.ndarray:
        c = self.params.canvas_size
        return cv2.resize(scene, (c, c), interpolation=cv2.INTER_AREA)

    def __call__(
        self, image: np.ndarray, mask: np.ndarray, scene: np.ndarray, key: tuple[int, ...]
    ) -> tuple[np.ndarray, np.ndarray, SampleDraw]:
        """(composited RGB canvas, bool subject mask, the draw) for sample `key`."""
        subject, subject_mask = tight_crop(image, mask)
        draw = self.draw(key)
        placed = self.transform(draw, *subject.shape[:2])(image=subject, mask=subject_mask.astype(np.uint8))
        placed_mask = placed["mask"].astype(bool)
        canvas = self.background(scene)
        canvas[placed_mask] = placed["image"][placed_mask]
        return canvas, placed_mask, draw
