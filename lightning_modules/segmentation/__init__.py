"""MSP-Diffusion's subject-aware segmentation network (SAL guidance, SAS metric)."""

from lightning_modules.segmentation.data import (
    SegmentationItem,
    SubjectSegmentationDataModule,
    SubjectSegmentationDataset,
)
from lightning_modules.segmentation.module import SubjectSegmenter, evaluate_iou
from lightning_modules.segmentation.unet import ResNet34UNet

__all__ = ["ResNet34UNet", "SegmentationItem", "SubjectSegmentationDataModule", "SubjectSegmentationDataset",
           "SubjectSegmenter", "evaluate_iou"]
