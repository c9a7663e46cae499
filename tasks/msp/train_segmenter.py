"""Stage `train_segmenter`: the subject-aware segmentation U-Net of MSP A.4 / A.5.

Reads the augment manifest, trains with the shared Trainer factory (DDP by params), resumes
from its last checkpoint when a killed run is started again, and writes the model
(safetensors + config, `ResNet34UNet.from_pretrained`), test IoU metrics and curves.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from pathlib import Path

import lightning as L
import mlflow
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lightning_modules.segmentation import (
    ResNet34UNet,
    SegmentationItem,
    SubjectSegmentationDataModule,
    SubjectSegmentationDataset,
    SubjectSegmenter,
    balanced_class_weights,
    evaluate_iou,
)
from lightning_modules.core.visual import image_grid, overlay_labels
from tasks.core.curves import write_curves
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import held_out_split, is_rank_zero, stage_params
from tasks.core.tracking import log_image, log_metrics_tree, stage_run
from tasks.core.trainer import Fitted, fit

STAGE = "train_segmenter"


def read_splits(augmented: Path) -> tuple[list[str], dict[str, list[SegmentationItem]], str]:
    """(class names, items per split, manifest digest) from the augment stage's outputs."""
    manifest, classes_file = augmented / "manifest.csv", augmented / "classes.json"
    for path in (manifest, classes_file):
        if not path.is_file():
            raise InputDataError(f"{path}: missing; run the augment stage first (dvc repro augment)")
    classes = json.loads(classes_file.read_text())
    index = {name: i for i, name in enumerate(classes)}
    splits: dict[str, list[SegmentationItem]] = {"train": [], "val": [], "test": []}
    with manifest.open(newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            if row["subject"] not in index or row["split"] not in splits:
                raise InputDataError(f"{manifest}:{line}: unknown subject {row['subject']!r} or split {row['split']!r}")
            splits[row["split"]].append(SegmentationItem(augmented / row["image"], augmented / row["mask"],
                                                         index[row["subject"]]))
    for split in ("train", "val"):
        if not splits[split]:
            raise InputDataError(f"{manifest}: the {split} split is empty (see augment.val_count / test_count)")
    return classes, splits, hashlib.sha256(manifest.read_bytes()).hexdigest()


@torch.no_grad()
def prediction_grid(net: ResNet34UNet, dataset: SubjectSegmentationDataset, count: int = 8) -> np.ndarray:
    """Test images with ground truth (top) and prediction (bottom) overlays."""
    was_training = net.training
    net.eval()
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).astype(int)
    top, bottom = [], []
    for i in picks:
        image, labels = dataset[int(i)]
        pixels = (image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        pred = net(image[None]).argmax(1)[0].numpy()
        top.append(overlay_labels(pixels, labels.numpy()))
        bottom.append(overlay_labels(pixels, pred))
    net.train(was_training)
    return image_grid(top + bottom, columns=len(picks))


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.train_segmenter
    augmented = params.paths.data / "augmented"
    classes, splits, manifest_digest = read_splits(augmented)
    # The U-Net halves five times: a side of 32k pixels (the augment canvas when unset).
    image_size = cfg.image_size or max(32, params.augment.canvas_size // 32 * 32)

    L.seed_everything(params.seed, workers=True, verbose=False)
    net = ResNet34UNet(len(classes), cfg.decoder_channels, class_names=classes, image_size=image_size)
    if params.models.segmenter_encoder_weights is not None:
        try:
            net.load_encoder_weights(params.models.segmenter_encoder_weights)
        except (KeyError, RuntimeError, OSError) as err:
            raise InputDataError(f"models.segmenter_encoder_weights: {err}") from None
    pixel_counts = SubjectSegmentationDataset(splits["train"], image_size).class_pixel_counts(len(classes))
    class_weights = balanced_class_weights(pixel_counts, cfg.class_weight_power)
    module = SubjectSegmenter(net, lr=cfg.lr, class_weights=class_weights)
    data = SubjectSegmentationDataModule(splits, image_size, cfg.batch_size, params.trainer.num_workers, params.seed)
    key = {"manifest": manifest_digest, "encoder": str(params.models.segmenter_encoder_weights)}

    def train(run) -> Fitted:
        return fit(params, STAGE, module, datamodule=data, run=run, checkpoint_key=key, max_epochs=cfg.max_epochs,
                   limit_train_batches=cfg.limit_train_batches, limit_val_batches=cfg.limit_val_batches,
                   val_keys=("val/loss", "val/mIoU"))

    if not is_rank_zero():  # a DDP worker: train, leave outputs and tracking to rank zero
        train(None)
        return

    model_dir = params.paths.data / "models" / "segmenter"
    targets = (model_dir, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params) as run, atomic_outputs(*targets) as (tmp_model, tmp_metrics, tmp_plots):
        fitted = train(run)
        trainer, history, checkpoints = fitted.trainer, fitted.history, fitted.checkpoints
        mlflow.set_tag("subjectlab.resumed_from", str(fitted.resumed_from or ""))
        split = held_out_split(STAGE, splits, "the final IoU")
        test_set = SubjectSegmentationDataset(splits[split], image_size)
        metrics = {
            split: evaluate_iou(net, DataLoader(test_set, batch_size=cfg.batch_size)),
            "evaluated_on": split,
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
        }
        net.cpu().save_pretrained(tmp_model)
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        write_curves(history, tmp_plots)
        grid = prediction_grid(net, test_set)
        Image.fromarray(grid).save(tmp_plots / "predictions.png")
        log_image(grid, "segmenter/predictions.png")
        log_metrics_tree({split: metrics[split]})
        mlflow.log_artifacts(str(tmp_model), artifact_path="segmenter")
        mlflow.log_artifacts(str(tmp_plots), artifact_path="segmenter/plots")
    # Published: the resumable state has served its purpose (a forced rerun trains afresh).
    shutil.rmtree(checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
