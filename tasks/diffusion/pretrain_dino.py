"""Stage `pretrain_dino`: the tiny ViT of the zoo trained by DINO self-distillation on SynthWorld
crops, so the DINO metric (DreamBooth's cosine of [CLS] embeddings between generated and real
subject images) reads a network that has learnt something. When params.zoo.dino names a real
DINO (e.g. facebook/dino-vits16) the stage records it and trains nothing.

Training data: the subjects' own images with their exact masks (params.augment.subjects_dir,
SynthWorld's renders or your folder), and the scenes (params.augment.scenes_dir) that background
swaps put them on (lightning_modules/diffusion/multicrop.py says why).

How well it learned is measured where the metric needs it: on the augment stage's held-out
images (val and test), nearest-neighbour subject retrieval with the [CLS] embedding and the gap
between same-subject and different-subject cosines, before and after training.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import mlflow
import torch
from PIL import Image
from transformers import AutoImageProcessor, ViTModel

from lightning_modules.diffusion.dino import DinoPretrainer, DinoSettings
from lightning_modules.data.subjects import SUBJECTS_FILE, load_subject_image, read_subjects_folder
from lightning_modules.diffusion.multicrop import (
    MultiCrop,
    MultiCropSettings,
    SubjectPictures,
    load_square,
    local_size_for,
    square_picture,
)
from lightning_modules.diffusion.subject_retrieval import cls_embeddings, subject_retrieval
from tasks.core.curves import write_curves
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.params import Params
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import stage_run
from tasks.core.trainer import fit
from tasks.core.models import dino_dir, record_real_model, write_record, zoo_model
from tasks.core.manifest import manifest_rows
from tasks.diffusion.setup import content_digest, seeded_loader, settings_from

STAGE = "pretrain_dino"
HELDOUT_SPLITS = ("val", "test")
SCENE_SUFFIXES = (".png", ".jpg", ".jpeg")
# Training pictures are read at twice the model's image size: a crop of 40% of the area then
# shrinks ~1.3x to the model's size, sharp without aliasing, and the batch stays small.
SOURCE_SCALE = 2


@dataclass(frozen=True)
class HeldoutImage:
    path: Path
    subject: str


def heldout_images(params: Params) -> list[HeldoutImage]:
    """The augment stage's val and test images: subjects composited on scenes. Training never
    sees them, but they are made from the same subject images it trains on: what they measure is
    finding a subject across scenes, scales and crops, not across poses it never saw."""
    root = params.paths.data / "augmented"
    return [HeldoutImage(root / row["image"], row["subject"])
            for row in manifest_rows(params) if row["split"] in HELDOUT_SPLITS]


def subject_pictures(params: Params, size: int) -> tuple[SubjectPictures, list[Path]]:
    """Every image of every subject with its mask, square at `size`; and the files read."""
    folder = Path(params.augment.subjects_dir)
    images = [image for record in read_subjects_folder(folder) for image in record.images]
    pictures = [square_picture(*load_subject_image(image), size) for image in images]
    files = [folder / SUBJECTS_FILE, *(p for image in images for p in (image.image, image.mask) if p is not None)]
    return SubjectPictures(torch.stack([p for p, _ in pictures]), torch.stack([m for _, m in pictures])), files


def scene_paths(params: Params) -> list[Path]:
    folder = Path(params.augment.scenes_dir)
    scenes = sorted(p for p in folder.glob("*") if p.suffix.lower() in SCENE_SUFFIXES) if folder.is_dir() else []
    if not scenes:
        raise InputDataError(f"augment.scenes_dir: no scene images in {folder}, which "
                             "pretrain_dino.background_swap puts the subjects on (or set it to 0)")
    return scenes


class _WithoutLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in record.getMessage()


def load_backbone(path: Path) -> ViTModel:
    """The zoo's tiny ViT. It is saved without the pooler ([CLS] is what DINO and the metric
    use), which from_pretrained adds and reports as missing: that report is not news here, any
    other missing weight is an error."""
    report, quiet = logging.getLogger("transformers.modeling_utils"), _WithoutLoadReport()
    report.addFilter(quiet)
    try:
        backbone, info = ViTModel.from_pretrained(path, output_loading_info=True)
    finally:
        report.removeFilter(quiet)
    missing = [key for key in info["missing_keys"] if not key.startswith("pooler.")]
    if missing:
        raise InputDataError(f"{path}: the ViT's weights are incomplete (missing {', '.join(missing[:3])})")
    return backbone


def heldout_pixels(items: list[HeldoutImage], processor) -> torch.Tensor:
    """The held-out images as the metric sees them: through the model's own image processor."""
    chunks = []
    for start in range(0, len(items), 64):
        images = []
        for item in items[start:start + 64]:
            with Image.open(item.path) as image:
                images.append(image.convert("RGB"))
        chunks.append(processor(images=images, return_tensors="pt").pixel_values)
    return torch.cat(chunks) if chunks else torch.empty(0)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.pretrain_dino
    zoo = zoo_model(params, "dino")
    target = dino_dir(params)
    outputs = (target, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    if not zoo["tiny"]:
        record_real_model(STAGE, params, outputs, Path(zoo["path"]))
        return
    scenes = scene_paths(params) if cfg.background_swap > 0 else []
    L.seed_everything(params.seed, workers=True, verbose=False)
    path = Path(zoo["path"])
    backbone, processor = load_backbone(path), AutoImageProcessor.from_pretrained(path)
    size, patch = backbone.config.image_size, backbone.config.patch_size
    source = SOURCE_SCALE * size
    pictures, files = subject_pictures(params, source)
    backgrounds = torch.stack([load_square(p, source) for p in scenes]) if scenes else None
    crops = MultiCrop(MultiCropSettings(
        global_size=size, local_size=local_size_for(size, patch), local_crops=cfg.local_crops,
        global_crop_scale=tuple(cfg.global_crop_scale), local_crop_scale=tuple(cfg.local_crop_scale),
        color_jitter=cfg.color_jitter, background_swap=cfg.background_swap,
        mean=tuple(processor.image_mean), std=tuple(processor.image_std)), backgrounds)
    loader = seeded_loader(pictures, cfg.batch_size, params)
    # Checkpoints resume only on the very same pictures, scenes and starting model.
    key = {"subjects": content_digest(files, Path(params.augment.subjects_dir)),
           "scenes": content_digest(scenes, Path(params.augment.scenes_dir)),
           "model": content_digest(sorted(p for p in path.rglob("*") if p.is_file()), path)}
    module = DinoPretrainer(backbone, crops, settings_from(DinoSettings, cfg))
    if not is_rank_zero():
        fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.steps, run=None, checkpoint_key=key)
        return
    heldout = heldout_images(params)
    pixels, subjects = heldout_pixels(heldout, processor), [item.subject for item in heldout]
    with stage_run(STAGE, params) as run, atomic_outputs(*outputs) as (tmp, tmp_metrics, tmp_plots):
        before = subject_retrieval(cls_embeddings(backbone, pixels), subjects) if heldout else None
        started = time.perf_counter()
        fitted = fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.steps, run=run,
                     checkpoint_key=key)
        seconds = time.perf_counter() - started
        trainer, history, checkpoints = fitted.trainer, fitted.history, fitted.checkpoints
        # The teacher is what DINO keeps: the running average of the students, steadier than
        # the last of them. Only its backbone: the metric reads [CLS], not the head.
        teacher = module.teacher.backbone
        after = subject_retrieval(cls_embeddings(teacher, pixels), subjects) if heldout else None
        teacher.save_pretrained(tmp / "model")
        processor.save_pretrained(tmp / "model")
        write_record(tmp, target / "model", pretrained=True)
        write_curves(history, tmp_plots)
        present = {row["split"] for row in manifest_rows(params)}
        retrieval = {"splits": [s for s in HELDOUT_SPLITS if s in present],
                     "images": len(heldout), "subjects": len(set(subjects)),
                     **{name: {"before": before and before[name], "after": after and after[name]}
                        for name in ("top1", "cosine_gap", "same_subject_cosine", "different_subject_cosine")}}
        metrics = {"steps": trainer.global_step, "training_images": len(pictures), "scenes": len(scenes),
                   "views_per_image": 2 + cfg.local_crops, "image_size": size,
                   "heldout_subject_retrieval": retrieval}
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        mlflow.log_metrics({f"heldout_subject_retrieval.{name}.{when}": value[when]
                            for name, value in retrieval.items() if isinstance(value, dict)
                            for when in ("before", "after") if value[when] is not None})
        if fitted.resumed_from is None:   # a resumed run's time covers only part of the steps
            mlflow.log_metrics({"train_seconds": seconds, "steps_per_second": trainer.global_step / seconds})
    shutil.rmtree(checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
