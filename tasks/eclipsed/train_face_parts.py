"""Stage `train_face_parts`: the face part segmenter that localizes eCLIPsed's edits.

eCLIPsed's localization loss reads a face parsing network on the generator's images (the paper
uses a pretrained face segmenter); here it is MSP's ResNet-34 U-Net (lightning_modules/
segmentation, the train_segmenter recipe) trained on SynthWorld's exact part maps
(data/faces/parts, split train). Writes the model (safetensors + config with class_names =
the part classes, `ResNet34UNet.from_pretrained`), per-part and mean IoU on the test split,
curves and a picture of test faces with their true and predicted parts.
"""

from __future__ import annotations

import json
import shutil

import lightning as L
import mlflow
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from lightning_modules.core.visual import OVERLAY_COLORS, enlarge, image_grid
from lightning_modules.data.faces import FacesFolder, read_faces_folder
from lightning_modules.segmentation import (
    ResNet34UNet,
    SegmentationItem,
    SubjectSegmentationDataModule,
    SubjectSegmentationDataset,
    SubjectSegmenter,
    balanced_class_weights,
    evaluate_iou,
)
from tasks.core.curves import write_curves
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import log_image, log_metrics_tree, stage_run
from tasks.core.trainer import Fitted, fit

STAGE = "train_face_parts"
SPLITS = ("train", "val", "test")
GRID_FACES = 8
MIOU_OVER = "every part class present in the test split's part maps, background included"


def part_splits(folder: FacesFolder) -> dict[str, list[SegmentationItem]]:
    """Segmentation items per split: each part map holds its classes (label None)."""
    splits = {split: [SegmentationItem(r.image, r.parts, None) for r in folder.split(split)] for split in SPLITS}
    for split in ("train", "val"):
        if not splits[split]:
            raise InputDataError(f"{folder.root / 'faces.csv'}: the {split} split is empty "
                                 "(see synthesize_faces.val_per_identity / test_per_identity)")
    return splits


def held_out(splits: dict[str, list], measured: str) -> str:
    if splits["test"]:
        return "test"
    print(f"{STAGE}: faces.csv has no test face, so {measured} is measured on the val split", flush=True)
    return "val"


def part_metrics(net: ResNet34UNet, dataset: SubjectSegmentationDataset, batch_size: int) -> dict:
    """evaluate_iou's per-part IoU, with the mean over the parts the split shows (a part no face of
    the split has, e.g. glasses in a small folder, would count as 0 wherever it is predicted)."""
    result = evaluate_iou(net, DataLoader(dataset, batch_size=batch_size))
    present = [name for name, pixels in zip(net.class_names, dataset.class_pixel_counts(len(net.class_names)))
               if pixels > 0]
    ious = [result["iou"][name] or 0.0 for name in present]
    parts = [result["iou"][name] or 0.0 for name in present if name != net.class_names[0]]
    return {"mIoU": round(float(np.mean(ious)), 4), "mIoU_over": MIOU_OVER, "mIoU_classes": present,
            "parts_mIoU": round(float(np.mean(parts)), 4) if parts else None,
            "pixel_accuracy": result["pixel_accuracy"], "iou": result["iou"], "faces": len(dataset)}


def paint(labels: np.ndarray) -> np.ndarray:
    return OVERLAY_COLORS[labels % len(OVERLAY_COLORS)]


@torch.no_grad()
def prediction_grid(net: ResNet34UNet, dataset: SubjectSegmentationDataset, count: int = GRID_FACES) -> np.ndarray:
    """Test faces (top row), their true parts (middle) and the predicted parts (bottom)."""
    was_training = net.training
    net.eval()
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).astype(int)
    faces, truth, predicted = [], [], []
    for i in picks:
        image, labels = dataset[int(i)]
        faces.append((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8))
        truth.append(paint(labels.numpy()))
        predicted.append(paint(net(image[None]).argmax(1)[0].numpy()))
    net.train(was_training)
    return enlarge(image_grid(faces + truth + predicted, columns=len(picks)), 2)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.train_face_parts
    folder = read_faces_folder(params.paths.data / "faces")
    splits = part_splits(folder)
    classes = folder.part_classes

    L.seed_everything(params.seed, workers=True, verbose=False)
    net = ResNet34UNet(len(classes), cfg.decoder_channels, class_names=classes, image_size=cfg.image_size)
    pixel_counts = SubjectSegmentationDataset(splits["train"], cfg.image_size).class_pixel_counts(len(classes))
    module = SubjectSegmenter(net, lr=cfg.lr, class_weights=balanced_class_weights(pixel_counts,
                                                                                   cfg.class_weight_power))
    data = SubjectSegmentationDataModule(splits, cfg.image_size, cfg.batch_size, params.trainer.num_workers,
                                         params.seed)

    def train(run) -> Fitted:
        return fit(params, STAGE, module, datamodule=data, run=run, checkpoint_key={"faces": folder.digest},
                   max_epochs=cfg.max_epochs, limit_train_batches=cfg.limit_train_batches,
                   limit_val_batches=cfg.limit_val_batches, val_keys=("val/loss", "val/mIoU"))

    if not is_rank_zero():  # a DDP worker: train, leave outputs and tracking to rank zero
        train(None)
        return

    model_dir = params.paths.data / "models" / "face_parts"
    targets = (model_dir, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params) as run, atomic_outputs(*targets) as (tmp_model, tmp_metrics, tmp_plots):
        fitted = train(run)
        mlflow.set_tag("subjectlab.resumed_from", str(fitted.resumed_from or ""))
        split = held_out(splits, "the IoU")
        test_set = SubjectSegmentationDataset(splits[split], cfg.image_size)
        metrics = {
            split: part_metrics(net, test_set, cfg.batch_size),
            "evaluated_on": split,
            "part_classes": classes,
            "train_faces": len(splits["train"]),
            "global_step": fitted.trainer.global_step,
            "epochs": fitted.trainer.current_epoch,
        }
        net.cpu().save_pretrained(tmp_model)
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        write_curves(fitted.history, tmp_plots)
        grid = prediction_grid(net, test_set)
        Image.fromarray(grid).save(tmp_plots / "predictions.png")
        log_image(grid, "face_parts/predictions.png")
        log_metrics_tree({split: {k: v for k, v in metrics[split].items()
                                  if k not in ("mIoU_over", "mIoU_classes", "faces")}})
        mlflow.log_artifacts(str(tmp_model), artifact_path="face_parts")
        mlflow.log_artifacts(str(tmp_plots), artifact_path="face_parts/plots")
    # Published: the resumable state has served its purpose (a forced rerun trains afresh).
    shutil.rmtree(fitted.checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
