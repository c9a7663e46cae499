"""Stage `pretrain_base`: teach the tiny text-to-image model SynthWorld's classes and scenes.

DreamBooth's prior preservation needs a base model for which "a cartoon on a beach" gives
a cartoon on a beach. A real Stable Diffusion has that prior; the tiny model learns it here
from the augment stage's training images captioned by class and scene (never by subject
identifier): first the VAE, then UNet + text encoder. When params.zoo.text_to_image names a
real model the stage records that model and trains nothing.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import torch
import yaml
from PIL import Image

from lightning_modules.diffusion.data import CaptionedImage, CaptionedImages, EncodedImages, load_pixels
from lightning_modules.diffusion.pipeline import generate, load_text_to_image, make_pipeline, resolution_of, save_pipeline
from lightning_modules.diffusion.pretrain import TextToImagePretrainer, VaePretrainer, latent_scaling_factor
from lightning_modules.diffusion.tokenizer import load_rare_tokens, save_rare_tokens
from lightning_modules.synthworld.scenes import SCENE_KINDS, Scene
from lightning_modules.core.visual import image_grid
from tasks.core.curves import write_curves
from tasks.core.trainer import fit
from lightning_modules.core.visual import enlarge
from tasks.core.manifest import manifest_rows
from tasks.diffusion.setup import class_captions, pretraining_key, seeded_loader
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.params import Params
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import log_image, stage_run
from tasks.core.models import base_dir, write_record, zoo_model

STAGE = "pretrain_base"


def sample_prompts(class_nouns: list[str]) -> list[str]:
    """One row per class, one column per scene kind (up to 4): the prior at a glance."""
    scenes = [Scene(i, kind).caption for i, kind in enumerate(SCENE_KINDS[:4])]
    return [f"a {noun} {scene}" for noun in class_nouns for scene in scenes]


@torch.no_grad()
def scene_captions(params: Params) -> list[CaptionedImage]:
    """The scenes alone, captioned by their place ("on a beach"), from the scenes folder's
    scenes.yaml; a folder without one gives none."""
    folder = Path(params.augment.scenes_dir)
    meta = folder / "scenes.yaml"
    if not meta.is_file():
        return []
    entries = (yaml.safe_load(meta.read_text()) or {}).get("scenes", [])
    return [CaptionedImage(folder / e["file"], e["caption"]) for e in entries
            if e.get("caption") and (folder / e["file"]).is_file()]


def mixed_captions(params: Params) -> list[CaptionedImage]:
    """Disen-Mix's several-subject images captioned by their classes ("a dog, a robot"): the
    base model meets several subjects in one picture before MSP asks it for them."""
    root = params.paths.data / "augmented"
    manifest = root / "mixed" / "manifest.csv"
    if not manifest.is_file():
        return []
    nouns = {row["subject"]: row["class_noun"] for row in manifest_rows(params)}
    with manifest.open(newline="") as f:
        return [CaptionedImage(root / row["image"], ", ".join(f"a {nouns[s]}" for s in row["subjects"].split(";")),
                               root / row["mask"] if row.get("mask") else None)
                for row in csv.DictReader(f) if all(s in nouns for s in row["subjects"].split(";"))]


def pretraining_captions(params: Params) -> list[CaptionedImage]:
    """What the base model learns from, covering the prompts the pipeline later asks for:
    "a <class> <scene>" for the augment stage's training images, "a <class>" for a share of
    them (pretrain_base.class_only_share, evenly spread), the scenes alone, and several
    subjects together."""
    cfg = params.pretrain_base
    items = class_captions(params)
    if cfg.class_only_share > 0:
        every = max(1, round(1 / cfg.class_only_share))
        items = [CaptionedImage(item.path, " ".join(item.caption.split()[:2]), item.mask) if k % every == every - 1
                 else item
                 for k, item in enumerate(items)]
    if cfg.scene_images:
        items += scene_captions(params)
    if cfg.mixed_images:
        items += mixed_captions(params)
    return items


def reconstructions(vae, paths: list[Path], resolution: int) -> np.ndarray:
    pixels = torch.stack([load_pixels(p, resolution) for p in paths])
    decoded = vae.decode(vae.encode(pixels).latent_dist.mode()).sample
    to_uint8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()  # noqa: E731
    return image_grid(list(to_uint8(pixels)) + list(to_uint8(decoded)), columns=len(paths))


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.pretrain_base
    zoo = zoo_model(params, "text_to_image")
    target = base_dir(params)
    if not zoo["tiny"]:
        if is_rank_zero():
            with stage_run(STAGE, params), atomic_outputs(target, params.paths.metrics / f"{STAGE}.json",
                                                          params.paths.plots / STAGE) as (tmp, tmp_metrics, tmp_plots):
                write_record(tmp, Path(zoo["path"]), pretrained=False)
                tmp_metrics.write_text(json.dumps({"skipped": True}) + "\n")
                tmp_plots.mkdir()
                mlflow.set_tag("subjectlab.skipped", "real base model")
        return

    items = pretraining_captions(params)
    if not items:
        raise InputDataError("data/augmented/manifest.csv: no training images to pretrain on")
    L.seed_everything(params.seed, workers=True, verbose=False)
    components = load_text_to_image(Path(zoo["path"]))
    tokenizer = components["tokenizer"]
    resolution = resolution_of(components)
    dataset = CaptionedImages(items, tokenizer, resolution, caption_dropout=cfg.caption_dropout, seed=params.seed,
                              masks=cfg.subject_loss_weight > 0 or cfg.vae_subject_loss_weight > 0)
    loader = seeded_loader(dataset, cfg.vae_batch_size, params)
    key = pretraining_key(params, items, Path(zoo["path"]))

    def pretrain(run):
        # 1. the autoencoder, so that latents are pictures compressed, not noise
        vae_fit = fit(params, STAGE, VaePretrainer(components["vae"], cfg.vae_lr, cfg.kl_weight,
                                                                cfg.vae_subject_loss_weight),
                      train_dataloaders=loader, max_steps=cfg.vae_steps, run=run,
                      checkpoint_key={**key, "phase": "vae"})
        components["vae"].eval()
        probe = torch.stack([dataset[i]["pixel_values"] for i in range(min(len(dataset), 64))])
        components["vae"].register_to_config(scaling_factor=latent_scaling_factor(components["vae"], probe))
        # 2. the denoiser and the text encoder on captions, the VAE frozen (its latents encoded once)
        module = TextToImagePretrainer(components["unet"], components["vae"], components["text_encoder"],
                                       components["scheduler"], cfg.lr, cfg.weight_decay, cfg.subject_loss_weight)
        encoded = seeded_loader(EncodedImages(dataset, components["vae"]), cfg.batch_size, params)
        return vae_fit, fit(params, STAGE, module, train_dataloaders=encoded, max_steps=cfg.steps, run=run,
                            checkpoint_key={**key, "phase": "unet"})

    if not is_rank_zero():  # a DDP worker: train, leave outputs and tracking to rank zero
        pretrain(None)
        return
    with stage_run(STAGE, params) as run, atomic_outputs(target, params.paths.metrics / f"{STAGE}.json",
                                                         params.paths.plots / STAGE) as (tmp, tmp_metrics, tmp_plots):
        vae_fit, unet_fit = pretrain(run)
        vae_trainer, vae_history, trainer, history = vae_fit.trainer, vae_fit.history, unet_fit.trainer, unet_fit.history
        save_pipeline(components, tmp / "pipeline")
        rare = load_rare_tokens(Path(zoo["path"]) / "tokenizer")
        if rare is not None:
            save_rare_tokens(tmp / "pipeline" / "tokenizer", rare)
        write_record(tmp, target / "pipeline", pretrained=True)

        nouns = sorted({row["class_noun"] for row in manifest_rows(params)})
        samples = generate(make_pipeline(components), sample_prompts(nouns), seed=params.seed,
                           steps=cfg.sample_steps, guidance_scale=cfg.guidance_scale, desc="samples")
        grid = enlarge(image_grid(list(samples), columns=4))
        recon = enlarge(reconstructions(components["vae"], [i.path for i in items[:8]], resolution))
        tmp_plots.mkdir()
        Image.fromarray(grid).save(tmp_plots / "samples.png")
        Image.fromarray(recon).save(tmp_plots / "vae_reconstructions.png")
        write_curves(history, tmp_plots)
        write_curves(vae_history, tmp_plots / "vae")
        log_image(grid, "pretrain_base/samples.png")
        log_image(recon, "pretrain_base/vae_reconstructions.png")
        metrics = {"vae": {"steps": vae_trainer.global_step, "final_loss": vae_history.train[-1]["loss"] if vae_history.train else None},
                   "denoiser": {"steps": trainer.global_step, "final_loss": history.train[-1]["loss"] if history.train else None},
                   "latent_scaling_factor": components["vae"].config.scaling_factor,
                   "training_images": len(items)}
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        mlflow.log_metric("latent_scaling_factor", metrics["latent_scaling_factor"])
    for directory in (vae_fit.checkpoints, unet_fit.checkpoints):
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
