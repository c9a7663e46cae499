"""The one Trainer factory and the one `fit`: every training stage gets its hardware from
params.trainer and its checkpoint / resume / curves sequence from here.

Switching a stage from this CPU to 8 GPUs x 2 nodes changes only params (accelerator,
devices, strategy, precision, num_nodes); the stage code stays as it is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, MLFlowLogger
from mlflow.entities import Run

from lightning_modules.core.history import MetricsHistory

from tasks.core.params import Params
from tasks.core.tracking import tracking_uri

LAST_CHECKPOINT = "last.ckpt"


def checkpoint_dir(params: Params, stage: str, inputs: dict[str, Any]) -> Path:
    """Where a stage keeps resumable state: keyed by everything that shapes the run, so a
    killed run resumes only with the same params and data, never with changed ones."""
    key = json.dumps({"seed": params.seed, "stage": params.effective().get(stage), **inputs},
                     sort_keys=True, default=str)
    return params.paths.checkpoints / stage / hashlib.sha256(key.encode()).hexdigest()[:16]


def resume_path(directory: Path) -> Optional[Path]:
    last = directory / LAST_CHECKPOINT
    return last if last.is_file() else None


def mlflow_logger(params: Params, run: Optional[Run]) -> Union[MLFlowLogger, bool]:
    """Lightning logs into the stage's own MLflow run; other ranks log nothing."""
    if run is None:
        return False
    return MLFlowLogger(experiment_name=params.mlflow.experiment, tracking_uri=tracking_uri(params),
                        run_id=run.info.run_id, log_model=False)


def build_trainer(
    params: Params,
    *,
    checkpoints: Path,
    max_epochs: int,
    logger: Union[Logger, bool],
    callbacks: Sequence[L.Callback] = (),
    limit_train_batches: Union[int, float] = 1.0,
    limit_val_batches: Union[int, float] = 1.0,
    use_distributed_sampler: bool = True,
    max_steps: int = -1,
    accumulate_grad_batches: int = 1,
) -> L.Trainer:
    cfg = params.trainer
    # Only last.ckpt: a resume needs nothing older, and full optimizer state is large.
    checkpointing = ModelCheckpoint(dirpath=checkpoints, filename="step{step:06d}", save_last=True,
                                    every_n_train_steps=cfg.checkpoint_every_n_steps, save_top_k=0,
                                    auto_insert_metric_name=False)
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        num_nodes=cfg.num_nodes,
        max_epochs=max_epochs,
        max_steps=max_steps,
        accumulate_grad_batches=accumulate_grad_batches,
        limit_train_batches=limit_train_batches,
        limit_val_batches=limit_val_batches,
        log_every_n_steps=cfg.log_every_n_steps,
        deterministic=cfg.deterministic,
        logger=logger,
        callbacks=[checkpointing, *callbacks],
        default_root_dir=checkpoints,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        # False for loaders whose batch sampler already deals each rank its share (P x K).
        use_distributed_sampler=use_distributed_sampler,
    )


@dataclass
class Fitted:
    trainer: L.Trainer
    history: MetricsHistory
    checkpoints: Path          # the stage's resumable state; remove it once the outputs are published
    resumed_from: Optional[Path]


def fit(params: Params, stage: str, module: L.LightningModule, *, run: Optional[Run], checkpoint_key: dict[str, Any],
        train_dataloaders: Any = None, datamodule: Optional[L.LightningDataModule] = None,
        max_epochs: int = -1, max_steps: int = -1, limit_train_batches: Union[int, float] = 1.0,
        limit_val_batches: Union[int, float] = 0, val_keys: tuple[str, ...] = (),
        callbacks: Sequence[L.Callback] = (), accumulate_grad_batches: int = 1,
        use_distributed_sampler: bool = True) -> Fitted:
    """The one training entry of every stage: the checkpoint directory keyed by what shapes
    the run, a resume from the last checkpoint a killed run left there, the curves for
    `dvc plots`, the shared Trainer (hardware from params.trainer), and MLflow logging into
    the stage's run (`run` is None on DDP ranks other than zero: they log nothing)."""
    checkpoints = checkpoint_dir(params, stage, checkpoint_key)
    resume = resume_path(checkpoints)
    if resume is not None and run is not None:
        print(f"Resuming {stage} from {resume}", flush=True)
    history = MetricsHistory(every_n_steps=params.trainer.log_every_n_steps, val_keys=val_keys)
    trainer = build_trainer(params, checkpoints=checkpoints, max_epochs=max_epochs, max_steps=max_steps,
                            logger=mlflow_logger(params, run), callbacks=[history, *callbacks],
                            limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                            accumulate_grad_batches=accumulate_grad_batches,
                            use_distributed_sampler=use_distributed_sampler)
    trainer.fit(module, train_dataloaders=train_dataloaders, datamodule=datamodule, ckpt_path=resume)
    return Fitted(trainer, history, checkpoints, resume)
