"""Read a Market-1501-style person re-ID folder (SynthWorld persons, or a user's own data).

Layout (SynthWorld writes exactly this; a user's folder follows it):

    dataset.yaml              parsing_classes: [background, hair, face, ...]  (index = pixel value)
                              cloth_classes: [upper_clothes, ...]  (eq. 3's set C)
                              face_class: face
    bounding_box_train/0001_c1s1_000001_00.png   <pid>_c<camera>s<clothes>_..., as Market-1501
    query/, bounding_box_test/                   one evaluation protocol named "default", and/or
    protocols/<name>/query/, protocols/<name>/bounding_box_test/   several named protocols
    parsing/<image path>.png  optional label maps, same size as the image (attention supervision)
    faces.csv                 optional face boxes: image,x0,y0,x1,y1 (else boxes come from the
                              face class of the parsing maps; no box = no face detected)
    faces/<image path>.png    optional clean high-resolution faces (face_restorer: clean)

The `s` field of a Market-1501 name is the clothes (outfit) id here. pid -1 marks junk images
and is skipped, as torchreid does. dataset.yaml is needed only when parsing maps are present.
Every image, parsing map and face the records name is checked when the folder is read
(lightning_modules/data/images.py): a broken file stops the stage before training, by name.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import yaml
from PIL import Image

from lightning_modules.deskpro.data import FaceBox, PersonRecord, label_image
from lightning_modules.core.errors import InputDataError
from lightning_modules.data.images import LABELS, PHOTO, check_image

NAME = re.compile(r"^(-?\d+)_c(\d+)(?:s(\d+))?_[^/]*\.(png|jpe?g|bmp)$", re.IGNORECASE)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


@dataclass
class ReidFolder:
    root: Path
    name: str
    train: list[PersonRecord]
    protocols: dict[str, tuple[list[PersonRecord], list[PersonRecord]]]  # name -> (query, gallery)
    parsing_classes: list[str] = field(default_factory=list)
    cloth_classes: list[int] = field(default_factory=list)   # label values of eq. 3's set C

    @property
    def train_labels(self) -> dict[int, int]:
        """Training pids relabelled 0..N-1 for the identity classifiers."""
        return {pid: i for i, pid in enumerate(sorted({r.pid for r in self.train}))}


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise InputDataError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise InputDataError(f"{path}: expected a mapping")
    return data


def _classes(root: Path) -> tuple[list[str], list[int], Optional[int], str]:
    """(parsing class names, cloth label values, face label value, dataset name)."""
    meta_file = root / "dataset.yaml"
    if not meta_file.is_file():
        if (root / "parsing").is_dir():
            raise InputDataError(f"{meta_file}: missing; parsing maps need parsing_classes and cloth_classes")
        return [], [], None, root.name
    meta = _read_yaml(meta_file)
    unknown = set(meta) - {"name", "parsing_classes", "cloth_classes", "face_class", "protocols"}
    if unknown:
        raise InputDataError(f"{meta_file}: unknown key {sorted(unknown)[0]}")
    names = meta.get("parsing_classes") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise InputDataError(f"{meta_file}: parsing_classes: expected a list of class names")
    index = {n: i for i, n in enumerate(names)}
    cloth = meta.get("cloth_classes") or []
    for name in cloth:
        if name not in index:
            raise InputDataError(f"{meta_file}: cloth_classes: {name!r} is not one of parsing_classes")
    face_name = meta.get("face_class", "face")
    return names, [index[n] for n in cloth], index.get(face_name), str(meta.get("name", root.name))


def _read_face_boxes(root: Path) -> Optional[dict[str, FaceBox]]:
    path = root / "faces.csv"
    if not path.is_file():
        return None
    boxes: dict[str, FaceBox] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != ["image", "x0", "y0", "x1", "y1"]:
            raise InputDataError(f"{path}: expected the header image,x0,y0,x1,y1")
        for line, row in enumerate(reader, start=2):
            try:
                box = tuple(int(row[k]) for k in ("x0", "y0", "x1", "y1"))
            except (TypeError, ValueError):
                raise InputDataError(f"{path}:{line}: face box coordinates must be integers") from None
            if not (box[0] < box[2] and box[1] < box[3]):
                raise InputDataError(f"{path}:{line}: empty face box {box}")
            if not (root / row["image"]).is_file():
                raise InputDataError(f"{path}:{line}: image {row['image']} not found")
            boxes[row["image"]] = box
    return boxes


def _box_from_parsing(parsing: Path, face_label: int, min_pixels: int = 4) -> Optional[FaceBox]:
    with Image.open(parsing) as image:
        labels = np.asarray(label_image(image))
    ys, xs = np.nonzero(labels == face_label)
    if len(xs) < min_pixels:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _check_same_size(parsing: Path, parsing_size: tuple[int, int], image: Path, size: tuple[int, int]) -> None:
    if parsing_size != size:
        raise InputDataError(f"{parsing}: parsing map is {parsing_size[0]}x{parsing_size[1]} but its image "
                             f"{image.name} is {size[0]}x{size[1]}")


def _records(root: Path, folder: Path, boxes: Optional[dict[str, FaceBox]], face_label: Optional[int]
             ) -> list[PersonRecord]:
    if not folder.is_dir():
        raise InputDataError(f"{folder}: missing")
    records = []
    for image in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        match = NAME.match(image.name)
        if match is None:
            raise InputDataError(f"{image}: not a Market-1501 name (<pid>_c<camera>s<clothes>_<frame>.png)")
        pid = int(match.group(1))
        if pid == -1:
            continue
        rel = image.relative_to(root).as_posix()
        size = check_image(image, PHOTO)
        parsing = root / "parsing" / Path(rel).with_suffix(".png")
        parsing = parsing if parsing.is_file() else None
        if parsing is not None:
            _check_same_size(parsing, check_image(parsing, LABELS), image, size)
        if boxes is not None:
            box = boxes.get(rel)
        elif parsing is not None and face_label is not None:
            box = _box_from_parsing(parsing, face_label)
        else:
            box = None
        if box is not None and not (box[2] <= size[0] and box[3] <= size[1] and min(box) >= 0):
            raise InputDataError(f"{root / 'faces.csv'}: the face box {box} of {rel} is outside its "
                                 f"{size[0]}x{size[1]} image")
        hr_face = root / "faces" / Path(rel).with_suffix(".png")
        if hr_face.is_file():
            check_image(hr_face, PHOTO)
        records.append(PersonRecord(image, pid, int(match.group(2)), int(match.group(3) or 0), parsing, box,
                                    hr_face if hr_face.is_file() else None))
    if not records:
        raise InputDataError(f"{folder}: no images")
    return records


def read_reid_folder(root: Path) -> ReidFolder:
    root = Path(root)
    if not root.is_dir():
        raise InputDataError(f"{root}: re-ID dataset folder not found (reid.dataset_dir)")
    names, cloth, face_label, name = _classes(root)
    boxes = _read_face_boxes(root)
    train = _records(root, root / "bounding_box_train", boxes, face_label)
    protocols: dict[str, tuple[list[PersonRecord], list[PersonRecord]]] = {}
    if (root / "query").is_dir() or (root / "bounding_box_test").is_dir():
        protocols["default"] = (_records(root, root / "query", boxes, face_label),
                                _records(root, root / "bounding_box_test", boxes, face_label))
    if (root / "protocols").is_dir():
        for sub in sorted(p for p in (root / "protocols").iterdir() if p.is_dir()):
            protocols[sub.name] = (_records(root, sub / "query", boxes, face_label),
                                   _records(root, sub / "bounding_box_test", boxes, face_label))
    if not protocols:
        raise InputDataError(f"{root}: no evaluation protocol (query/ + bounding_box_test/, or protocols/<name>/)")
    test_pids = {r.pid for q, g in protocols.values() for r in q + g}
    overlap = {r.pid for r in train} & test_pids - {0}
    if overlap:
        raise InputDataError(f"{root}: identities {sorted(overlap)[:5]} are in both training and test folders")
    return ReidFolder(root, name, train, protocols, names, cloth)
