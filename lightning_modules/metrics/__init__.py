"""Metrics shared by the methods (plain functions over tensors)."""

from lightning_modules.metrics.iou import confusion_matrix, iou_from_confusion

__all__ = ["confusion_matrix", "iou_from_confusion"]
