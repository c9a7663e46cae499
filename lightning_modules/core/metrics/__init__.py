"""Metrics shared by the methods (plain functions over tensors)."""

from lightning_modules.core.metrics.iou import confusion_matrix, iou_from_confusion
from lightning_modules.core.metrics.rank import cmc_map_report, evaluate_rank

__all__ = ["cmc_map_report", "confusion_matrix", "evaluate_rank", "iou_from_confusion"]
