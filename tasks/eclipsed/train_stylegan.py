"""Stage `train_stylegan`: the StyleGAN2 generator eCLIPsed edits.

Trains a StyleGAN2 (lightning_modules/eclipsed) on the train split of data/faces, or, with
`train_stylegan.checkpoint` set, imports a rosinality checkpoint instead (read with
weights_only=True, converted to safetensors; docs/ECLIPSED.md "Generator checkpoints").
Writes the generator (`StyleGenerator.from_pretrained`: model.safetensors in rosinality's key
layout + config.json), its FID against the held-out (val + test) real faces in the feature
space of SynthWorld's face judge (train_face_attributes), with the FID of the real train faces
as the floor a perfect generator would reach, the FID curve over training, and sample grids of
fixed latents at every point of the curve.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Optional

import lightning as L
import mlflow
import numpy as np
import torch
from PIL import Image

from lightning_modules.core.metrics.fid import FrechetDistance
from lightning_modules.core.resumable import shuffled_loader
from lightning_modules.core.visual import image_grid
from lightning_modules.data.faces import FaceImages, FacesFolder, load_faces, read_faces_folder, signed
from lightning_modules.eclipsed.discriminator import Discriminator
from lightning_modules.eclipsed.gan import GanConfig, StyleGAN2, sample_images
from lightning_modules.eclipsed.rosinality import generator_from_rosinality
from lightning_modules.eclipsed.stylegan import StyleGenerator
from lightning_modules.judges.faces import FaceAttributeClassifier
from tasks.core.curves import write_curves
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.params import Params
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import log_image, log_metrics_tree, stage_run
from tasks.core.trainer import fit

STAGE = "train_stylegan"
HELD_OUT = ("val", "test")
FID_SEED = 0          # the latents of every FID point (the curve's points differ by the weights alone)
GRID_SEED = 1         # the latents of every sample grid
GRID_COLUMNS = 8
TRUNCATION = 0.7      # the final grid's second picture: truncated towards the mean w
FEATURE_BATCH = 128


def as_unit(images: torch.Tensor) -> torch.Tensor:
    return ((images + 1) / 2).clamp(0, 1)


def load_judge(params: Params) -> FaceAttributeClassifier:
    directory = params.paths.data / "models" / "face_attributes"
    if not (directory / "config.json").is_file():
        raise InputDataError(f"{directory}: no face judge, whose features FID compares; run the "
                             "train_face_attributes stage first (dvc repro train_face_attributes)")
    return FaceAttributeClassifier.from_pretrained(directory)


def fid_metric(judge: FaceAttributeClassifier, held_out: torch.Tensor) -> FrechetDistance:
    """FID against the held-out real faces, whose statistics are kept across resets."""
    metric = FrechetDistance(judge.embedding_dim, feature_fn=lambda x: judge.features(as_unit(x)),
                             reset_real_features=False)
    for start in range(0, len(held_out), FEATURE_BATCH):
        metric.update(signed(held_out[start:start + FEATURE_BATCH]), real=True)
    return metric


def fid_of(metric: FrechetDistance, images: torch.Tensor) -> float:
    metric.reset()
    for start in range(0, len(images), FEATURE_BATCH):
        metric.update(images[start:start + FEATURE_BATCH], real=False)
    return float(f"{float(metric.compute()):.6g}")   # 6 significant digits: a feature space sets the scale


def grid_picture(images: torch.Tensor) -> np.ndarray:
    tiles = [(as_unit(image).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8) for image in images]
    return image_grid(tiles, columns=min(GRID_COLUMNS, len(tiles)))


class TrainingSnapshots(L.Callback):
    """Every `every` iterations (and before the first and after the last): FID of g_ema against
    the held-out faces and a grid of fixed latents. Both are in the checkpoint, so a resumed
    run's curve and grids are the uninterrupted run's."""

    def __init__(self, metric: FrechetDistance, every: int, last: int, samples: int, grid_images: int,
                 seed: int):
        self.metric, self.every, self.last = metric, every, last
        self.samples, self.grid_images, self.seed = samples, grid_images, seed
        self.rows: list[dict[str, float]] = []
        self.grids: dict[int, torch.Tensor] = {}
        self.started = time.monotonic()

    def snapshot(self, trainer: L.Trainer, module: StyleGAN2) -> None:
        iteration = int(module.iterations)
        if any(row["iteration"] == iteration for row in self.rows):
            return
        fid = fid_of(self.metric, sample_images(module.g_ema, self.samples, self.seed + FID_SEED))
        grid = grid_picture(sample_images(module.g_ema, self.grid_images, self.seed + GRID_SEED))
        self.rows.append({"iteration": iteration, "images": int(module.images_seen), "fid": fid,
                          "seconds": round(time.monotonic() - self.started, 1)})
        self.grids[iteration] = torch.from_numpy(grid)
        if trainer.is_global_zero and mlflow.active_run() is not None:
            mlflow.log_metric("fid", fid, step=iteration)
            log_image(grid, f"samples/iteration_{iteration:06d}.png")

    def on_train_start(self, trainer: L.Trainer, module: StyleGAN2) -> None:
        self.snapshot(trainer, module)

    def on_train_batch_end(self, trainer: L.Trainer, module: StyleGAN2, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        iteration = int(module.iterations)
        if iteration % self.every == 0 or iteration == self.last:
            self.snapshot(trainer, module)

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "grids": self.grids}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows, self.grids = list(state["rows"]), dict(state["grids"])


def write_fid_curve(rows: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["iteration", "images", "fid", "seconds"])
        writer.writeheader()
        writer.writerows(rows)


def train(params: Params, faces: FacesFolder, metric: Optional[FrechetDistance], run) -> tuple[StyleGAN2, Any, Any]:
    cfg = params.train_stylegan
    size = cfg.image_size
    L.seed_everything(params.seed, workers=True, verbose=False)
    generator = StyleGenerator(cfg.channel_table, style_dim=cfg.style_dim, n_mlp=cfg.n_mlp)
    module = StyleGAN2(generator, Discriminator(cfg.channel_table), GanConfig(
        lr=cfg.lr, r1_gamma=cfg.r1_gamma, r1_every=cfg.r1_every, path_length_weight=cfg.path_length_weight,
        path_length_every=cfg.path_length_every, mixing=cfg.mixing, ema_half_life_images=cfg.ema_half_life_images,
        ema_rampup=cfg.ema_rampup, xflip=cfg.xflip, augment=tuple(cfg.augment),
        noise_inputs=cfg.noise_inputs))
    train_faces = FaceImages(load_faces(faces.split("train"), size))
    loader = shuffled_loader(train_faces, min(cfg.batch_size, len(train_faces)), seed=params.seed, drop_last=True,
                             num_workers=params.trainer.num_workers)
    snapshots = None if metric is None else TrainingSnapshots(metric, cfg.fid_every, cfg.steps, cfg.fid_samples,
                                                               cfg.grid_images, params.seed)
    # Each iteration takes two optimizer steps (D, then G): Lightning counts both.
    fitted = fit(params, STAGE, module, train_dataloaders=loader, max_steps=2 * cfg.steps, run=run,
                 checkpoint_key={"faces": faces.digest}, callbacks=[snapshots] if snapshots else ())
    return module, fitted, snapshots


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.train_stylegan
    imported = None
    if cfg.checkpoint is not None:   # checked before anything is written: a bad file stops here
        imported = generator_from_rosinality(cfg.checkpoint)
    faces = read_faces_folder(params.paths.data / "faces")
    held_out_records = [r for r in faces.records if r.split in HELD_OUT]
    if not faces.split("train") or len(held_out_records) < 2:
        raise InputDataError(f"{faces.root}/faces.csv: the train split and the held-out (val + test) faces are "
                             "both needed (synthesize_faces.val_per_identity / test_per_identity)")

    if not is_rank_zero():   # a DDP worker: train; outputs, FID and tracking are rank zero's
        train(params, faces, None, None)
        return

    judge = load_judge(params)
    model_dir = params.paths.data / "models" / "stylegan"
    targets = (model_dir, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params) as run, atomic_outputs(*targets) as (tmp_model, tmp_metrics, tmp_plots):
        size = cfg.image_size if imported is None else imported[0].size
        held_out = load_faces(held_out_records, size)
        metric = fid_metric(judge, held_out)
        tmp_plots.mkdir(parents=True, exist_ok=True)
        fitted = None
        if imported is None:
            module, fitted, snapshots = train(params, faces, metric, run)
            generator = module.g_ema.cpu()
            generator.update_latent_avg(generator=torch.Generator().manual_seed(params.seed))
            write_curves(fitted.history, tmp_plots)
            write_fid_curve(snapshots.rows, tmp_plots / "fid.csv")
            for iteration, grid in snapshots.grids.items():
                Image.fromarray(grid.numpy()).save(tmp_plots / f"samples_{iteration:06d}.png")
            record: dict[str, Any] = {"trained": True, "iterations": int(module.iterations),
                                      "images_seen": int(module.images_seen), "fid_curve": snapshots.rows}
        else:
            generator, had_latent_avg = imported
            digest = hashlib.sha256(cfg.checkpoint.read_bytes()).hexdigest()
            record = {"trained": False, "imported": str(cfg.checkpoint), "sha256": digest,
                      "latent_avg": "checkpoint" if had_latent_avg else "mean of 4096 mapped z"}
            mlflow.set_tags({"subjectlab.imported": str(cfg.checkpoint), "subjectlab.imported_sha256": digest})
        generator.eval()
        if fitted is not None:   # the curve's last point is the final generator, on the same latents
            fid = snapshots.rows[-1]["fid"]
        else:
            fid = fid_of(metric, sample_images(generator, cfg.fid_samples, params.seed + FID_SEED))
        train_pixels = load_faces(faces.split("train"), size)
        floor = fid_of(metric, signed(train_pixels))
        metrics = {"fid": fid, "fid_real_train": floor, "fid_samples": cfg.fid_samples,
                   "train_faces": len(train_pixels), "held_out_faces": len(held_out), "image_size": generator.size,
                   "num_ws": generator.num_ws, "w_dim": generator.w_dim, **record}
        generator.save_pretrained(tmp_model)
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        for name, truncation in (("samples.png", 1.0), ("samples_truncated.png", TRUNCATION)):
            grid = grid_picture(sample_images(generator, cfg.grid_images, params.seed + GRID_SEED,
                                              truncation=truncation))
            Image.fromarray(grid).save(tmp_plots / name)
            log_image(grid, f"stylegan/{name}")
        log_metrics_tree({"fid": fid, "fid_real_train": floor})
        mlflow.log_artifacts(str(tmp_model), artifact_path="stylegan")
        mlflow.log_artifacts(str(tmp_plots), artifact_path="stylegan/plots")
    if fitted is not None:   # published: the resumable state has served its purpose
        shutil.rmtree(fitted.checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
