"""Optimizers and learning-rate schedules every training module shares."""

from __future__ import annotations

import math
from typing import Any, Iterable, Union

import lightning as L
import torch

ParamsOrGroups = Union[Iterable[torch.nn.Parameter], Iterable[dict[str, Any]]]


def _fusable(params_or_groups: list) -> bool:
    """Whether torch's fused Adam kernels take these parameters: floating, on a CPU or CUDA device."""
    tensors: list[torch.Tensor] = []
    for entry in params_or_groups:
        tensors.extend(entry["params"] if isinstance(entry, dict) else [entry])
    return bool(tensors) and all(t.is_floating_point() and t.device.type in ("cpu", "cuda") for t in tensors)


def adam(params_or_groups: ParamsOrGroups, *, decoupled_weight_decay: bool = True, **kwargs) -> torch.optim.Optimizer:
    """AdamW (or Adam with L2 decay when `decoupled_weight_decay` is false), fused where it can be.

    The fused kernel updates every parameter in one pass. The per-tensor loop torch uses by
    default on a CPU cost a fifth of a segmenter step (21M parameters, 0.09 of 0.44 s); the
    fused step costs 0.02 s. The update is the same algorithm; only rounding differs.
    """
    entries = list(params_or_groups)
    kind = torch.optim.AdamW if decoupled_weight_decay else torch.optim.Adam
    return kind(entries, fused=_fusable(entries), **kwargs)


def cosine_schedule(module: L.LightningModule, optimizer: torch.optim.Optimizer, warmup_steps: int = 0) -> dict:
    """A per-step cosine decay to 0 over the whole run, after a linear warm-up; Lightning's form.

    The run's length is read at the first step, not here: asking Lightning for it now would
    build the train loader before a resumed run's checkpoint restores the loader's place.
    """
    run_length: list[int] = []

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if step == 0:
            return 1.0
        if not run_length:
            run_length.append(max(1, int(module.trainer.estimated_stepping_batches)))
        total = max(1, run_length[0] - warmup_steps)
        done = min(step - warmup_steps, total)
        return 0.5 * (1.0 + math.cos(math.pi * done / total))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
