"""Collects curves during training for `dvc plots`; survives resume through checkpoints."""

from __future__ import annotations

from typing import Any

import lightning as L


class MetricsHistory(L.Callback):
    def __init__(self, every_n_steps: int = 10, train_key: str = "train/loss_step",
                 val_keys: tuple[str, ...] = ("val/loss", "val/mIoU")):
        self.every_n_steps = every_n_steps
        self.train_key = train_key
        self.val_keys = val_keys
        self.train: list[dict[str, float]] = []
        self.val: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        value = trainer.callback_metrics.get(self.train_key)
        if value is not None and (step % self.every_n_steps == 0 or step == 1):
            self.train.append({"step": step, "loss": round(float(value), 6)})

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        for key in self.val_keys:
            if key in trainer.callback_metrics:
                row[key.split("/", 1)[1]] = round(float(trainer.callback_metrics[key]), 6)
        self.val.append(row)

    def state_dict(self) -> dict[str, Any]:
        return {"train": self.train, "val": self.val}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train = list(state_dict.get("train", []))
        self.val = list(state_dict.get("val", []))
