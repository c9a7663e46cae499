"""The surveillance look, and the clean face a restorer would give back.

DeSKPro's face stream exists because re-ID images are small and degraded: the student
sees the face in the low-resolution (LR) body image, the teacher a restored,
high-resolution (HR) face. We render at HR, keep a clean face crop for the teacher, and
degrade the body image: area downscale, a little blur, sensor noise and JPEG.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageFilter

from lightning_modules.synthworld.persons import LABEL

Box = tuple[int, int, int, int]
FACE_MARGIN = 0.25  # context around the face box, per side, as a fraction of its size


@dataclass(frozen=True)
class SurveillanceImage:
    image: np.ndarray          # LR RGB uint8
    parsing: np.ndarray        # LR labels, nearest-sampled from the exact HR map
    face_box: Optional[Box]    # LR pixels, half-open; None when no face label survives


def degrade(image: np.ndarray, factor: int, key: str) -> np.ndarray:
    """HR -> LR: area downscale by `factor`, blur, noise and JPEG, seeded by `key`."""
    rng = random.Random(f"degrade/{key}")
    small = Image.fromarray(image).reduce(factor) if factor > 1 else Image.fromarray(image)
    small = small.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 0.7)))
    sigma = rng.uniform(1.5, 4.0)
    noise = np.random.default_rng(rng.getrandbits(64)).normal(0.0, sigma, (small.height, small.width, 3))
    noisy = Image.fromarray(np.clip(np.asarray(small, np.float32) + noise + 0.5, 0, 255).astype(np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format="JPEG", quality=rng.randint(55, 85))
    return np.asarray(Image.open(buffer).convert("RGB"))


def downscale_labels(parsing: np.ndarray, factor: int) -> np.ndarray:
    height, width = parsing.shape
    small = Image.fromarray(parsing).resize((width // factor, height // factor), Image.NEAREST)
    return np.asarray(small)


def label_box(parsing: np.ndarray, label: int) -> Optional[Box]:
    ys, xs = np.nonzero(parsing == label)
    if not len(xs):
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def surveillance_view(image: np.ndarray, parsing: np.ndarray, factor: int, key: str) -> SurveillanceImage:
    """What the camera records: the LR image, its parsing map and the visible face's box."""
    small = downscale_labels(parsing, factor)
    return SurveillanceImage(degrade(image, factor, key), small, label_box(small, LABEL["face"]))


def face_crop(image: np.ndarray, box: Box, size: int, resample: int = Image.LANCZOS) -> np.ndarray:
    """A size x size square around `box` (with margin), edge-padded where it leaves the image."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * FACE_MARGIN)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    side = max(1, int(round(side)))
    pad = side
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    square = padded[top + pad: top + pad + side, left + pad: left + pad + side]
    return np.asarray(Image.fromarray(np.ascontiguousarray(square)).resize((size, size), resample))


def restored_face(clean: np.ndarray, lr_box: Box, factor: int, size: int) -> np.ndarray:
    """The teacher's face: the LR face box taken back to the clean HR render."""
    return face_crop(clean, tuple(v * factor for v in lr_box), size)  # type: ignore[arg-type]
