"""Collects curves during training for `dvc plots`; survives resume through checkpoints."""

from __future__ import annotations

from typing import Any, Optional

import lightning as L


class MetricsHistory(L.Callback):
    def __init__(self, every_n_steps: int = 10, train_key: str = "train/loss_step",
                 val_keys: tuple[str, ...] = ("val/loss", "val/mIoU")):
        self.every_n_steps = every_n_steps
        self.train_key = train_key
        self.val_keys = val_keys
        self.train: list[dict[str, float]] = []
        self.val: list[dict[str, float]] = []
        # The running mean of the training loss over the current epoch, kept in the checkpoint:
        # Lightning's own epoch mean restarts from nothing when a run resumes mid-epoch.
        self.epoch = -1
        self.epoch_loss_sum = 0.0
        self.epoch_batches = 0
        self.last_epoch_loss: Optional[float] = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            if trainer.current_epoch != self.epoch:
                self.epoch, self.epoch_loss_sum, self.epoch_batches = trainer.current_epoch, 0.0, 0
            self.epoch_loss_sum += float(loss)
            self.epoch_batches += 1
        step = trainer.global_step
        value = trainer.callback_metrics.get(self.train_key)
        if value is not None and (step % self.every_n_steps == 0 or step == 1):
            self.train.append({"step": step, "loss": round(float(value), 6)})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.epoch == trainer.current_epoch and self.epoch_batches:
            self.last_epoch_loss = self.epoch_loss_sum / self.epoch_batches

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key in self.val_keys:
            if key in trainer.callback_metrics:
                row[key.split("/", 1)[1]] = round(float(trainer.callback_metrics[key]), 6)
        self.val.append(row)

    def final_epoch_loss(self) -> Optional[float]:
        """The mean training loss of the last whole epoch (None before one has ended)."""
        return None if self.last_epoch_loss is None else round(self.last_epoch_loss, 4)

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val, "epoch": self.epoch, "epoch_loss_sum": self.epoch_loss_sum,
                "epoch_batches": self.epoch_batches, "last_epoch_loss": self.last_epoch_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train = list(state_dict.get("train", []))
        self.val = list(state_dict.get("val", []))
        self.epoch = state_dict.get("epoch", -1)
        self.epoch_loss_sum = state_dict.get("epoch_loss_sum", 0.0)
        self.epoch_batches = state_dict.get("epoch_batches", 0)
        self.last_epoch_loss = state_dict.get("last_epoch_loss")
