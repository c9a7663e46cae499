"""Stage `train_reid`: DeSKPro's global stream (CSA + L_att) and face student, eq. 7.

The row of Table 3 it trains is `train_reid.variant` (DeSKPro by default). The teacher from
`train_reid_teacher` supplies the soft labels of L_fkp and is not part of the saved model
(unless the variant is DeSKPro*, whose face stream is the teacher itself).
"""

from __future__ import annotations

import json
import shutil
from typing import Optional

import lightning as L
import mlflow

from lightning_modules.reid import DeSKProNet
from tasks.config import Params, Variant
from tasks.curves import write_curves
from tasks.errors import InputDataError, run_stage_main
from tasks.outputs import atomic_outputs
from tasks.reid_folder import ReidFolder
from tasks.reid_setup import (
    deskpro_module,
    fit,
    folder_digest,
    load_folder,
    needs_restored_faces,
    person_dataset,
    restorer,
    teacher_dir,
    train_loader,
)
from tasks.stage import is_rank_zero, stage_params
from tasks.tracking import flatten, stage_run

STAGE = "train_reid"


def train_variant(params: Params, stage: str, folder: ReidFolder, variant: Variant, *, max_epochs: int,
                  limit_train_batches, run) -> tuple[DeSKProNet, dict, object]:
    """Train one Table 3 row; returns (inference network, training metrics, Lightning history)."""
    if len(folder.train_labels) < params.reid.identities_per_batch:
        raise InputDataError(f"{params.reid.dataset_dir}: {len(folder.train_labels)} training identities, fewer "
                             "than reid.identities_per_batch")
    L.seed_everything(params.seed, workers=True, verbose=False)
    module, net = deskpro_module(params, variant, len(folder.train_labels))
    metrics: dict = {"identities": len(folder.train_labels), "images": len(folder.train)}
    if not variant.trains_something:  # the teacher alone: nothing left to train
        return net, {**metrics, "global_step": 0, "epochs": 0}, None
    restore = restorer(params, folder.train) if needs_restored_faces(variant) else None
    dataset = person_dataset(params, folder, folder.train, train=True, restore=restore)
    teacher_files = teacher_dir(params) / "model.safetensors"
    key = {"data": folder_digest(folder), "reid": params.effective()["reid"], "variant": variant.model_dump(),
           "models": params.effective()["models"],
           "teacher": teacher_files.stat().st_mtime_ns if teacher_files.is_file() else None}
    trainer, history, checkpoints = fit(params, stage, module, train_loader(params, dataset), max_epochs=max_epochs,
                                        limit_train_batches=limit_train_batches, run=run, checkpoint_key=key)
    metrics.update({"global_step": trainer.global_step, "epochs": trainer.current_epoch,
                    "final_loss": round(float(trainer.callback_metrics.get("train/loss_epoch", float("nan"))), 4)})
    net.cpu()
    return net, metrics, (history, checkpoints)


def main(argv: Optional[list[str]] = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.train_reid
    folder = load_folder(params)
    if not is_rank_zero():
        train_variant(params, STAGE, folder, cfg.variant, max_epochs=cfg.max_epochs,
                      limit_train_batches=cfg.limit_train_batches, run=None)
        return
    targets = (params.paths.data / "models" / "reid", params.paths.metrics / f"{STAGE}.json",
               params.paths.plots / STAGE)
    with stage_run(STAGE, params) as run, atomic_outputs(*targets) as (tmp_model, tmp_metrics, tmp_plots):
        mlflow.log_params(flatten({"reid": params.effective()["reid"]}))
        net, metrics, state = train_variant(params, STAGE, folder, cfg.variant, max_epochs=cfg.max_epochs,
                                            limit_train_batches=cfg.limit_train_batches, run=run)
        net.save_pretrained(tmp_model)
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        tmp_plots.mkdir(parents=True)
        if state is not None:
            write_curves(state[0], tmp_plots)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifacts(str(tmp_model), artifact_path="reid_model")
    if state is not None:
        shutil.rmtree(state[1], ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
