"""The subjects folder: SynthWorld writes one, and a user's own folder replaces it.

Layout::

    <dir>/subjects.yaml          subjects: [{name, identifier, class_noun}, ...]
    <dir>/<name>/images/*.png    (or .jpg/.jpeg/.webp)
    <dir>/<name>/masks/<stem>.png   optional; 0 = background, anything else = subject

An image without a mask file uses its alpha channel if it has one, else the whole frame.
Every problem is reported as a `InputDataError` naming the file or key at fault; every image
and mask is checked when the folder is read (lightning_modules/data/images.py), before any work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import yaml
from PIL import Image

from lightning_modules.core.errors import InputDataError
from lightning_modules.data.images import MASK, SUBJECT, check_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SUBJECTS_FILE = "subjects.yaml"
_TOKEN = re.compile(r"^[a-z0-9]+$")
_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class SubjectImage:
    image: Path
    mask: Optional[Path]


@dataclass(frozen=True)
class SubjectRecord:
    name: str
    identifier: str
    class_noun: str
    images: tuple[SubjectImage, ...]

    @property
    def prompt(self) -> str:
        return f"a {self.identifier} {self.class_noun}"


def write_subjects_yaml(folder: Path, records: list[dict[str, str]]) -> None:
    (folder / SUBJECTS_FILE).write_text(yaml.safe_dump({"subjects": records}, sort_keys=False))


def _entries(folder: Path) -> list[dict]:
    spec = folder / SUBJECTS_FILE
    if not spec.is_file():
        raise InputDataError(f"{spec}: missing (a subjects folder needs {SUBJECTS_FILE})")
    try:
        data = yaml.safe_load(spec.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise InputDataError(f"{spec}: not valid YAML ({getattr(err, 'problem', err)})") from None
    entries = data.get("subjects") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputDataError(f"{spec}: expected a non-empty list under the key 'subjects'")
    return entries


def _check_entry(spec: Path, i: int, entry: object) -> tuple[str, str, str]:
    if not isinstance(entry, dict):
        raise InputDataError(f"{spec}: subjects[{i}]: expected a mapping with name, identifier, class_noun")
    unknown = set(entry) - {"name", "identifier", "class_noun"}
    if unknown:
        raise InputDataError(f"{spec}: subjects[{i}]: unknown key {sorted(unknown)[0]!r}")
    values = []
    for key in ("name", "identifier", "class_noun"):
        value = entry.get(key)
        if not isinstance(value, str) or not value.strip():
            raise InputDataError(f"{spec}: subjects[{i}].{key}: missing or empty")
        values.append(value.strip())
    name, identifier, class_noun = values
    if not _NAME.match(name):
        raise InputDataError(f"{spec}: subjects[{i}].name: {name!r} must be letters, digits, '_' or '-'")
    if not _TOKEN.match(identifier):
        raise InputDataError(f"{spec}: subjects[{i}].identifier: {identifier!r} must be one lowercase token")
    return name, identifier, class_noun


def read_subjects_folder(folder: Path, key: str = "augment.subjects_dir") -> list[SubjectRecord]:
    """Validate and index a subjects folder; every image and mask is opened once."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputDataError(f"{key}: folder not found: {folder}")
    spec = folder / SUBJECTS_FILE
    records, seen_names, seen_ids = [], set(), set()
    for i, entry in enumerate(_entries(folder)):
        name, identifier, class_noun = _check_entry(spec, i, entry)
        if name in seen_names:
            raise InputDataError(f"{spec}: subjects[{i}].name: duplicate subject {name!r}")
        if identifier in seen_ids:
            raise InputDataError(f"{spec}: subjects[{i}].identifier: {identifier!r} is used by two subjects")
        seen_names.add(name)
        seen_ids.add(identifier)
        image_dir = folder / name / "images"
        paths = sorted(p for p in image_dir.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if image_dir.is_dir() else []
        if not paths:
            raise InputDataError(f"{image_dir}: no images for subject {name!r}")
        images = []
        for path in paths:
            size = check_image(path, SUBJECT)
            mask = folder / name / "masks" / f"{path.stem}.png"
            if mask.exists():
                mask_size = check_image(mask, MASK)
                if mask_size != size:
                    raise InputDataError(f"{mask}: mask is {mask_size[0]}x{mask_size[1]} but its image is {size[0]}x{size[1]}")
            images.append(SubjectImage(path, mask if mask.exists() else None))
        records.append(SubjectRecord(name, identifier, class_noun, tuple(images)))
    return records


def load_subject_image(item: SubjectImage) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8, bool mask) of one subject image, following the folder's mask rules."""
    with Image.open(item.image) as im:
        rgba = im.convert("RGBA")
    pixels = np.asarray(rgba)
    if item.mask is not None:
        with Image.open(item.mask) as m:
            mask = np.asarray(m.convert("L")) > 0
    elif rgba.mode == "RGBA" and pixels[..., 3].min() < 255:
        mask = pixels[..., 3] > 0
    else:
        mask = np.ones(pixels.shape[:2], bool)
    if not mask.any():
        raise InputDataError(f"{item.mask or item.image}: the mask is empty (no subject pixels)")
    return np.ascontiguousarray(pixels[..., :3]), mask
