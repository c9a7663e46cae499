"""Stage `synthesize_faces`: SynthWorld's aligned faces, part maps and captions (eCLIPsed's FFHQ).

Outputs under paths.data/faces (the layout a user's own faces folder follows too):
images/<identity:04d>_<k:02d>.png, parts/ with the same names (uint8, values index
part_classes), faces.csv (image, parts, identity, index, split, caption and one column per
attribute, plus yaw and light) and dataset.yaml (part classes, attribute vocabularies, sizes).
Within each identity the last test_per_identity images are test, the val_per_identity before
them val. Contact sheets go to paths.plots/synthesize_faces, counts and attribute shares to
paths.metrics/synthesize_faces.json.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from lightning_modules.core.visual import enlarge, image_grid, overlay_labels
from lightning_modules.synthworld import (
    FACE_ATTRIBUTES,
    PART_CLASSES,
    caption_of,
    face_catalogue,
    look_for,
    render_face,
)
from tasks.core.errors import run_stage_main
from tasks.core.machine import FLOAT32, PNG_MASK, PNG_RGB, require_disk, require_memory
from tasks.core.outputs import atomic_outputs
from tasks.core.params import Params
from tasks.core.schema.synthworld import SynthesizeFacesConfig
from tasks.core.stage import stage_params
from tasks.core.tracking import log_image, log_metrics_tree, stage_run

STAGE = "synthesize_faces"
FACES_CSV = "faces.csv"
COLUMNS = ("image", "parts", "identity", "index", "split", "caption", *FACE_ATTRIBUTES, "yaw", "light")
SHEET_FACES = 16        # faces (with part overlay and caption) on the contact sheet
SHEET_IDENTITIES = 6    # identities (all their images, one row each) on the identity sheet
TILE = 128
# Memory per image while rendering: the supersampled canvas (ids, RGB, labels, float photo).
CANVAS_BYTES_PER_PIXEL = 1 + 3 + 1 + 3 * FLOAT32


def split_of(index: int, cfg: SynthesizeFacesConfig) -> str:
    train = cfg.images_per_identity - cfg.val_per_identity - cfg.test_per_identity
    return "train" if index < train else "val" if index < train + cfg.val_per_identity else "test"


def check_room(params: Params) -> None:
    cfg = params.synthesize_faces
    images = cfg.num_identities * cfg.images_per_identity
    big = cfg.image_size * cfg.supersample
    require_memory(big * big * CANVAS_BYTES_PER_PIXEL,
                   f"synthesize_faces: a {big}x{big} canvas (image_size {cfg.image_size} x supersample "
                   f"{cfg.supersample})")
    require_disk(params.paths.data, images * cfg.image_size ** 2 * (PNG_RGB + PNG_MASK),
                 f"synthesize_faces: num_identities {cfg.num_identities} x images_per_identity "
                 f"{cfg.images_per_identity} = {images:,} faces of {cfg.image_size}x{cfg.image_size} pixels")


def save_png(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, compress_level=1)


def captioned(face: np.ndarray, parts: np.ndarray, caption: str, font) -> np.ndarray:
    """The face and its part overlay side by side, the caption under them."""
    scale = max(1, TILE // face.shape[0])
    pair = np.concatenate([enlarge(face, scale), enlarge(overlay_labels(face, parts), scale)], axis=1)
    tile = Image.new("RGB", (pair.shape[1], pair.shape[0] + 26), (255, 255, 255))
    tile.paste(Image.fromarray(pair))
    draw = ImageDraw.Draw(tile)
    words, lines = caption.split(), [""]
    for word in words:   # two lines of at most ~42 characters
        if len(lines[-1]) + len(word) > 42 and len(lines) < 2:
            lines.append("")
        lines[-1] = f"{lines[-1]} {word}".strip()
    for row, line in enumerate(lines):
        draw.text((2, pair.shape[0] + 1 + 12 * row), line, fill=(0, 0, 0), font=font)
    return np.asarray(tile)


def write_faces(params: Params, out: Path, plots: Path) -> dict:
    cfg = params.synthesize_faces
    identities = face_catalogue(cfg.num_identities, params.seed)
    (out / "images").mkdir(parents=True)
    (out / "parts").mkdir()
    rows: list[dict] = []
    part_pixels = np.zeros(len(PART_CLASSES), np.int64)
    font = ImageFont.load_default()
    sheet, identity_rows = [], []
    picks = set(np.linspace(0, cfg.num_identities * cfg.images_per_identity - 1, SHEET_FACES).round().astype(int))
    with tqdm(total=cfg.num_identities * cfg.images_per_identity, desc="faces", unit="image") as progress:
        for who in identities:
            for index in range(cfg.images_per_identity):
                look = look_for(params.seed, who.identity, index, cfg.glasses_probability, cfg.beard_probability,
                                cfg.max_yaw)
                render = render_face(who, look, cfg.image_size, cfg.supersample)
                name = f"{who.identity:04d}_{index:02d}.png"
                save_png(render.image, out / "images" / name)
                save_png(render.parts, out / "parts" / name)
                attributes = look.attributes()
                caption = caption_of(attributes)
                rows.append({"image": f"images/{name}", "parts": f"parts/{name}", "identity": who.identity,
                             "index": index, "split": split_of(index, cfg), "caption": caption, **attributes,
                             "yaw": look.yaw, "light": look.light})
                part_pixels += np.bincount(render.parts.ravel(), minlength=len(PART_CLASSES))
                if len(rows) - 1 in picks:
                    sheet.append(captioned(render.image, render.parts, caption, font))
                if who.identity < SHEET_IDENTITIES:
                    identity_rows.append(render.image)
                progress.update()
    write_layout_files(out, rows, cfg)
    plots.mkdir(parents=True)
    pictures = {"faces": image_grid(sheet, columns=4),
                "identities": image_grid([enlarge(face, max(1, 64 // cfg.image_size)) for face in identity_rows],
                                         columns=cfg.images_per_identity)}
    for name, picture in pictures.items():
        save_png(picture, plots / f"{name}.png")
        log_image(picture, f"{STAGE}/{name}.png")
    return metrics_of(rows, part_pixels, cfg)


def write_layout_files(out: Path, rows: list[dict], cfg: SynthesizeFacesConfig) -> None:
    (out / "dataset.yaml").write_text(yaml.safe_dump({
        "name": "synthworld-faces",
        "part_classes": list(PART_CLASSES),
        "attributes": {name: list(values) for name, values in FACE_ATTRIBUTES.items()},
        "identities": cfg.num_identities,
        "images_per_identity": cfg.images_per_identity,
        "image_size": cfg.image_size,
    }, sort_keys=False, width=1000))
    with open(out / FACES_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS))
        writer.writeheader()
        writer.writerows(rows)


def metrics_of(rows: list[dict], part_pixels: np.ndarray, cfg: SynthesizeFacesConfig) -> dict:
    splits = Counter(row["split"] for row in rows)
    shares = {}
    for name, values in FACE_ATTRIBUTES.items():
        counts = Counter(row[name] for row in rows)
        shares[name] = {value: round(counts[value] / len(rows), 4) for value in values}
    return {
        "identities": cfg.num_identities,
        "images": len(rows),
        "splits": {split: splits[split] for split in ("train", "val", "test")},
        "attribute_shares": shares,
        "part_pixel_shares": {name: round(int(n) / int(part_pixels.sum()), 4)
                              for name, n in zip(PART_CLASSES, part_pixels)},
    }


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    check_room(params)
    targets = (params.paths.data / "faces", params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params), atomic_outputs(*targets) as (tmp, tmp_metrics, tmp_plots):
        metrics = write_faces(params, tmp, tmp_plots)
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        log_metrics_tree(metrics)


if __name__ == "__main__":
    run_stage_main(main)
