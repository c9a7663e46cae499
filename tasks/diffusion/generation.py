"""Generating a prompt set and keeping the images: what every generating stage shares.

A generation folder holds `images/<subject or class>/<index>_seed<seed>.png`, `prompts.csv`
(one row per image: the prompt, its seed, the subject and class and scene it asks for) and
`grids/<subject or class>.png`. Evaluation reads the folder back through `read_generations`,
so a folder of images from elsewhere with the same prompts.csv is measured the same way.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from diffusers import StableDiffusionPipeline
from PIL import Image

from lightning_modules.core.visual import image_grid
from lightning_modules.diffusion.generation import GatheredImages, TextToImageGenerator, prompt_loader
from lightning_modules.diffusion.prompt_sets import PromptItem, PromptSetError, SubjectEntry, load_prompt_set
from tasks.core.errors import InputDataError
from tasks.core.params import Params
from tasks.core.trainer import predict
from lightning_modules.core.visual import enlarge

PROMPTS = "prompts.csv"
IMAGES = "images"
GRIDS = "grids"
FIELDS = ("image", "index", "prompt", "seed", "template", "subject", "class_noun", "scene")


def subject_entries(manifest: dict) -> list[SubjectEntry]:
    """The subjects a fine-tuning run learned (its finetune.json)."""
    return [SubjectEntry(name, entry["identifier"], entry["class_noun"])
            for name, entry in manifest["subjects"].items()]


def prompt_items(path: Path, subjects: Sequence[SubjectEntry]) -> list[PromptItem]:
    """A prompt set expanded over the subjects; an error names the file and the entry."""
    try:
        return load_prompt_set(path).expand(subjects)
    except PromptSetError as err:
        message = str(err)
        raise InputDataError(message if message.startswith(str(path)) else f"{path}: {message}") from None


def draw(params: Params, pipe: StableDiffusionPipeline, items: Sequence[PromptItem], *, steps: int,
         guidance_scale: float, batch_size: int) -> Optional[dict[int, np.ndarray]]:
    """Every item drawn on the devices of params.trainer; the images by index on rank zero,
    None on the other ranks."""
    gathered = GatheredImages()
    predict(params, TextToImageGenerator(pipe, steps, guidance_scale), prompt_loader(items, batch_size), [gathered])
    if not gathered.images:
        return None
    missing = [item.index for item in items if item.index not in gathered.images]
    if missing:
        raise RuntimeError(f"generation lost items {missing[:5]}: not every rank's images were gathered")
    return gathered.images


def write_generations(folder: Path, items: Sequence[PromptItem], images: dict[int, np.ndarray]) -> dict[str, np.ndarray]:
    """The images, their prompts.csv and a grid per subject (or class) in `folder`; returns the grids."""
    by_who: dict[str, list[np.ndarray]] = {}
    with (folder / PROMPTS).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for item in items:
            name = f"{IMAGES}/{item.stem}.png"
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[item.index]).save(folder / name)
            writer.writerow({"image": name, "index": item.index, "prompt": item.prompt, "seed": item.seed,
                             "template": item.template, "subject": item.subject or "", "class_noun": item.class_noun,
                             "scene": item.scene or ""})
            by_who.setdefault(item.subject or item.class_noun, []).append(images[item.index])
    grids = {}
    (folder / GRIDS).mkdir(exist_ok=True)
    for who, pictures in by_who.items():
        grids[who] = enlarge(image_grid(pictures, columns=min(8, len(pictures))))
        Image.fromarray(grids[who]).save(folder / GRIDS / f"{who}.png")
    return grids


def read_generations(folder: Path) -> tuple[list[PromptItem], np.ndarray]:
    """The items and images (N x H x W x 3 uint8) of a generation folder."""
    path = folder / PROMPTS
    if not path.is_file():
        raise InputDataError(f"{path}: missing; generate first")
    items, images = [], []
    with path.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                image = np.asarray(Image.open(folder / row["image"]).convert("RGB"))
            except OSError as err:
                raise InputDataError(f"{path}:{line}: {row['image']}: not readable ({err})") from None
            items.append(PromptItem(int(row["index"]), row["prompt"], int(row["seed"]), row["template"],
                                    row["class_noun"], row["scene"] or None, row["subject"] or None))
            images.append(image)
    if not items:
        raise InputDataError(f"{path}: no generated images")
    return items, np.stack(images)
