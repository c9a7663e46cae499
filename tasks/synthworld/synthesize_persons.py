"""Stage `synthesize_persons`: SynthWorld's cloth-changing persons as a Market-1501-style folder.

Outputs under paths.data/persons (the layout a user's own re-ID folder follows too):
dataset.yaml, bounding_box_train/, protocols/<protocol>/{query,bounding_box_test}/ with
images named <pid>_c<camera>s<outfit>_<frame>_00.png, parsing/ and faces/ mirroring the
image paths, and faces.csv (face boxes in image pixels). Contact sheets go to
paths.plots/synthesize_persons, counts to paths.metrics/synthesize_persons.json.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from PIL import Image
from tqdm import tqdm

from lightning_modules.synthworld import (
    CLOTH_CLASSES,
    FACE_CLASS,
    PARSING_CLASSES,
    PROTOCOLS,
    face_crop,
    identity_catalogue,
    outfits_needed,
    outfits_of,
    plan_persons,
    render_person,
    restored_face,
    surveillance_view,
)
from lightning_modules.core.visual import image_grid, overlay_labels
from tasks.core.params import Params, SynthesizePersonsConfig
from tasks.core.errors import ParamsError, run_stage_main
from tasks.core.machine import PNG_MASK, PNG_RGB, require_disk, require_memory
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import stage_params
from tasks.core.tracking import log_image, log_metrics_tree, stage_run

STAGE = "synthesize_persons"
TRAIN_DIR = "bounding_box_train"
FACES_CSV = "faces.csv"
SHEET_FACES = 8  # identities on the HR-vs-LR face sheet
# Memory per planned image at least: its PlannedImage, Shot and places tuple.
PLANNED_IMAGE_BYTES = 300


def folder_for(protocol: str, role: str) -> str:
    if role == "train":
        return TRAIN_DIR
    return f"protocols/{protocol}/{'query' if role == 'query' else 'bounding_box_test'}"


def image_name(pid: int, camera: int, outfit: int, frame: int) -> str:
    return f"{pid:04d}_c{camera}s{outfit}_{frame:06d}_00.png"


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def check_sizes(cfg: SynthesizePersonsConfig) -> None:
    for key in ("render_height", "render_width"):
        if getattr(cfg, key) % cfg.degrade_factor:
            raise ParamsError(f"synthesize_persons.{key}: {getattr(cfg, key)} is not a multiple of "
                              f"synthesize_persons.degrade_factor ({cfg.degrade_factor})")


def planned_images(cfg: SynthesizePersonsConfig) -> int:
    """How many images plan_persons lists: train views, PRCC's cameras A, B, C, Celeb's outfits."""
    return (cfg.num_train_ids * cfg.train_outfits * cfg.cameras
            + cfg.num_test_ids * (3 * cfg.prcc_images_per_camera + cfg.celeb_outfits))


def check_room(params: Params) -> None:
    cfg = params.synthesize_persons
    images = planned_images(cfg)
    sizes = (f"synthesize_persons.num_train_ids {cfg.num_train_ids} x train_outfits {cfg.train_outfits} x cameras "
             f"{cfg.cameras} + num_test_ids {cfg.num_test_ids} x (3 x prcc_images_per_camera "
             f"{cfg.prcc_images_per_camera} + celeb_outfits {cfg.celeb_outfits}) = {images:,} images")
    require_memory(images * PLANNED_IMAGE_BYTES, f"synthesize_persons: planning {sizes}")
    # Every image is written with its parsing map; a surveillance image is the render / factor.
    pixels = cfg.render_height * cfg.render_width // cfg.degrade_factor ** 2
    require_disk(params.paths.data, images * pixels * (PNG_RGB + PNG_MASK),
                 f"synthesize_persons: {sizes} of {cfg.render_height // cfg.degrade_factor}x"
                 f"{cfg.render_width // cfg.degrade_factor} pixels")


def upscale(image: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((width, height), Image.NEAREST))


def write_persons(params: Params, out: Path, plots: Path) -> dict:
    cfg = params.synthesize_persons
    plan = plan_persons(cfg.num_train_ids, cfg.num_test_ids, cfg.train_outfits, cfg.cameras,
                        cfg.prcc_images_per_camera, cfg.celeb_outfits, params.seed)
    identities = {who.pid: who for who in identity_catalogue(cfg.num_train_ids + cfg.num_test_ids, params.seed)}
    wardrobe = {pid: outfits_of(identities[pid], count, params.seed) for pid, count in outfits_needed(plan).items()}
    h, w, factor = cfg.render_height, cfg.render_width, cfg.degrade_factor
    out.mkdir(parents=True)
    frames: Counter[str] = Counter()
    counts: Counter[tuple[str, str]] = Counter()
    face_rows: list[dict] = []
    identity_tiles, face_tiles, faced_pids = [], [], set()
    for item in tqdm(plan, desc="persons", unit="image"):
        render = render_person(identities[item.pid], wardrobe[item.pid][item.outfit - 1], item.shot, h, w)
        lr = surveillance_view(render.image, render.parsing, factor, item.shot.key)
        face = restored_face(render.image, lr.face_box, factor, cfg.face_size) if lr.face_box else None
        for protocol, role in item.places:
            folder = folder_for(protocol, role)
            frames[folder] += 1
            counts[protocol, role] += 1
            rel = f"{folder}/{image_name(item.pid, item.camera, item.outfit, frames[folder])}"
            save_png(lr.image, out / rel)
            save_png(lr.parsing, out / "parsing" / rel)
            if face is not None:
                save_png(face, out / "faces" / rel)
                face_rows.append(dict(zip(("image", "x0", "y0", "x1", "y1"), (rel, *lr.face_box))))
        if item.pid == 1:
            big = upscale(lr.image, h, w)
            identity_tiles += [render.image, big, overlay_labels(big, upscale(lr.parsing, h, w))]
        if face is not None and item.pid not in faced_pids and len(faced_pids) < SHEET_FACES:
            faced_pids.add(item.pid)
            student = face_crop(lr.image, lr.face_box, cfg.face_size, Image.NEAREST)
            face_tiles += [upscale(face, 96, 96), upscale(student, 96, 96)]
    write_layout_files(out, face_rows)
    plots.mkdir(parents=True)
    for name, tiles, columns in (("identity", identity_tiles, 3 * cfg.cameras), ("faces", face_tiles, 4)):
        grid = image_grid(tiles, columns=columns)
        save_png(grid, plots / f"{name}.png")
        log_image(grid, f"{STAGE}/{name}.png")
    files = sum(counts.values())
    return {
        "ids": {"train": cfg.num_train_ids, "test": cfg.num_test_ids},
        "images": {"train": counts["train", "train"],
                   **{p: {"query": counts[p, "query"], "gallery": counts[p, "gallery"]} for p in PROTOCOLS}},
        "renders": len(plan),
        "files": files,
        "faces": len(face_rows),
        "visible_face_fraction": round(len(face_rows) / files, 4),
    }


def write_layout_files(out: Path, face_rows: list[dict]) -> None:
    (out / "dataset.yaml").write_text(yaml.safe_dump({
        "name": "synthworld-persons",
        "parsing_classes": list(PARSING_CLASSES),
        "cloth_classes": list(CLOTH_CLASSES),
        "face_class": FACE_CLASS,
        "protocols": dict(PROTOCOLS),
    }, sort_keys=False, width=1000))
    with open(out / FACES_CSV, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "x0", "y0", "x1", "y1"])
        writer.writeheader()
        writer.writerows(face_rows)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    check_sizes(params.synthesize_persons)
    check_room(params)
    targets = (params.paths.data / "persons", params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params), atomic_outputs(*targets) as (tmp, tmp_metrics, tmp_plots):
        metrics = write_persons(params, tmp, tmp_plots)
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        log_metrics_tree(metrics)


if __name__ == "__main__":
    run_stage_main(main)
