"""params.yaml sections of the DeSKPro stages: the shared reid section, teacher, student, evaluation, Table 3."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from tasks.core.section import (
    BatchLimit,
    BatchSize,
    Channels,
    Epochs,
    LearningRate,
    LossWeight,
    Probability,
    Section,
    TableRows,
    TableSection,
    WeightDecay,
)

# The truncated OSNet and the stripes of the MBN part branch leave an empty feature map for
# inputs under 16 pixels a side (body images and faces go through the same network).
MIN_REID_SIDE = 16
ReidSide = Annotated[int, Field(ge=MIN_REID_SIDE, le=1024)]


class ReidConfig(Section):
    """Shared by the DeSKPro stages: data, input sizes, batches, optimisation, eq. 3-7 constants."""

    dataset_dir: Path = Path("data/persons")   # a Market-1501-style folder (see README)
    image_size: tuple[ReidSide, ReidSide] = (128, 64)   # height, width
    face_size: int = Field(32, ge=MIN_REID_SIDE, le=256)
    embedding_dim: Channels = 128
    identities_per_batch: int = Field(16, ge=2, le=1024)   # P
    images_per_identity: int = Field(4, ge=2, le=256)      # K
    lr: LearningRate = 6e-4
    weight_decay: WeightDecay = 5e-4
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    # A distance between features (torchreid: 0.3); far beyond the distances features have,
    # every triplet violates it and the loss no longer ranks anything.
    triplet_margin: float = Field(0.3, gt=0, le=100)
    # Section 3.1: epsilon 0.1, lambda 7; tau 5 and alpha 0.7 for Celeb-reID(-light),
    # tau 1 and alpha 0.8 for PRCC.
    cloth_mask_epsilon: Probability = 0.1
    attention_loss_weight: LossWeight = 7.0
    temperature: float = Field(5.0, gt=0, le=1000)
    alpha: Probability = 0.7


class Variant(Section):
    """A row of DeSKPro's Table 3."""

    global_stream: bool = True
    csa: bool = True
    attention_loss: bool = True
    face_stream: Literal["none", "student", "teacher"] = "student"
    knowledge_propagation: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> "Variant":
        if self.csa and not self.global_stream:
            raise ValueError("csa needs global_stream: true")
        if self.attention_loss and not self.csa:
            raise ValueError("attention_loss supervises the CSA attention: it needs csa: true")
        if self.knowledge_propagation and self.face_stream != "student":
            raise ValueError("knowledge_propagation trains a student: it needs face_stream: student")
        if not self.global_stream and self.face_stream == "none":
            raise ValueError("needs global_stream: true or a face_stream")
        return self

    @property
    def trains_something(self) -> bool:
        """False for the teacher alone (Table 3, model 6): it was trained by its own stage."""
        return self.global_stream or self.face_stream == "student"


class TrainReidTeacherConfig(Section):
    max_epochs: Epochs = 30
    limit_train_batches: BatchLimit = 1.0


class TrainReidConfig(Section):
    variant: Variant = Variant()
    max_epochs: Epochs = 30
    limit_train_batches: BatchLimit = 1.0


class EvaluateReidConfig(Section):
    max_rank: int = Field(50, ge=1, le=10_000)   # CMC ranks reported (torchreid: 50)
    batch_size: BatchSize = 64
    retrieval_queries: int = Field(6, ge=1, le=256)   # rows of the retrieval picture per protocol
    attention_images: int = Field(4, ge=1, le=256)    # images in the Fig. 3 attention picture


class ReidAblationConfig(TableSection):
    max_epochs: Epochs = 30
    limit_train_batches: BatchLimit = 1.0
    rows: Annotated[dict[str, Variant], TableRows] = Field({}, max_length=256)
