"""Reader of a faces folder (SynthWorld's `synthesize_faces` output, or a user's folder in its
layout), usable from a notebook:

    images/<identity:04d>_<k:02d>.png   RGB faces, image_size x image_size
    parts/<identity:04d>_<k:02d>.png    8-bit part maps of the same size, values index part_classes
    faces.csv                           image, parts, identity, index, split, caption, one column per attribute
    dataset.yaml                        part_classes, attributes {name: [values]}, identities,
                                        images_per_identity, image_size

Every file is checked before any training: a face judge that met a torn PNG or a part map of
the wrong size in its third epoch would have wasted the first two.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import Dataset

from lightning_modules.core.errors import InputDataError
from lightning_modules.data.images import LABELS, PHOTO, check_image

SPLITS = ("train", "val", "test")
COLUMNS = ("image", "parts", "identity", "index", "split", "caption")


@dataclass(frozen=True)
class FaceRecord:
    image: Path
    parts: Path
    identity: int
    index: int
    split: str
    caption: str
    attributes: dict[str, int]   # name -> index into FacesFolder.attributes[name]


@dataclass(frozen=True)
class FacesFolder:
    root: Path
    part_classes: list[str]
    attributes: dict[str, list[str]]   # name -> vocabulary
    identities: list[int]              # the distinct identities of faces.csv, sorted
    image_size: int
    records: list[FaceRecord]
    digest: str                        # of faces.csv and dataset.yaml: what keys a resumable run

    def split(self, name: str) -> list[FaceRecord]:
        return [record for record in self.records if record.split == name]


def _read_dataset_yaml(path: Path) -> dict:
    if not path.is_file():
        raise InputDataError(f"{path}: missing; run the synthesize_faces stage first (dvc repro synthesize_faces)")
    try:
        info = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise InputDataError(f"{path}: not valid YAML ({err.__class__.__name__})") from None
    if not isinstance(info, dict):
        raise InputDataError(f"{path}: expected a mapping with part_classes, attributes and image_size")
    classes, attributes, size = info.get("part_classes"), info.get("attributes"), info.get("image_size")
    if not isinstance(classes, list) or not 2 <= len(classes) <= 256:
        raise InputDataError(f"{path}: part_classes: expected a list of 2 to 256 names (background first)")
    if not isinstance(attributes, dict) or not all(isinstance(v, list) and len(v) >= 2 for v in attributes.values()):
        raise InputDataError(f"{path}: attributes: expected a mapping of name -> list of at least 2 values")
    if not isinstance(size, int) or size < 1:
        raise InputDataError(f"{path}: image_size: expected a positive whole number of pixels (got {size!r})")
    return info


def _file(root: Path, csv_path: Path, line: int, value: str, column: str) -> Path:
    path = root / value
    if not value or not path.is_file():
        raise InputDataError(f"{csv_path}:{line}: {column} {value!r}: file not found under {root}")
    return path


def _check_pair(image: Path, parts: Path, size: int, num_classes: int) -> None:
    for path, kind in ((image, PHOTO), (parts, LABELS)):
        found = check_image(path, kind)
        if found != (size, size):
            raise InputDataError(f"{path}: {found[0]}x{found[1]} pixels, but dataset.yaml's image_size is {size}; "
                                 f"every image and part map is {size}x{size}")
    with Image.open(parts) as labels:
        top = int(np.asarray(labels).max())
    if top >= num_classes:
        raise InputDataError(f"{parts}: part value {top}, but dataset.yaml lists {num_classes} part_classes")


def read_faces_folder(root: Path, check_files: bool = True) -> FacesFolder:
    """The folder's records and vocabularies; an InputDataError naming the file, line or value
    at fault otherwise. `check_files=False` skips opening every image (a quick look)."""
    root = Path(root)
    if not root.is_dir():
        raise InputDataError(f"{root}: no faces folder; run the synthesize_faces stage first "
                             "(dvc repro synthesize_faces)")
    info_path, csv_path = root / "dataset.yaml", root / "faces.csv"
    info = _read_dataset_yaml(info_path)
    classes, attributes, size = list(info["part_classes"]), dict(info["attributes"]), int(info["image_size"])
    if not csv_path.is_file():
        raise InputDataError(f"{csv_path}: missing; run the synthesize_faces stage first (dvc repro synthesize_faces)")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = (set(COLUMNS) | set(attributes)) - set(reader.fieldnames or [])
        if missing:
            raise InputDataError(f"{csv_path}: no column {', '.join(sorted(missing))}")
        rows = list(reader)
    if not rows:
        raise InputDataError(f"{csv_path}: no faces")
    records = []
    for line, row in enumerate(rows, start=2):
        if row["split"] not in SPLITS:
            raise InputDataError(f"{csv_path}:{line}: unknown split {row['split']!r} (expected train, val or test)")
        try:
            identity, index = int(row["identity"]), int(row["index"])
        except ValueError:
            raise InputDataError(f"{csv_path}:{line}: identity {row['identity']!r} / index {row['index']!r}: "
                                 "expected whole numbers") from None
        values = {}
        for name, vocabulary in attributes.items():
            if row[name] not in vocabulary:
                raise InputDataError(f"{csv_path}:{line}: {name} {row[name]!r} is not one of {vocabulary} "
                                     "(dataset.yaml attributes)")
            values[name] = vocabulary.index(row[name])
        image, parts = (_file(root, csv_path, line, row[c], c) for c in ("image", "parts"))
        if check_files:
            _check_pair(image, parts, size, len(classes))
        records.append(FaceRecord(image, parts, identity, index, row["split"], row["caption"], values))
    digest = hashlib.sha256(csv_path.read_bytes() + info_path.read_bytes()).hexdigest()
    return FacesFolder(root, classes, attributes, sorted({r.identity for r in records}), size, records, digest)


def load_faces(records: list[FaceRecord], size: int) -> torch.Tensor:
    """uint8 [N, 3, size, size] of the records' images, resized (antialiased) when `size` is not
    the folder's: the whole split in memory, as a GAN reads it every step."""
    pictures = []
    for record in records:
        with Image.open(record.image) as image:
            image = image.convert("RGB")
            if image.size != (size, size):
                image = image.resize((size, size), Image.Resampling.LANCZOS)
            pictures.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    return torch.stack(pictures)


def signed(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels as a generator draws them: float in [-1, 1]."""
    return pixels.float() / 127.5 - 1.0


class FaceImages(Dataset):
    """Faces loaded by `load_faces`, served in [-1, 1]."""

    def __init__(self, pixels: torch.Tensor):
        self.pixels = pixels

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, index: int) -> torch.Tensor:
        return signed(self.pixels[index])
