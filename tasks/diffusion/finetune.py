"""Stage `finetune`: multi-subject joint DreamBooth (MSP 2(i)) and the baselines of the MSP
and VideoDreamer tables, one mode per run (params.finetune.mode):

    full | lora | textual_inversion | custom_diffusion

Every subject of the augment stage gets its own new identifier token, initialised from a
rare token; instance prompts are "a <id> <class>"; with prior preservation each batch also
holds class images of the class_images stage. Trains with the shared Trainer factory (DDP,
mixed precision, gradient accumulation by params), resumes a killed run, draws validation
images every N steps into MLflow, and writes weights stock diffusers loads
(lightning_modules/diffusion/export.py).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import mlflow
import torch
from PIL import Image

from lightning_modules.diffusion.data import CaptionedImage, DreamBoothPairs, load_pixels
from lightning_modules.diffusion.export import export_finetuned
from lightning_modules.diffusion.finetune import FinetuneSettings, SubjectFinetuner
from lightning_modules.diffusion.identifiers import IdentifierError, add_identifier_tokens, check_class_nouns
from lightning_modules.diffusion.pipeline import load_text_to_image, resolution_of
from lightning_modules.diffusion.specificity import LanguageDrift
from lightning_modules.diffusion.tokenizer import load_rare_tokens
from lightning_modules.diffusion.validation import ValidationImages
from tasks.core.params import Params
from tasks.core.schema.diffusion import FinetuneConfig
from tasks.core.curves import write_curves
from tasks.core.trainer import fit
from lightning_modules.core.visual import enlarge
from tasks.core.manifest import manifest_path, manifest_rows
from tasks.diffusion.setup import seeded_loader, settings_from
from tasks.core.subjects import read_subjects
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import is_rank_zero, stage_params
from lightning_modules.data.subjects import SubjectRecord
from tasks.core.tracking import log_image, stage_run
from tasks.core.models import base_model_path

STAGE = "finetune"


def read_class_images(params: Params, nouns: set[str]) -> dict[str, list[CaptionedImage]]:
    root = params.paths.data / "class_images"
    prompts = root / "prompts.csv"
    if not prompts.is_file():
        raise InputDataError(f"{prompts}: missing; run the class_images stage (or set finetune.prior_preservation: false)")
    images: dict[str, list[CaptionedImage]] = {}
    with prompts.open(newline="") as f:
        for row in csv.DictReader(f):
            images.setdefault(row["class_noun"], []).append(CaptionedImage(root / row["image"], row["prompt"]))
    for noun in sorted(nouns):
        if noun not in images:
            raise InputDataError(f"{prompts}: no class images of class {noun!r}; rerun class_images")
    return images


def language_drift(params: Params, components: dict, subjects: list[SubjectRecord], resolution: int
                   ) -> LanguageDrift:
    """Probe every identifier prompt against the class prompts and a few scene-only prompts, on
    the first image of (up to 8 of) the subjects."""
    scenes = sorted({row.get("scene_caption") for row in manifest_rows(params) if row.get("scene_caption")})
    others = sorted({f"a {s.class_noun}" for s in subjects}) + scenes[:4]
    pixels = torch.stack([load_pixels(s.images[0].image, resolution) for s in subjects[:8]])
    return LanguageDrift(components, [s.prompt for s in subjects], others, pixels, params.seed)


@dataclass
class Prepared:
    """Everything a fine-tuning run needs, built from params: shared by this stage and the
    rows of the personalization table (tasks/diffusion/personalization.py)."""

    subjects: list[SubjectRecord]
    base: Path
    components: dict
    tokens: list
    module: SubjectFinetuner
    loader: object
    key: dict
    resolution: int


def prepare(params: Params, cfg: FinetuneConfig) -> Prepared:
    subjects = read_subjects(params)
    base = base_model_path(params)
    class_images = read_class_images(params, {s.class_noun for s in subjects}) if cfg.prior_preservation else {}

    L.seed_everything(params.seed, workers=True, verbose=False)
    components = load_text_to_image(base)
    tokenizer = components["tokenizer"]
    rare = cfg.rare_tokens or load_rare_tokens(base / "tokenizer")
    if not rare:
        raise InputDataError(f"finetune.rare_tokens: {base / 'tokenizer'} lists no rare tokens; name some rarely "
                             "used single tokens of its vocabulary to initialise the identifiers from")
    try:
        check_class_nouns(tokenizer, sorted({s.class_noun for s in subjects}))
        tokens = add_identifier_tokens(tokenizer, components["text_encoder"], [s.identifier for s in subjects], rare)
    except IdentifierError as err:
        raise InputDataError(f"finetune: {err}") from None

    module = SubjectFinetuner(components["unet"], components["vae"], components["text_encoder"],
                              components["scheduler"], settings_from(FinetuneSettings, cfg),
                              identifier_ids=[t.token_id for t in tokens])
    resolution = resolution_of(components)
    instances = [CaptionedImage(image.image, s.prompt, image.mask) for s in subjects for image in s.images]
    classes = [s.class_noun for s in subjects for _ in s.images]
    dataset = DreamBoothPairs(instances, classes, class_images, tokenizer, resolution,
                              masks=cfg.subject_loss_weight > 0)
    loader = seeded_loader(dataset, cfg.batch_size, params)
    key = {"manifest": hashlib.sha256(manifest_path(params).read_bytes()).hexdigest(), "base": str(base)}
    return Prepared(subjects, base, components, tokens, module, loader, key, resolution)


def export(prepared: Prepared, mode: str, directory: Path) -> dict:
    """The trained weights in stock diffusers formats, with the run's manifest."""
    subjects = prepared.subjects
    return export_finetuned(prepared.components, mode, prepared.tokens, directory, {
        "base_model": str(prepared.base), "prompts": {s.name: s.prompt for s in subjects},
        "subjects": {s.name: {"identifier": s.identifier, "class_noun": s.class_noun} for s in subjects}})


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.finetune
    prepared = prepare(params, cfg)
    subjects, components, module = prepared.subjects, prepared.components, prepared.module
    tokenizer, loader, key = components["tokenizer"], prepared.loader, prepared.key
    prompts = [s.prompt for s in subjects[:8]] + [f"a {subjects[0].class_noun}"]

    if not is_rank_zero():  # a DDP worker: train, leave outputs and tracking to rank zero
        fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.max_steps, run=None, checkpoint_key=key,
            accumulate_grad_batches=cfg.accumulate_grad_batches)
        return

    drift = language_drift(params, components, subjects, prepared.resolution)
    grids: dict[int, object] = {}

    def keep_grid(step: int, grid) -> None:
        grids[step] = grid
        log_image(enlarge(grid), f"finetune/validation/step_{step:06d}.png")

    validation = ValidationImages(prompts, cfg.validation_every_n_steps, tokenizer=tokenizer, seed=params.seed,
                                  steps=cfg.validation_inference_steps, guidance_scale=cfg.guidance_scale,
                                  sink=keep_grid)
    target = params.paths.data / "models" / "finetuned"
    outputs = (target, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params) as run, atomic_outputs(*outputs) as (tmp, tmp_metrics, tmp_plots):
        fitted = fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.max_steps, run=run,
                     checkpoint_key=key, callbacks=[validation], accumulate_grad_batches=cfg.accumulate_grad_batches)
        trainer, history, checkpoints = fitted.trainer, fitted.history, fitted.checkpoints
        if trainer.global_step not in grids:
            keep_grid(trainer.global_step, validation.draw(module))
        export(prepared, cfg.mode, tmp)
        tmp_plots.mkdir()
        write_curves(history, tmp_plots)
        Image.fromarray(enlarge(grids[trainer.global_step])).save(tmp_plots / "validation.png")
        trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
        metrics = {"mode": cfg.mode, "steps": trainer.global_step, "trained_parameters": trained,
                   "final_loss": history.train[-1]["loss"] if history.train else None,
                   "subjects": len(subjects), "instance_images": sum(len(s.images) for s in subjects),
                   "language_drift": drift.measure()}
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        mlflow.log_metric("trained_parameters", trained)
        mlflow.log_metrics({f"language_drift/{k}": v for k, v in metrics["language_drift"].items()
                            if isinstance(v, float)})
        mlflow.log_artifacts(str(tmp), artifact_path="finetuned")
    shutil.rmtree(checkpoints, ignore_errors=True)

if __name__ == "__main__":
    run_stage_main(main)
