"""Loss checks every training module shares."""

from __future__ import annotations

import torch

from lightning_modules.core.errors import UserError


class NonFiniteLossError(UserError, ArithmeticError):
    """Training diverged: the loss became NaN or infinite."""


def check_finite(loss: torch.Tensor, what: str, step: int) -> torch.Tensor:
    """Stop training with a clear error instead of silently learning from NaNs."""
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(f"{what} became {loss.item()} at step {step}; lower the learning rate "
                                 "or check the inputs")
    return loss
