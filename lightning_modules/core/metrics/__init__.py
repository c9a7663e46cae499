"""Metrics shared by the methods (plain functions over tensors, and torchmetrics Metrics that sync across ranks)."""

from lightning_modules.core.metrics.fid import FrechetDistance, frechet_distance
from lightning_modules.core.metrics.generation import (
    IdentityAccuracy,
    ImageImageSimilarity,
    PromptAccuracy,
    TextImageSimilarity,
    clip_image_embeddings,
    clip_text_embeddings,
    dino_cls_embeddings,
    dominant_subject,
)
from lightning_modules.core.metrics.iou import confusion_matrix, iou_from_confusion
from lightning_modules.core.metrics.rank import cmc_map_report, evaluate_rank

__all__ = ["FrechetDistance", "IdentityAccuracy", "ImageImageSimilarity", "PromptAccuracy", "TextImageSimilarity",
           "clip_image_embeddings", "clip_text_embeddings", "cmc_map_report", "confusion_matrix",
           "dino_cls_embeddings", "dominant_subject", "evaluate_rank", "frechet_distance", "iou_from_confusion"]
