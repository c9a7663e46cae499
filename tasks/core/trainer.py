"""The one Trainer factory and the one `fit`: every training stage gets its hardware from
params.trainer and its checkpoint / resume / curves sequence from here.

Switching a stage from this CPU to 8 GPUs x 2 nodes changes only params (accelerator,
devices, strategy, precision, num_nodes); the stage code stays as it is.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger, MLFlowLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException
from mlflow.entities import Run

from lightning_modules.core.history import MetricsHistory
from lightning_modules.core.resumable import ResumableLoader

from tasks.core import interrupt
from tasks.core.errors import TrackingError
from tasks.core.failpoints import failpoint
from tasks.core.params import Params
from tasks.core.tracking import describe_failure, system_metrics, tracking_uri

LAST_CHECKPOINT = "last.ckpt"
PARTIAL_SUFFIX = ".partial"


def checkpoint_dir(params: Params, stage: str, inputs: dict[str, Any]) -> Path:
    """Where a stage keeps resumable state: keyed by everything that shapes the run, so a
    killed run resumes only with the same params and data, never with changed ones."""
    key = json.dumps({"seed": params.seed, "stage": params.effective().get(stage), **inputs},
                     sort_keys=True, default=str)
    return params.paths.checkpoints / stage / hashlib.sha256(key.encode()).hexdigest()[:16]


def checkpoint_problem(path: Path) -> Optional[str]:
    """Why `path` cannot be resumed from (truncated, not a checkpoint), or None. Memory-mapped:
    the tensors are not read, so this costs little even for a large model."""
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # torch raises several kinds for a damaged file
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    missing = [key for key in ("state_dict", "loops", "global_step") if not isinstance(state, dict) or key not in state]
    return f"not a training checkpoint (no {', '.join(missing)})" if missing else None


def resume_path(directory: Path, stage: str = "stage") -> Optional[Path]:
    """The checkpoint a killed run left, if it is whole. A damaged one is set aside (kept for a
    post-mortem, never resumed from) and training restarts from the beginning."""
    for partial in directory.glob(f".*{PARTIAL_SUFFIX}"):  # a write the kill cut short
        partial.unlink()
    last = directory / LAST_CHECKPOINT
    if not last.is_file():
        return None
    problem = checkpoint_problem(last)
    if problem is None:
        return last
    aside = last.with_name(f"corrupt-{time.strftime('%Y%m%d-%H%M%S')}.ckpt")
    os.replace(last, aside)
    print(f"{stage}: checkpoint {last} is unreadable ({problem}); set aside as {aside.name}, "
          "training starts from the beginning", file=sys.stderr, flush=True)
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes a checkpoint beside its place and renames it in: a kill mid-write leaves the
    previous checkpoint whole, never a truncated one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}{PARTIAL_SUFFIX}")
        super().save_checkpoint(checkpoint, partial, storage_options)
        failpoint("checkpoint.written")
        os.replace(partial, path)


class StageRunLogger(MLFlowLogger):
    """Lightning's MLflow logger bound to the stage's own run.

    It never ends the run (the stage does, once its outputs are published), and a store that
    fails mid-training does not raise from deep inside Lightning: the failure is kept for
    `StopSafely` to act on at the end of the step, after saving a checkpoint.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.failure: Optional[BaseException] = None

    def _guarded(self, write, *args: Any) -> None:
        if self.failure is not None:
            return
        try:
            write(*args)
        except Exception as err:  # the store's client raises many kinds (HTTP, SQL, OS)
            self.failure = err

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        self._guarded(super().log_metrics, metrics, step)

    def log_hyperparams(self, params: Any) -> None:
        self._guarded(super().log_hyperparams, params)

    def finalize(self, status: str = "success") -> None:
        pass


def mlflow_logger(params: Params, run: Optional[Run]) -> Union[MLFlowLogger, bool]:
    """Lightning logs into the stage's own MLflow run; other ranks log nothing."""
    if run is None:
        return False
    return StageRunLogger(experiment_name=params.mlflow.experiment, tracking_uri=tracking_uri(params),
                          run_id=run.info.run_id, log_model=False)


class StopSafely(L.Callback):
    """Makes a run stoppable and resumable exactly.

    - Each training batch draws its randomness (noise, timesteps, dropout) from a generator
      seeded by (seed, epoch, batch): a resumed run draws what the uninterrupted one did,
      with no RNG state to carry in the checkpoint.
    - Each resumable loader learns how many batches of its epoch were trained, for the
      checkpoint to record.
    - A SIGTERM / SIGINT received during training, or a tracking store that failed, stops
      the run at the end of the step, after saving a checkpoint there.
    """

    def __init__(self, seed: int, checkpoints: Path, uri: str):
        self.seed, self.checkpoints, self.uri = seed, checkpoints, uri

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        fit_state = checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {})
        self._loader_states = bool(fit_state.get("combined_loader"))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.world_size == 1:
            # Lightning's SIGTERM handler would stop the loop by SystemExit(0), racing this
            # callback's checkpoint. Under DDP it stays: it also stops the other ranks.
            interrupt.reclaim()
        loaders = trainer.train_dataloader
        loaders = list(loaders) if isinstance(loaders, (list, tuple)) else [loaders]
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        for loader in loaders:
            if isinstance(loader, ResumableLoader):
                loader.trained_batches = lambda: progress.processed
        if getattr(self, "_loader_states", False) and any(
                isinstance(loader, ResumableLoader) and loader.restored_from is None for loader in loaders):
            # Lightning restores a loader's place only if the loader is built after the checkpoint
            # is read; `trainer.estimated_stepping_batches` in configure_optimizers builds it before.
            raise RuntimeError("the train loader was built before the checkpoint was restored, so the resumed run "
                               "would not see the batches the interrupted one would have; do not ask for "
                               "estimated_stepping_batches in configure_optimizers")

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        # hash() of a tuple of ints is the same in every process (only str hashing is salted)
        torch.manual_seed(hash((self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)) % 2**63)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        failpoint("train.batch_end")
        signum = interrupt.pending()
        failure = next((lg.failure for lg in trainer.loggers if getattr(lg, "failure", None) is not None), None)
        if signum is None and failure is None:
            return
        kept = self._save(trainer)
        if signum is not None:
            raise interrupt.StageInterrupted(signum, kept)
        raise TrackingError(f"MLflow store {self.uri} failed during training ({describe_failure(failure)}); "
                            f"{kept}; fix the store and run the stage again to continue")

    def on_validation_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        signum = interrupt.pending()
        if signum is not None and not trainer.sanity_checking:
            raise interrupt.StageInterrupted(signum, self._kept_earlier())

    def _save(self, trainer: L.Trainer) -> str:
        if trainer.world_size > 1:
            # Saving is collective and the other ranks may already be stopping: keep the last
            # periodic checkpoint rather than risk a hang.
            return self._kept_earlier()
        last = self.checkpoints / LAST_CHECKPOINT
        trainer.save_checkpoint(last, weights_only=False)  # the whole state: optimizer, loops, loader
        return f"training state saved at step {trainer.global_step} in {last}"

    def _kept_earlier(self) -> str:
        last = self.checkpoints / LAST_CHECKPOINT
        return f"the checkpoint {last} resumes training" if last.is_file() else "no training step was kept"


def build_trainer(
    params: Params,
    *,
    checkpoints: Path,
    max_epochs: int,
    logger: Union[Logger, bool],
    callbacks: Sequence[L.Callback] = (),
    limit_train_batches: Union[int, float] = 1.0,
    limit_val_batches: Union[int, float] = 1.0,
    use_distributed_sampler: bool = False,
    max_steps: int = -1,
    accumulate_grad_batches: int = 1,
    seed: int = 0,
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
        # StopSafely after the others: a checkpoint it saves holds what they recorded of the step.
        callbacks=[*callbacks, StopSafely(seed, checkpoints, tracking_uri(params)), checkpointing],
        plugins=[AtomicCheckpointIO()],
        default_root_dir=checkpoints,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        # False for loaders that deal each rank its share themselves (lightning_modules.core.resumable).
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
        use_distributed_sampler: bool = False) -> Fitted:
    """The one training entry of every stage: the checkpoint directory keyed by what shapes
    the run, a resume from the last checkpoint a killed run left there, the curves for
    `dvc plots`, the shared Trainer (hardware from params.trainer), and MLflow logging into
    the stage's run (`run` is None on DDP ranks other than zero: they log nothing)."""
    checkpoints = checkpoint_dir(params, stage, checkpoint_key)
    resume = resume_path(checkpoints, stage)
    if resume is not None and run is not None:
        print(f"Resuming {stage} from {resume}", flush=True)
    history = MetricsHistory(every_n_steps=params.trainer.log_every_n_steps, val_keys=val_keys)
    trainer = build_trainer(params, checkpoints=checkpoints, max_epochs=max_epochs, max_steps=max_steps,
                            logger=mlflow_logger(params, run), callbacks=[history, *callbacks],
                            limit_train_batches=limit_train_batches, limit_val_batches=limit_val_batches,
                            accumulate_grad_batches=accumulate_grad_batches,
                            use_distributed_sampler=use_distributed_sampler, seed=params.seed)
    # Signals wait for the end of the step (StopSafely): a checkpoint is never of half a step.
    with interrupt.deferred(), system_metrics(run, tracking_uri(params)):
        try:
            trainer.fit(module, train_dataloaders=train_dataloaders, datamodule=datamodule, ckpt_path=resume)
        except SIGTERMException:  # Lightning's own stop (DDP): an interruption, never a success
            last = checkpoints / LAST_CHECKPOINT
            raise interrupt.StageInterrupted(signal.SIGTERM, f"the checkpoint {last} resumes training"
                                             if last.is_file() else "no training step was kept") from None
    return Fitted(trainer, history, checkpoints, resume)


def predict(params: Params, module: L.LightningModule, dataloader: Any, callbacks: Sequence[L.Callback] = (),
            inference_mode: bool = True) -> None:
    """The one inference entry (generation): the hardware of params.trainer, Lightning's
    distributed sampler dealing the items over the ranks, its progress bar; nothing logged
    (the stage records what it keeps). Predictions go to the callbacks (a prediction writer).
    `inference_mode=False` runs under no_grad instead, for a sampler that takes gradients
    (guidance): tensors made in inference mode can never join an autograd graph."""
    cfg = params.trainer
    trainer = L.Trainer(accelerator=cfg.accelerator, devices=cfg.devices, strategy=cfg.strategy,
                        precision=cfg.precision, num_nodes=cfg.num_nodes, logger=False, callbacks=list(callbacks),
                        enable_model_summary=False, enable_checkpointing=False, use_distributed_sampler=True,
                        default_root_dir=params.paths.checkpoints, inference_mode=inference_mode)
    with warnings.catch_warnings():
        # The loader yields whole batches (no sampler batching), which Lightning notes every time.
        warnings.filterwarnings("ignore", message="Couldn't infer the batch indices")
        trainer.predict(module, dataloaders=dataloader, return_predictions=True)
