"""Stage `train_face_attributes`: SynthWorld's face judge, a classifier of each face attribute
(hair style, hair color, glasses, beard, mouth) and of the identity.

Trains on the real faces of data/faces (split train, every identity) only: it judges eCLIPsed's
edits (did the edit change the attribute it names, and only that one? is the person still the
same?) and its embedding is the faces' FID feature. Writes the model (safetensors + config,
`FaceAttributeClassifier.from_pretrained`), the held-out accuracy of every head, curves and a
picture of test faces with what the judge says about them.
"""

from __future__ import annotations

import shutil

import lightning as L
import mlflow
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch.utils.data import DataLoader

from lightning_modules.core.visual import image_grid
from lightning_modules.data.faces import FaceRecord, FacesFolder, read_faces_folder
from lightning_modules.judges.data import read_pixels
from lightning_modules.judges.face_data import FaceAttributeDataModule, FaceAttributeDataset
from lightning_modules.judges.faces import IDENTITY, FaceAttributeClassifier, FaceAttributeJudge, evaluate_face_judge
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import stage_run
from tasks.core.trainer import Fitted, fit
from tasks.judges.publishing import publish_judge

STAGE = "train_face_attributes"
SPLITS = ("train", "val", "test")
GRID_FACES = 16
TILE = 96     # pixels of a face in the picture
LINE = 11     # pixels of a line of text under it


def face_splits(folder: FacesFolder) -> dict[str, list[FaceRecord]]:
    splits = {split: folder.split(split) for split in SPLITS}
    for split in ("train", "val"):
        if not splits[split]:
            raise InputDataError(f"{folder.root / 'faces.csv'}: the {split} split is empty "
                                 "(see synthesize_faces.val_per_identity / test_per_identity)")
    # The identity head knows the identities it trained on: a held-out face of another is no test of it.
    unseen = sorted({r.identity for r in splits["val"] + splits["test"]} - {r.identity for r in splits["train"]})
    if unseen:
        raise InputDataError(f"{folder.root / 'faces.csv'}: identity {unseen[0]} has held-out faces but none in "
                             "the train split; every identity needs training faces")
    return splits


def labelled_grid(net: FaceAttributeClassifier, records: list[FaceRecord], count: int = GRID_FACES) -> np.ndarray:
    """Faces with the judge's verdict per head under each: green where right, red where wrong."""
    picks = [records[int(i)] for i in np.linspace(0, len(records) - 1, min(count, len(records)))]
    pixels = [read_pixels(record.image) for record in picks]
    was_training = net.training
    net.eval()
    with torch.no_grad():
        verdicts = [net.predict(p[None]) for p in pixels]
    net.train(was_training)
    font = ImageFont.load_default()
    right, wrong = (0, 140, 0), (200, 0, 0)
    tiles = []
    for record, image, verdict in zip(picks, pixels, verdicts):
        picture = Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).resize((TILE, TILE))
        tile = Image.new("RGB", (TILE, TILE + LINE * len(net.head_names) + 2), (255, 255, 255))
        tile.paste(picture)
        draw = ImageDraw.Draw(tile)
        for line, name in enumerate(net.head_names):
            said = int(verdict[name][0])
            if name == IDENTITY:
                text, hit = f"id {said}", said == record.identity
            else:
                text, hit = net.attributes[name][said], said == record.attributes[name]
                text = text if name in ("hair_style", "hair_color", "mouth") else f"{name} {text}"
            draw.text((2, TILE + 1 + line * LINE), text, fill=right if hit else wrong, font=font)
        tiles.append(np.asarray(tile))
    return image_grid(tiles, columns=8)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.train_face_attributes
    folder = read_faces_folder(params.paths.data / "faces")
    splits = face_splits(folder)
    identities = sorted({r.identity for r in splits["train"]})

    L.seed_everything(params.seed, workers=True, verbose=False)
    net = FaceAttributeClassifier(folder.attributes, identities, image_size=cfg.image_size, width=cfg.width)
    module = FaceAttributeJudge(net, lr=cfg.lr, weight_decay=cfg.weight_decay, max_epochs=cfg.max_epochs,
                                identity_weight=cfg.identity_weight)
    data = FaceAttributeDataModule(splits, list(folder.attributes), identities, cfg.image_size, cfg.batch_size,
                                   params.trainer.num_workers, params.seed)

    def train(run) -> Fitted:
        return fit(params, STAGE, module, datamodule=data, run=run, checkpoint_key={"faces": folder.digest},
                   max_epochs=cfg.max_epochs, limit_train_batches=cfg.limit_train_batches,
                   limit_val_batches=cfg.limit_val_batches,
                   val_keys=("val/loss", *(f"val/{name}_accuracy" for name in net.head_names)))

    if not is_rank_zero():  # a DDP worker: train, leave outputs and tracking to rank zero
        train(None)
        return

    model_dir = params.paths.data / "models" / "face_attributes"
    targets = (model_dir, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params) as run, atomic_outputs(*targets) as (tmp_model, tmp_metrics, tmp_plots):
        fitted = train(run)
        mlflow.set_tag("subjectlab.resumed_from", str(fitted.resumed_from or ""))
        split = "test" if splits["test"] else "val"
        if split == "val":
            print(f"{STAGE}: faces.csv has no test face, so the accuracy is measured on the val split", flush=True)
        held_out = data.dataset("val") if split == "val" else \
            FaceAttributeDataset(splits[split], list(folder.attributes), identities, cfg.image_size)
        metrics = {
            split: evaluate_face_judge(net, DataLoader(held_out, batch_size=cfg.batch_size)),
            "evaluated_on": split,
            "attributes": folder.attributes,
            "identities": len(identities),
            "train_faces": len(splits["train"]),
            "embedding_dim": net.embedding_dim,
            "global_step": fitted.trainer.global_step,
            "epochs": fitted.trainer.current_epoch,
        }
        publish_judge(net, metrics, split, lambda: labelled_grid(net, splits[split]), fitted.history,
                      tmp_model, tmp_metrics, tmp_plots, "face_attributes")
    # Published: the resumable state has served its purpose (a forced rerun trains afresh).
    shutil.rmtree(fitted.checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
