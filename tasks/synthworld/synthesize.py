"""Stage `synthesize`: write SynthWorld's subjects folder and background scenes.

Outputs (under paths.data/synthworld): subjects/ in the subjects-folder layout that a user's
own folder also follows, scenes/*.png with scenes.yaml captions, MSP's compositions/ and their
twins with pose images (compositions_openpose/), ControlNet's pose/picture pairs (poses/), and
contact sheets.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import yaml
from PIL import Image
from tqdm import tqdm

from lightning_modules.synthworld import render_scene, render_subject, scene_catalogue, subject_catalogue, view_for
from lightning_modules.core.visual import image_grid
from lightning_modules.synthworld.compositions import write_compositions
from lightning_modules.synthworld.poses import write_pose_pairs
from tasks.core.params import Params
from tasks.core.errors import run_stage_main
from tasks.core.machine import PNG_MASK, PNG_RGB, require_disk
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import stage_params
from lightning_modules.data.subjects import write_subjects_yaml
from tasks.core.tracking import log_image, stage_run

STAGE = "synthesize"


def save_png(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, compress_level=1)


def check_room(params: Params) -> None:
    cfg = params.synthesize
    subjects = cfg.num_subjects * cfg.images_per_subject * cfg.image_size ** 2 * (PNG_RGB + PNG_MASK)
    scenes = cfg.num_scenes * cfg.scene_size ** 2 * PNG_RGB
    require_disk(params.paths.data, subjects + scenes,
                 f"synthesize: synthesize.num_subjects {cfg.num_subjects} x synthesize.images_per_subject "
                 f"{cfg.images_per_subject} images of synthesize.image_size {cfg.image_size}^2 and "
                 f"synthesize.num_scenes {cfg.num_scenes} of synthesize.scene_size {cfg.scene_size}^2")


def write_synthworld(params: Params, out: Path) -> dict:
    cfg = params.synthesize
    specs = subject_catalogue(cfg.num_subjects)
    sheet = []
    for spec in tqdm(specs, desc="subjects", unit="subject"):
        for k in range(cfg.images_per_subject):
            image, mask = render_subject(spec, view_for(spec.class_index, k, params.seed), cfg.image_size)
            save_png(image, out / "subjects" / spec.name / "images" / f"{k:03d}.png")
            save_png(mask.astype(np.uint8) * 255, out / "subjects" / spec.name / "masks" / f"{k:03d}.png")
            if k < 4:
                sheet.append(image)
    write_subjects_yaml(out / "subjects", [
        {"name": s.name, "identifier": s.identifier, "class_noun": s.class_noun} for s in specs
    ])
    scenes = scene_catalogue(cfg.num_scenes)
    for scene in tqdm(scenes, desc="scenes", unit="scene"):
        save_png(render_scene(scene, cfg.scene_size, params.seed), out / "scenes" / f"{scene.index:03d}.png")
    (out / "scenes" / "scenes.yaml").write_text(yaml.safe_dump(
        {"scenes": [{"file": f"{s.index:03d}.png", "kind": s.kind, "caption": s.caption} for s in scenes]},
        sort_keys=False))
    compositions = write_compositions(out / "compositions", specs, scenes, cfg.composition_counts,
                                      cfg.compositions_per_count, cfg.composition_size, params.seed,
                                      pose_folder=out / "compositions_openpose")
    pairs = write_pose_pairs(out / "poses", specs, scenes, cfg.pose_pairs, cfg.composition_size, params.seed)
    skipped = [n for n in cfg.composition_counts if n > len(specs)]
    if skipped:
        print(f"synthesize: no compositions of {', '.join(map(str, skipped))} subjects "
              f"(synthesize.num_subjects is {len(specs)})", flush=True)
    log_image(image_grid(sheet, columns=4), "synthworld/subjects.png")
    log_image(composition_sheet(out / "compositions", compositions), "synthworld/compositions.png")
    return {
        "subjects": len(specs),
        "classes": len({s.class_noun for s in specs}),
        "images": len(specs) * cfg.images_per_subject,
        "scenes": len(scenes),
        "compositions": len(compositions),
        "pose_pairs": pairs,
    }


def composition_sheet(folder: Path, names: list[str]) -> np.ndarray:
    """Every composition's layout beside its scaffolding image, one row per subject count."""
    pictures = []
    for name in names:
        pictures += [np.asarray(Image.open(folder / f"{name}_{kind}.png").convert("RGB"))
                     for kind in ("layout", "scaffolding")]
    per_row = 2 * max(1, sum(1 for n in names if n.startswith(names[0].split("_")[0] + "_")))
    return image_grid(pictures, columns=per_row)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    check_room(params)
    out = params.paths.data / "synthworld"
    metrics_file = params.paths.metrics / f"{STAGE}.json"
    with stage_run(STAGE, params), atomic_outputs(out, metrics_file) as (tmp, tmp_metrics):
        counts = write_synthworld(params, tmp)
        tmp_metrics.write_text(json.dumps(counts, indent=2) + "\n")
        mlflow.log_metrics({k: float(v) for k, v in counts.items()})


if __name__ == "__main__":
    run_stage_main(main)
