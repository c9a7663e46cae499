"""params.yaml sections of SynthWorld's judges: train_classifier (the prompt-accuracy classifier) and
train_face_attributes (the face attribute and identity classifier)."""

from __future__ import annotations

from pydantic import Field

from tasks.core.resources import RGB, BatchEstimate
from tasks.core.machine import FLOAT32
from tasks.core.section import BatchLimit, BatchSize, Epochs, LearningRate, Section, WeightDecay

# The judge pools three times before its global pooling (lightning_modules/judges/network.py):
# below 16 px its last blocks see 2 x 2 maps. 512 px is a Stable Diffusion image at full size.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 512
# Channels of its wider blocks: a judge of 4 classes and 8 scenes needs tens, not thousands.
MAX_WIDTH = 512


class TrainClassifierConfig(Section):
    image_size: int = Field(32, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)
    width: int = Field(32, ge=2, le=MAX_WIDTH)
    batch_size: BatchSize = 32
    lr: LearningRate = 1e-3
    weight_decay: WeightDecay = 1e-4
    max_epochs: Epochs = 24
    limit_train_batches: BatchLimit = 1.0
    limit_val_batches: BatchLimit = 1.0

    def batch_memory(self) -> BatchEstimate:
        """The training batch at least: its images, and the full-resolution feature map of the first
        block (width / 2 channels) that the backward pass keeps."""
        per_pixel = RGB + max(1, self.width // 2) * FLOAT32
        return BatchEstimate(f"train_classifier.batch_size {self.batch_size} x train_classifier.image_size "
                             f"{self.image_size}^2", self.batch_size * self.image_size ** 2 * per_pixel)


class TrainFaceAttributesConfig(Section):
    """SynthWorld's face judge: one head per face attribute and one for the identity, trained on
    the real faces of data/faces (split train) only; its embedding is the faces' FID feature."""

    image_size: int = Field(64, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)
    width: int = Field(32, ge=2, le=MAX_WIDTH)   # the embedding has 8 x width channels
    batch_size: BatchSize = 32
    lr: LearningRate = 2e-3
    weight_decay: WeightDecay = 1e-4
    # The identity cross-entropy's weight beside the attributes' (1 each).
    identity_weight: float = Field(1.0, ge=0.0, le=100.0)
    max_epochs: Epochs = 8
    limit_train_batches: BatchLimit = 1.0
    limit_val_batches: BatchLimit = 1.0

    def batch_memory(self) -> BatchEstimate:
        """The training batch's images and the first block's full-resolution feature map."""
        per_pixel = RGB + max(1, self.width // 2) * FLOAT32
        return BatchEstimate(f"train_face_attributes.batch_size {self.batch_size} x train_face_attributes.image_size "
                             f"{self.image_size}^2", self.batch_size * self.image_size ** 2 * per_pixel)
