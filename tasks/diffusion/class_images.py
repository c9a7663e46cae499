"""Stage `class_images`: DreamBooth's class images, drawn by the base model from the class
prompt ("a cartoon") for every class noun of the subjects; fine-tuning's prior preservation
term keeps the model's class prior close to these."""

from __future__ import annotations

import csv
import json

import mlflow
from PIL import Image

from lightning_modules.diffusion.pipeline import generate, load_text_to_image, make_pipeline, resolution_of
from lightning_modules.core.visual import image_grid
from tasks.core.params import Params
from lightning_modules.core.visual import enlarge
from tasks.core.manifest import manifest_rows
from tasks.core.errors import run_stage_main
from tasks.core.machine import PNG_RGB, require_disk, require_memory
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import stage_params
from tasks.core.tracking import log_image, stage_run
from tasks.core.models import base_model_path

STAGE = "class_images"
PROMPTS = "prompts.csv"


def class_nouns(params: Params) -> list[str]:
    return sorted({row["class_noun"] for row in manifest_rows(params)})


def check_room(params: Params, classes: int, resolution: int) -> None:
    cfg = params.class_images
    what = (f"class_images: {classes} classes x class_images.images_per_class {cfg.images_per_class} images "
            f"of {resolution}^2 (the base model's resolution)")
    # A class's images are held as uint8 arrays, and stacked, before they are written.
    require_memory(2 * cfg.images_per_class * resolution ** 2 * 3, f"{what}: one class")
    require_disk(params.paths.data, classes * cfg.images_per_class * resolution ** 2 * PNG_RGB, what)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.class_images
    nouns = class_nouns(params)
    components = load_text_to_image(base_model_path(params))
    check_room(params, len(nouns), resolution_of(components))
    pipe = make_pipeline(components)
    target = params.paths.data / "class_images"
    with stage_run(STAGE, params), atomic_outputs(target, params.paths.plots / STAGE) as (tmp, tmp_plots):
        rows, rows_of_grid = [], []
        for c, noun in enumerate(nouns):
            prompt = cfg.prompt.format(class_noun=noun)
            images = generate(pipe, [prompt] * cfg.images_per_class, seed=params.seed + 1000 * c,
                              steps=cfg.inference_steps, guidance_scale=cfg.guidance_scale, desc=noun)
            (tmp / noun).mkdir(parents=True)
            for i, image in enumerate(images):
                name = f"{noun}/{i:04d}.png"
                Image.fromarray(image).save(tmp / name)
                rows.append({"image": name, "class_noun": noun, "prompt": prompt})
            rows_of_grid += list(images[:8])
        with (tmp / PROMPTS).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["image", "class_noun", "prompt"])
            writer.writeheader()
            writer.writerows(rows)
        grid = enlarge(image_grid(rows_of_grid, columns=min(8, cfg.images_per_class)))
        tmp_plots.mkdir()
        Image.fromarray(grid).save(tmp_plots / "class_images.png")
        log_image(grid, "class_images/class_images.png")
        mlflow.log_metric("class_images", len(rows))
        (tmp / "classes.json").write_text(json.dumps(nouns) + "\n")


if __name__ == "__main__":
    run_stage_main(main)
