"""Stage `augment`: MSP A.1 augmentation, the train/val/test split, Disen-Mix mixed images.

Outputs: paths.data/augmented/{images,masks}/ + manifest.csv + classes.json + mixed/,
metrics/augment.json and plots/augment/*.png (sample grids with mask overlays).
"""

from __future__ import annotations

import csv
import json
import math
import zlib
from pathlib import Path
from typing import Iterator

import mlflow
import numpy as np
import yaml
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from lightning_modules.augmentation import AugmentParams, SubjectAugmenter, mix_combinations, mix_subject_images
from lightning_modules.core.visual import image_grid, overlay_labels
from lightning_modules.data.images import PHOTO, check_image
from tasks.core.params import AugmentConfig, Params
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.machine import PNG_MASK, PNG_RGB, require_disk, require_memory
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import stage_params
from lightning_modules.data.subjects import IMAGE_SUFFIXES, SubjectRecord, load_subject_image, read_subjects_folder
from tasks.core.tracking import log_image, stage_run

STAGE = "augment"
MANIFEST = "manifest.csv"
MIXED_MANIFEST = "mixed/manifest.csv"
MANIFEST_FIELDS = ("image", "mask", "subject", "identifier", "class_noun", "prompt", "split",
                   "scene_caption", "source_image", "zoom", "crop")
MIXED_FIELDS = ("image", "mask", "subjects", "prompt", "disentangled_prompt")
# Memory the stage holds at least per sample, a manifest row (a dict of 11 short strings and
# numbers: about 650 bytes), and per Disen-Mix combination it lists before drawing some (a
# tuple of shared names).
ROW_BYTES = 600
COMBINATION_BYTES = 64


def read_scenes(folder: Path) -> tuple[list[Path], dict[str, str]]:
    if not folder.is_dir():
        raise InputDataError(f"augment.scenes_dir: folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputDataError(f"augment.scenes_dir: no scene images in {folder}")
    for path in files:
        check_image(path, PHOTO)
    captions: dict[str, str] = {}
    meta = folder / "scenes.yaml"
    if meta.is_file():
        for entry in (yaml.safe_load(meta.read_text()) or {}).get("scenes", []):
            captions[entry["file"]] = entry.get("caption", "")
    return files, captions


def load_rgb(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError) as err:
        raise InputDataError(f"{path}: not a readable image ({err.__class__.__name__})") from None


def check_room(cfg: AugmentConfig, subjects: int, scenes: int, data: Path) -> None:
    """Refuse sizes whose samples, listed combinations or files cannot fit, before any is made."""
    total = subjects * cfg.augmentations_per_subject
    per_subject = f"{subjects} subjects x augment.augmentations_per_subject {cfg.augmentations_per_subject}"
    combinations = sum(math.comb(subjects, k) for k in cfg.mix_sizes if k <= subjects)
    require_memory(combinations * COMBINATION_BYTES,
                   f"augment: Disen-Mix lists all {combinations:,} combinations of augment.mix_sizes {cfg.mix_sizes} "
                   f"out of {subjects} subjects, which")
    pixels = cfg.canvas_size ** 2
    # The scenes are cached at canvas size (as many as the samples draw).
    require_memory(total * ROW_BYTES + min(scenes, total) * pixels * 3,
                   f"augment: {per_subject} samples and {min(scenes, total)} scenes at augment.canvas_size "
                   f"{cfg.canvas_size}^2")
    mixed = min(combinations, cfg.max_combinations) * cfg.mixed_per_combination
    require_disk(data, (total + mixed) * pixels * (PNG_RGB + PNG_MASK),
                 f"augment: {per_subject} + {mixed} mixed images and masks of augment.canvas_size {cfg.canvas_size}^2")


def assign_splits(total: int, cfg: AugmentConfig, seed: int) -> list[str]:
    """Seeded split of `total` samples: test_count test, val_count val, the rest train."""
    if cfg.val_count + cfg.test_count >= total:
        raise InputDataError(
            f"augment.val_count + augment.test_count = {cfg.val_count + cfg.test_count} leaves no training "
            f"images out of {total} (subjects x augment.augmentations_per_subject)")
    order = np.random.default_rng([seed, 7]).permutation(total)
    splits = ["train"] * total
    for rank, index in enumerate(order):
        if rank < cfg.test_count:
            splits[index] = "test"
        elif rank < cfg.test_count + cfg.val_count:
            splits[index] = "val"
    return splits


def save(array: np.ndarray, path: Path) -> None:
    Image.fromarray(array).save(path, compress_level=1)


def augment_subjects(records: list[SubjectRecord], scenes: list[Path], captions: dict[str, str],
                     params: Params, out: Path) -> Iterator[dict]:
    cfg = params.augment
    augmenter = SubjectAugmenter(AugmentParams(cfg.canvas_size, cfg.zoom_range, cfg.crop_probability,
                                               cfg.crop_range), params.seed)
    scene_cache: dict[int, np.ndarray] = {}
    (out / "images").mkdir(parents=True)
    (out / "masks").mkdir()
    progress = tqdm(total=len(records) * cfg.augmentations_per_subject, desc="augment", unit="img")
    for record in records:
        sources = [load_subject_image(item) for item in record.images]
        # Keys from the subject's name, not its position: adding a subject changes no others.
        name_key = zlib.crc32(record.name.encode())
        for j in range(cfg.augmentations_per_subject):
            image, mask = sources[j % len(sources)]
            scene_index = int(np.random.default_rng([params.seed, name_key, j, 1]).integers(len(scenes)))
            if scene_index not in scene_cache:
                # Cached at canvas size: the resize is the costliest step of a sample, and the
                # augmenter only copies a scene that is already canvas-sized (same pixels).
                scene_cache[scene_index] = augmenter.background(load_rgb(scenes[scene_index]))
            canvas, placed, draw = augmenter(image, mask, scene_cache[scene_index], key=(name_key, j))
            stem = f"{record.name}_{j:04d}.png"
            save(canvas, out / "images" / stem)
            save(placed.astype(np.uint8) * 255, out / "masks" / stem)
            progress.update()
            yield {
                "image": f"images/{stem}", "mask": f"masks/{stem}", "subject": record.name,
                "identifier": record.identifier, "class_noun": record.class_noun, "prompt": record.prompt,
                "scene_caption": captions.get(scenes[scene_index].name, ""),
                "source_image": record.images[j % len(sources)].image.name,
                "zoom": round(draw.zoom, 4), "crop": round(draw.crop, 4),
            }
    progress.close()


def write_csv(path: Path, fields: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def label_map(out: Path, row: dict, class_index: int) -> np.ndarray:
    return (np.asarray(Image.open(out / row["mask"])) > 0).astype(np.uint8) * class_index


def disen_mix(rows: list[dict], records: list[SubjectRecord], params: Params, out: Path) -> list[dict]:
    cfg = params.augment
    index = {r.name: i + 1 for i, r in enumerate(records)}
    by_subject = {r.name: [row for row in rows if row["subject"] == r.name and row["split"] == "train"]
                  for r in records}
    prompts = {r.name: r.prompt for r in records}
    combos = mix_combinations([r.name for r in records], cfg.mix_sizes, cfg.max_combinations, params.seed)
    (out / "mixed" / "images").mkdir(parents=True)
    (out / "mixed" / "masks").mkdir()
    mixed_rows = []
    rng = np.random.default_rng([params.seed, 11])
    for combo in tqdm(combos, desc="disen-mix", unit="combo"):
        for _ in range(cfg.mixed_per_combination):
            picks = [by_subject[name][rng.integers(len(by_subject[name]))] for name in combo]
            mixed = mix_subject_images(
                [load_rgb(out / row["image"]) for row in picks],
                [label_map(out, row, index[row["subject"]]) for row in picks],
                combo, [prompts[name] for name in combo], cfg.mix_prefix, cfg.canvas_size)
            stem = f"{len(mixed_rows):05d}.png"
            save(mixed.image, out / "mixed" / "images" / stem)
            save(mixed.labels, out / "mixed" / "masks" / stem)
            mixed_rows.append({"image": f"mixed/images/{stem}", "mask": f"mixed/masks/{stem}",
                               "subjects": ";".join(combo), "prompt": mixed.prompt,
                               "disentangled_prompt": mixed.disentangled_prompt})
    write_csv(out / MIXED_MANIFEST, MIXED_FIELDS, mixed_rows)
    return mixed_rows


def sample_grids(rows: list[dict], mixed_rows: list[dict], records: list[SubjectRecord],
                 params: Params, out: Path, plots: Path) -> None:
    index = {r.name: i + 1 for i, r in enumerate(records)}
    n = params.augment.grid_samples
    picks = [rows[i] for i in np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)]
    tiles = [overlay_labels(load_rgb(out / r["image"]), label_map(out, r, index[r["subject"]])) for r in picks]
    plots.mkdir(parents=True)
    grid = image_grid(tiles, columns=min(8, len(tiles)))
    save(grid, plots / "samples.png")
    log_image(grid, "augment/samples.png")
    if mixed_rows:
        tiles = [overlay_labels(load_rgb(out / r["image"]), np.asarray(Image.open(out / r["mask"])))
                 for r in mixed_rows[:n]]
        grid = image_grid(tiles, columns=min(8, len(tiles)))
        save(grid, plots / "mixed.png")
        log_image(grid, "augment/mixed.png")


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.augment
    records = read_subjects_folder(cfg.subjects_dir)
    scenes, captions = read_scenes(cfg.scenes_dir)
    check_room(cfg, len(records), len(scenes), params.paths.data)
    splits = assign_splits(len(records) * cfg.augmentations_per_subject, cfg, params.seed)
    out = params.paths.data / "augmented"
    targets = (out, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params), atomic_outputs(*targets) as (tmp, tmp_metrics, tmp_plots):
        rows = list(augment_subjects(records, scenes, captions, params, tmp))
        for row, split in zip(rows, splits):
            row["split"] = split
        write_csv(tmp / MANIFEST, MANIFEST_FIELDS, rows)
        (tmp / "classes.json").write_text(json.dumps(["background"] + [r.name for r in records], indent=2) + "\n")
        mixed_rows = disen_mix(rows, records, params, tmp)
        sample_grids(rows, mixed_rows, records, params, tmp, tmp_plots)
        counts = {split: sum(1 for s in splits if s == split) for split in ("train", "val", "test")}
        metrics = {"subjects": len(records), "scenes": len(scenes), "images": counts,
                   "mixed_images": len(mixed_rows), "cropped_fraction": round(
                       sum(1 for r in rows if r["crop"] < 1.0) / len(rows), 4)}
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        mlflow.log_metrics({"subjects": len(records), "mixed_images": len(mixed_rows),
                            **{f"images.{k}": v for k, v in counts.items()}})
        mlflow.log_artifact(str(tmp / MANIFEST), artifact_path="augment")


if __name__ == "__main__":
    run_stage_main(main)
