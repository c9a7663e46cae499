"""Stage `train_reid_teacher`: DeSKPro's face teacher phi_t (section 2.2).

Restored faces (models.face_restorer) of the training images through the truncated OSNet +
MBN, trained with CE + batch-hard triplet. Frozen afterwards: `train_reid` distils it into
the student, and DeSKPro* uses it directly.
"""

from __future__ import annotations

import json
import shutil

import lightning as L
import mlflow
import numpy as np
from PIL import Image

from lightning_modules.deskpro import FaceTeacherModule
from lightning_modules.deskpro.visual import as_uint8
from lightning_modules.core.visual import image_grid
from tasks.core.curves import write_curves
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.trainer import fit
from tasks.deskpro.setup import (
    folder_digest,
    load_folder,
    new_stream,
    optimization,
    person_dataset,
    restorer,
    teacher_dir,
    train_loader,
)
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import flatten, log_image, stage_run

STAGE = "train_reid_teacher"


def face_pairs(dataset, count: int = 8) -> np.ndarray:
    """Top: the low-resolution face crops the student gets; bottom: what the teacher sees."""
    picks = np.linspace(0, len(dataset) - 1, min(count, len(dataset))).astype(int)
    items = [dataset[int(i)] for i in picks]
    return image_grid([as_uint8(it["face"]) for it in items] + [as_uint8(it["restored_face"]) for it in items],
                      columns=len(items))


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.train_reid_teacher
    folder = load_folder(params)
    faces = [r for r in folder.train if r.face_box is not None]
    if len({r.pid for r in faces}) < params.reid.identities_per_batch:
        raise InputDataError(f"{params.reid.dataset_dir}: {len({r.pid for r in faces})} training identities with "
                             f"a visible face, fewer than reid.identities_per_batch")
    restore = restorer(params, faces)
    L.seed_everything(params.seed, workers=True, verbose=False)
    num_classes = len(folder.train_labels)
    teacher = new_stream(params, num_classes)
    module = FaceTeacherModule(teacher, num_classes, optimization(params))
    dataset = person_dataset(params, folder, faces, train=True, restore=restore)
    key = {"data": folder_digest(folder), "reid": params.effective()["reid"], "models": params.effective()["models"]}

    def train(run):
        return fit(params, STAGE, module, train_dataloaders=train_loader(params, dataset), max_epochs=cfg.max_epochs,
                   limit_train_batches=cfg.limit_train_batches, run=run, checkpoint_key=key,
                   use_distributed_sampler=False)  # the P x K batch sampler deals each rank its share

    if not is_rank_zero():
        train(None)
        return
    targets = (teacher_dir(params), params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params) as run, atomic_outputs(*targets) as (tmp_model, tmp_metrics, tmp_plots):
        mlflow.log_params(flatten({"reid": params.effective()["reid"]}))
        fitted = train(run)
        trainer, history, checkpoints = fitted.trainer, fitted.history, fitted.checkpoints
        teacher.cpu().save_pretrained(tmp_model)
        metrics = {"global_step": trainer.global_step, "epochs": trainer.current_epoch,
                   "identities": num_classes, "faces": len(faces),
                   "final_loss": fitted.history.final_epoch_loss()}
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        write_curves(history, tmp_plots)
        pairs = face_pairs(dataset)
        Image.fromarray(pairs).save(tmp_plots / "faces.png")
        log_image(pairs, "reid_teacher/faces.png")
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifacts(str(tmp_model), artifact_path="reid_teacher")
    shutil.rmtree(checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
