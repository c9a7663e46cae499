"""VideoDreamer eq. 7: x_mix = [x_1m1; x_2m2; ...; x_NmN], one random image per subject.

The tiles are concatenated left to right and the strip is resized to the square training
resolution. The label map records which subject each pixel came from, and the two prompts
are P_c ("a sks cartoon, a zwx dog") and P'_c = [P_N, P_c] with the shared stitch prompt P_N.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np


@dataclass(frozen=True)
class MixedImage:
    image: np.ndarray  # HxWx3 uint8
    labels: np.ndarray  # HxW uint8: 0 background, i + 1 for the i-th subject of the catalogue
    subjects: tuple[str, ...]
    prompt: str  # P_c
    disentangled_prompt: str  # P'_c


def mix_combinations(names: Sequence[str], sizes: Sequence[int], limit: int, seed: int) -> list[tuple[str, ...]]:
    """Up to `limit` subject combinations of the given sizes, a seeded sample of all of them."""
    combos = [c for k in sizes if k <= len(names) for c in itertools.combinations(names, k)]
    random.Random(f"{seed}/disen-mix").shuffle(combos)
    return combos[:limit]


def mix_subject_images(
    tiles: Sequence[np.ndarray],
    tile_labels: Sequence[np.ndarray],
    subjects: Sequence[str],
    prompts: Sequence[str],
    prefix: str,
    size: int,
) -> MixedImage:
    """Concatenate one (image, label map) per subject and resize the strip to size x size."""
    strip = np.concatenate(tiles, axis=1)
    labels = np.concatenate(tile_labels, axis=1)
    image = cv2.resize(strip, (size, size), interpolation=cv2.INTER_AREA)
    labels = cv2.resize(labels, (size, size), interpolation=cv2.INTER_NEAREST)
    prompt = ", ".join(prompts)
    return MixedImage(image, labels, tuple(subjects), prompt, f"{prefix}, {prompt}")
