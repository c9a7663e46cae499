"""Training one row of DeSKPro's Table 3 (a `Variant`): shared by `train_reid` and `reid_ablation`."""

from __future__ import annotations

import lightning as L

from lightning_modules.data.market1501 import ReidFolder
from lightning_modules.deskpro import DeSKProNet
from tasks.core.errors import InputDataError
from tasks.core.params import Params, Variant
from tasks.core.trainer import fit
from tasks.deskpro.setup import (
    deskpro_module,
    folder_digest,
    needs_restored_faces,
    person_dataset,
    restorer,
    teacher_dir,
    train_loader,
)


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
    fitted = fit(params, stage, module, train_dataloaders=train_loader(params, dataset), max_epochs=max_epochs,
                 limit_train_batches=limit_train_batches, run=run, checkpoint_key=key,
                 use_distributed_sampler=False)  # the P x K batch sampler deals each rank its share
    trainer = fitted.trainer
    metrics.update({"global_step": trainer.global_step, "epochs": trainer.current_epoch,
                    "final_loss": fitted.history.final_epoch_loss()})
    net.cpu()
    return net, metrics, (fitted.history, fitted.checkpoints)
