"""Building blocks every training stage shares: loss checks and a metrics history callback."""

from lightning_modules.training.history import MetricsHistory
from lightning_modules.training.losses import NonFiniteLossError, check_finite

__all__ = ["MetricsHistory", "NonFiniteLossError", "check_finite"]
