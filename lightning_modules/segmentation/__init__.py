"""MSP-Diffusion's subject-aware segmentation network (SAL guidance, SAS metric)."""

from lightning_modules.segmentation.data import (
    SegmentationItem,
    SubjectSegmentationDataModule,
    SubjectSegmentationDataset,
)
from lightning_modules.segmentation.module import SubjectSegmenter, balanced_class_weights, evaluate_iou
from lightning_modules.segmentation.unet import ResNet34UNet

__all__ = ["ResNet34UNet", "SegmentationItem", "SubjectSegmentationDataModule", "SubjectSegmentationDataset",
           "SubjectSegmenter", "balanced_class_weights", "evaluate_iou"]
