"""Stage `train_classifier`: SynthWorld's prompt-accuracy judge, a classifier of class noun and scene.

Reads the augment manifest and trains on the real renders of its train split only (a judge
that saw generated images would grade the generator on its own taste). Writes the model
(safetensors + config, `ClassSceneClassifier.from_pretrained`), its held-out accuracy, curves
and a picture of test renders with what the judge says about them.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import DataLoader

from lightning_modules.core.visual import image_grid
from lightning_modules.judges import (
    NO_SCENE,
    ClassSceneClassifier,
    ClassSceneJudge,
    JudgedImage,
    JudgedImageDataModule,
    JudgedImageDataset,
    evaluate_judge,
)
from lightning_modules.judges.data import read_pixels
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import held_out_split, is_rank_zero, stage_params
from tasks.core.tracking import stage_run
from tasks.core.trainer import Fitted, fit
from tasks.judges.publishing import publish_judge

STAGE = "train_classifier"
SPLITS = ("train", "val", "test")
GRID_IMAGES = 16
TILE = 96   # pixels of a tile in the picture: room for a label such as "in the mountains"


def read_labelled_splits(augmented: Path) -> tuple[list[str], list[str], dict[str, list[JudgedImage]], str]:
    """(class nouns, scene captions, items per split, manifest digest) from the augment stage's
    manifest. The labels are the sorted distinct values of all splits, so that they do not depend
    on the order of the rows; a render whose scene has no caption keeps its class only."""
    manifest = augmented / "manifest.csv"
    if not manifest.is_file():
        raise InputDataError(f"{manifest}: missing; run the augment stage first (dvc repro augment)")
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "class_noun", "scene_caption", "split"} - set(reader.fieldnames or [])
        if missing:
            raise InputDataError(f"{manifest}: no column {', '.join(sorted(missing))}; run the augment stage again")
        rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if row["split"] not in SPLITS or not row["class_noun"]:
            raise InputDataError(f"{manifest}:{line}: unknown split {row['split']!r} or empty class_noun")
    classes = sorted({row["class_noun"] for row in rows})
    scenes = sorted({row["scene_caption"] for row in rows} - {""})
    if not scenes:
        raise InputDataError(f"{manifest}: no row has a scene_caption; the judge learns scenes from the captions "
                             "of augment.scenes_dir (SynthWorld's scenes have them)")
    splits: dict[str, list[JudgedImage]] = {split: [] for split in SPLITS}
    for row in rows:
        scene = scenes.index(row["scene_caption"]) if row["scene_caption"] else NO_SCENE
        splits[row["split"]].append(JudgedImage(augmented / row["image"], classes.index(row["class_noun"]), scene))
    for split in ("train", "val"):
        if not splits[split]:
            raise InputDataError(f"{manifest}: the {split} split is empty (see augment.val_count / test_count)")
    return classes, scenes, splits, hashlib.sha256(manifest.read_bytes()).hexdigest()


def labelled_grid(net: ClassSceneClassifier, items: list[JudgedImage], count: int = GRID_IMAGES) -> np.ndarray:
    """Renders with the judge's class and scene under each: green where right, red where wrong."""
    picks = [items[int(i)] for i in np.linspace(0, len(items) - 1, min(count, len(items)))]
    pixels = [read_pixels(item.image) for item in picks]
    was_training = net.training
    net.eval()
    with torch.no_grad():   # one at a time: a user's renders need not share a size
        verdicts = [net.classify(p[None]) for p in pixels]
    net.train(was_training)
    class_logits, scene_logits = (torch.cat(part) for part in zip(*verdicts))
    font = ImageFont.load_default()
    tiles = []
    for item, image, c, s in zip(picks, pixels, class_logits.argmax(1).tolist(), scene_logits.argmax(1).tolist()):
        picture = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((TILE, TILE))
        tile = Image.new("RGB", (TILE, TILE + 26), (255, 255, 255))
        tile.paste(picture)
        draw = ImageDraw.Draw(tile)
        right, wrong = (0, 140, 0), (200, 0, 0)
        draw.text((2, TILE + 1), net.class_names[c], fill=right if c == item.class_index else wrong, font=font)
        draw.text((2, TILE + 13), net.scene_names[s], fill=right if item.scene_index in (NO_SCENE, s) else wrong,
                  font=font)
        tiles.append(np.asarray(tile))
    return image_grid(tiles, columns=8)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.train_classifier
    classes, scenes, splits, manifest_digest = read_labelled_splits(params.paths.data / "augmented")

    L.seed_everything(params.seed, workers=True, verbose=False)
    net = ClassSceneClassifier(classes, scenes, image_size=cfg.image_size, width=cfg.width)
    module = ClassSceneJudge(net, lr=cfg.lr, weight_decay=cfg.weight_decay, max_epochs=cfg.max_epochs)
    data = JudgedImageDataModule(splits, cfg.image_size, cfg.batch_size, params.trainer.num_workers, params.seed)

    def train(run) -> Fitted:
        return fit(params, STAGE, module, datamodule=data, run=run, checkpoint_key={"manifest": manifest_digest},
                   max_epochs=cfg.max_epochs, limit_train_batches=cfg.limit_train_batches,
                   limit_val_batches=cfg.limit_val_batches,
                   val_keys=("val/loss", "val/class_accuracy", "val/scene_accuracy", "val/both_accuracy"))

    if not is_rank_zero():  # a DDP worker: train, leave outputs and tracking to rank zero
        train(None)
        return

    model_dir = params.paths.data / "models" / "classifier"
    targets = (model_dir, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params) as run, atomic_outputs(*targets) as (tmp_model, tmp_metrics, tmp_plots):
        fitted = train(run)
        mlflow.set_tag("subjectlab.resumed_from", str(fitted.resumed_from or ""))
        split = held_out_split(STAGE, splits, "the accuracy")
        held_out = data.dataset(split) if split == "val" else JudgedImageDataset(splits[split], cfg.image_size)
        metrics = {
            split: evaluate_judge(net, DataLoader(held_out, batch_size=cfg.batch_size)),
            "evaluated_on": split,
            "classes": classes,
            "scenes": scenes,
            "train_images": len(splits["train"]),
            "global_step": fitted.trainer.global_step,
            "epochs": fitted.trainer.current_epoch,
        }
        publish_judge(net, metrics, split, lambda: labelled_grid(net, splits[split]), fitted.history,
                      tmp_model, tmp_metrics, tmp_plots, "classifier")
    # Published: the resumable state has served its purpose (a forced rerun trains afresh).
    shutil.rmtree(fitted.checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
