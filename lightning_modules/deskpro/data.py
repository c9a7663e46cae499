"""Person images for DeSKPro: body image, cloth mask from the parsing map, LR and restored face.

The stage hands over `PersonRecord`s (paths + labels); this module only reads those files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

FaceBox = tuple[int, int, int, int]  # x0, y0, x1, y1 (half-open) in the image's pixels


@dataclass(frozen=True)
class PersonRecord:
    image: Path
    pid: int
    camid: int
    clothes: int
    parsing: Optional[Path] = None
    face_box: Optional[FaceBox] = None
    hr_face: Optional[Path] = None        # a clean high-resolution face, where the data has one


# Maps a low-resolution face crop (3, s, s) in [0, 1] and its record to the restored face the
# teacher sees (the paper uses GPEN).
Restorer = Callable[[torch.Tensor, PersonRecord], torch.Tensor]


def read_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def label_image(image: Image.Image) -> Image.Image:
    """A parsing map as its label values: a palette image's values are its indices, which a
    conversion to grayscale would replace by the brightness of the palette's colors."""
    return image if image.mode in ("L", "P") else image.convert("L")


def to_tensor(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


def square_box(box: FaceBox, width: int, height: int, margin: float = 0.15) -> FaceBox:
    """The box grown to a square with a margin, clipped to the image: faces keep their aspect."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half = max(side / 2, 1.0)
    return (max(0, int(round(cx - half))), max(0, int(round(cy - half))),
            min(width, int(round(cx + half))), min(height, int(round(cy + half))))


class PersonDataset(Dataset):
    """One item per record: a dict of tensors (see `__getitem__`)."""

    def __init__(self, records: Sequence[PersonRecord], image_size: tuple[int, int], face_size: int,
                 cloth_classes: Sequence[int] = (), labels: Optional[dict[int, int]] = None,
                 flip: bool = False, restorer: Optional[Restorer] = None, seed: int = 0):
        self.records = list(records)
        self.height, self.width = image_size
        self.face_size = face_size
        self.cloth_lookup = np.zeros(256, dtype=bool)
        self.cloth_lookup[list(cloth_classes)] = True
        self.labels = labels or {}
        self.flip = flip
        self.restorer = restorer
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _flipped(self, index: int) -> bool:
        # Per-item, per-epoch coin: the same item gets the same flip whatever the worker or order.
        return self.flip and bool(np.random.default_rng((self.seed, self.epoch, index)).integers(2))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        image = read_rgb(record.image)
        width, height = image.size
        flipped = self._flipped(index)
        face = torch.zeros(3, self.face_size, self.face_size)
        restored = torch.zeros_like(face)
        has_face = record.face_box is not None
        if has_face:
            crop = image.crop(square_box(record.face_box, width, height))
            face = to_tensor(crop.resize((self.face_size, self.face_size), Image.BICUBIC))
            if self.restorer is not None:
                restored = self.restorer(face, record)
        cloth = torch.zeros(self.height, self.width)
        if record.parsing is not None:
            with Image.open(record.parsing) as parsing:
                labels = np.asarray(label_image(parsing).resize((self.width, self.height), Image.NEAREST))
            cloth = torch.from_numpy(self.cloth_lookup[labels].astype(np.float32))
        body = to_tensor(image.resize((self.width, self.height), Image.BILINEAR))
        if flipped:
            body, cloth, face, restored = body.flip(-1), cloth.flip(-1), face.flip(-1), restored.flip(-1)
        return {
            "image": body,
            "cloth_mask": cloth,
            "has_parsing": torch.tensor(record.parsing is not None),
            "face": face,
            "restored_face": restored,
            "has_face": torch.tensor(has_face),
            "label": torch.tensor(self.labels.get(record.pid, -1)),
            "pid": torch.tensor(record.pid),
            "camid": torch.tensor(record.camid),
            "index": torch.tensor(index),
        }


def clean_face_restorer(face_size: int) -> Restorer:
    """SynthWorld's oracle restorer: the clean render of the face that the LR image degraded."""

    def restore(face: torch.Tensor, record: PersonRecord) -> torch.Tensor:
        if record.hr_face is None:
            raise FileNotFoundError(f"{record.image}: no clean face; use another face restorer")
        return to_tensor(read_rgb(record.hr_face).resize((face_size, face_size), Image.BICUBIC))

    return restore


def identity_restorer(face: torch.Tensor, record: PersonRecord) -> torch.Tensor:
    """No restoration: the teacher sees the bicubic-upsampled LR face (a lower bound)."""
    return face


def module_restorer(model: torch.nn.Module, face_size: int) -> Restorer:
    """A face-restoration network (e.g. an exported GPEN) applied to each LR face crop."""

    @torch.no_grad()
    def restore(face: torch.Tensor, record: PersonRecord) -> torch.Tensor:
        out = model(face[None]).clamp(0, 1)
        return torch.nn.functional.interpolate(out, size=(face_size, face_size), mode="bicubic",
                                               align_corners=False)[0].clamp(0, 1)

    return restore
