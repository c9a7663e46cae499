"""A small faces folder in the layout of the synthesize_faces stage (images/, parts/, faces.csv,
dataset.yaml), drawn with flat shapes: what the face judges' tests train and check on in seconds."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

from lightning_modules.synthworld.faces import FACE_ATTRIBUTES, PART, PART_CLASSES

HAIR = {"black": (30, 26, 26), "brown": (104, 64, 36), "blond": (226, 190, 112), "red": (178, 66, 28),
        "gray": (168, 168, 166)}
SKINS = [(236, 200, 170), (200, 150, 110), (140, 96, 64), (96, 64, 44)]


def draw_face(size: int, identity: int, look: dict[str, str]) -> tuple[Image.Image, np.ndarray]:
    """(RGB face, part map) of one photo: the skin tone is the identity's, the rest the look's."""
    image = Image.new("RGB", (size, size), (180, 190, 200))
    parts = Image.new("L", (size, size), PART["background"])
    draws = ImageDraw.Draw(image), ImageDraw.Draw(parts)

    def shape(kind: str, box, color, part: str) -> None:
        box = [round(v * size) for v in box]
        for draw, fill in zip(draws, (color, PART[part])):
            if kind == "chord":   # the lower half of an ellipse (a beard), or the upper (short hair)
                draw.chord(box, *((0, 180) if part == "beard" else (180, 360)), fill=fill)
            else:
                getattr(draw, kind)(box, fill=fill)

    hair = HAIR[look["hair_color"]]
    style = look["hair_style"]
    if style != "short":
        shape("rectangle", (0.2, 0.25, 0.8, 0.95 if style == "straight" else 0.6), hair, "hair")
    if style == "curly":
        for x in (0.2, 0.35, 0.5, 0.65, 0.8):
            shape("ellipse", (x - 0.1, 0.55, x + 0.1, 0.75), hair, "hair")
    if style == "ponytail":
        shape("ellipse", (0.75, 0.3, 0.95, 0.8), hair, "hair")
    shape("rectangle", (0.4, 0.75, 0.6, 1.0), SKINS[identity % len(SKINS)], "neck")
    shape("ellipse", (0.25, 0.15, 0.75, 0.85), SKINS[identity % len(SKINS)], "skin")
    shape("chord" if style == "short" else "ellipse", (0.25, 0.05, 0.75, 0.35), hair, "hair")
    for x in (0.38, 0.62):
        shape("ellipse", (x - 0.06, 0.42, x + 0.06, 0.5), (40, 60, 120), "eyes")
        shape("rectangle", (x - 0.07, 0.36, x + 0.07, 0.39), (40, 30, 20), "brows")
        if look["glasses"] == "yes":
            shape("rectangle", (x - 0.09, 0.405, x + 0.09, 0.415), (20, 20, 20), "glasses")
    shape("rectangle", (0.46, 0.48, 0.54, 0.6), (190, 120, 100), "nose")
    if look["beard"] == "yes":
        shape("chord", (0.3, 0.55, 0.7, 0.86), (60, 40, 30), "beard")
    mouth = {"closed": (0.4, 0.66, 0.6, 0.69), "open": (0.42, 0.64, 0.58, 0.74), "smiling": (0.34, 0.64, 0.66, 0.7)}
    shape("ellipse", mouth[look["mouth"]], (150, 30, 40) if look["mouth"] != "open" else (50, 10, 10), "mouth")
    return image, np.asarray(parts)


def write_faces_folder(root: Path, identities: int = 4, images_per_identity: int = 4, size: int = 64,
                       val_per_identity: int = 1, test_per_identity: int = 1, seed: int = 0) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "parts").mkdir()
    rng = random.Random(seed)
    attributes = {name: list(values) for name, values in FACE_ATTRIBUTES.items()}
    rows = []
    for identity in range(identities):
        for k in range(images_per_identity):
            # every value shows up in the first images, so that tiny folders still hold them all
            look = {name: values[(identity * images_per_identity + k + rng.randrange(2)) % len(values)]
                    for name, values in attributes.items()}
            image, parts = draw_face(size, identity, look)
            name = f"{identity:04d}_{k:02d}.png"
            image.save(root / "images" / name)
            Image.fromarray(parts).save(root / "parts" / name)
            held = images_per_identity - k
            split = "test" if held <= test_per_identity else "val" if held <= test_per_identity + val_per_identity \
                else "train"
            rows.append({"image": f"images/{name}", "parts": f"parts/{name}", "identity": identity, "index": k,
                         "split": split, "caption": "a person", **look, "yaw": 0.0, "light": 0.0})
    with (root / "faces.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "dataset.yaml").write_text(yaml.safe_dump({
        "part_classes": list(PART_CLASSES), "attributes": attributes, "identities": identities,
        "images_per_identity": images_per_identity, "image_size": size}, sort_keys=False))
    return root
