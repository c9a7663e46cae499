"""params.yaml sections of the MSP-Diffusion stages: augment (A.1, Disen-Mix images), train_segmenter (A.4)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field, field_validator, model_validator

from tasks.core.section import (
    BatchLimit,
    BatchSize,
    Channels,
    MAX_INFERENCE_STEPS,
    Count,
    Epochs,
    GuidanceScale,
    InferenceSteps,
    LearningRate,
    OptionalCount,
    Probability,
    Section,
    TableRows,
    TableSection,
)

# Disen-Mix divides the canvas into one region per subject: beyond a handful the regions are
# too small to hold a subject (the paper mixes 2 and 3).
MAX_MIX_SIZE = 8
# A share of the canvas (zoom) or of the subject (crop).
Share = Annotated[float, Field(gt=0, le=1)]


def _ordered_range(value: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    a, b = value
    if not (low < a <= b <= high):
        raise ValueError(f"expected [min, max] with {low} < min <= max <= {high}")
    return value


class AugmentConfig(Section):
    subjects_dir: Path = Path("data/synthworld/subjects")
    scenes_dir: Path = Path("data/synthworld/scenes")
    canvas_size: int = Field(128, ge=32, le=4096)
    augmentations_per_subject: Count = 128
    zoom_range: tuple[Share, Share] = (0.4, 0.5)
    crop_probability: Probability = 0.1
    crop_range: tuple[Share, Share] = (0.65, 0.95)
    val_count: OptionalCount = 194
    test_count: OptionalCount = 150
    # every mixed image combines 2 to MAX_MIX_SIZE subjects
    mix_sizes: list[Annotated[int, Field(ge=2, le=MAX_MIX_SIZE)]] = Field([2, 3], max_length=MAX_MIX_SIZE)
    mixed_per_combination: int = Field(2, ge=0, le=1000)
    max_combinations: OptionalCount = 40
    mix_prefix: str = Field("a picture is divided into several regions", max_length=1000)
    grid_samples: int = Field(16, ge=1, le=256)   # tiles of the sample pictures

    @field_validator("zoom_range", "crop_range")
    @classmethod
    def _unit_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _ordered_range(value, 0.0, 1.0)


def five_decoder_blocks(value: list[int]) -> list[int]:
    """A ResNet-34 U-Net's decoder has one block per encoder stage: five channel counts."""
    if len(value) != 5:
        raise ValueError("expected 5 decoder channel counts (one per ResNet stage)")
    return value


class TrainSegmenterConfig(Section):
    # The side images are resized to for training and judging (a multiple of 32: the U-Net
    # halves five times); null trains at the augment canvas.
    image_size: Optional[Annotated[int, Field(ge=32, le=4096, multiple_of=32)]] = None
    batch_size: BatchSize = 4
    lr: LearningRate = 1e-4
    # Cross-entropy class weights (most frequent class's pixels / class's pixels) ** power;
    # 0 is the paper's plain cross-entropy.
    class_weight_power: Annotated[float, Field(ge=0.0, le=2.0)] = 0.0
    max_epochs: Epochs = 14
    limit_train_batches: BatchLimit = 1.0
    limit_val_batches: BatchLimit = 1.0
    decoder_channels: list[Channels] = [256, 128, 64, 32, 16]

    _five_blocks = field_validator("decoder_channels")(five_decoder_blocks)


class MspRow(Section):
    """One configuration of MSP's Table 1 (the ablation switches, MSP 3)."""

    scaffolding: bool = False       # the scaffolding image refills each segment's outside
    global_diffuser: bool = True
    sal: bool = False
    controlnet: bool = False        # steered by msp.controlnet.model from each composition's pose image


class TrainControlnetConfig(Section):
    """ControlNet training on SynthWorld's pose pairs (`train_controlnet@<condition>`): the tiny
    model's ControlNet, initialised from the base model's UNet. The last `eval_pairs` pairs are
    held out: drawn with and without ControlNet, the subject segmenter's foreground is compared
    with where the pose put the figures."""

    conditions: list[Literal["openpose"]] = Field([], max_length=1)   # the family runs over these
    pairs: Path = Path("data/synthworld/poses")
    batch_size: BatchSize = 16
    steps: Annotated[int, Field(ge=1, le=1_000_000)] = 1500
    lr: LearningRate = 1e-3
    weight_decay: Annotated[float, Field(ge=0, le=1)] = 0.0
    caption_dropout: Probability = 0.1
    eval_pairs: Count = 48
    sample_steps: InferenceSteps = 20
    guidance_scale: GuidanceScale = 3.0


class MspControlnet(Section):
    """What the ControlNet rows read (the `msp_controlnet` family)."""

    # The train_controlnet@openpose stage writes it; or a real OpenPose ControlNet's directory
    # (diffusers format, for the base model's architecture).
    model: Path = Path("data/models/controlnet/openpose")
    # Compositions with a pose image each (synthesize writes twins of msp.compositions there).
    compositions: Path = Path("data/synthworld/compositions_openpose")
    conditioning_scale: Annotated[float, Field(ge=0, le=10)] = 1.0


class MspConfig(TableSection):
    """MSP-Diffusion's generation from segment layouts and its Table 1 (MSP 2(ii)-(iv), 3, A.4-A.6).

    `rows` are the configurations of ours (the `msp` stage family, from the finetune stage's
    model); `baselines` are rows of the personalization table whose models draw one prompt
    naming every subject, without a layout (the `msp_baseline` family)."""

    compositions: Path = Path("data/synthworld/compositions")   # a folder of composition YAMLs
    compositions_per_count: Count = 5     # of each subject count (n1_*, n2_*, ...), in name order
    images_per_composition: Count = 4     # seeds per composition
    inference_steps: InferenceSteps = 20
    guidance_scale: GuidanceScale = 7.5
    scaffolding_fraction: Probability = 0.3     # k / steps: the scaffolding stage
    global_steps: Annotated[int, Field(ge=0, le=MAX_INFERENCE_STEPS)] = 2
    global_weight: Probability = 0.5
    sal_scale: Annotated[float, Field(ge=0, le=1e6)] = 1000.0
    sal_range: tuple[Probability, Probability] = (0.0, 0.5)
    baselines: list[str] = Field([], max_length=16)
    controlnet: MspControlnet = MspControlnet()
    controlnet_table: list[str] = Field([], max_length=256)   # rows with controlnet: true that run
    rows: Annotated[dict[str, MspRow], TableRows] = Field({}, max_length=256)

    @model_validator(mode="after")
    def _controlnet_rows_apart(self) -> "MspConfig":
        # The two families differ in their inputs (a ControlNet, the compositions with poses).
        for key, listed, wanted in (("table", self.table, False), ("controlnet_table", self.controlnet_table, True)):
            for name in listed:
                if name not in self.rows:
                    raise ValueError(f"{key}: {name!r} is not a key of rows (rows: {', '.join(self.rows)})")
                if self.rows[name].controlnet != wanted:
                    raise ValueError(f"{key}: row {name!r} has controlnet: {str(not wanted).lower()}; rows with "
                                     f"controlnet: {str(wanted).lower()} belong in "
                                     f"{'controlnet_table' if not wanted else 'table'}")
        repeated = sorted({b for b in self.controlnet_table if self.controlnet_table.count(b) > 1})
        if repeated:
            raise ValueError(f"controlnet_table: {repeated[0]} listed more than once")
        return self

    @model_validator(mode="after")
    def _baselines_apart(self) -> "MspConfig":
        both = sorted(set(self.baselines) & set(self.rows))
        if both:
            raise ValueError(f"baselines: {both[0]!r} is also a key of rows; the two write to data/msp/<name>")
        repeated = sorted({b for b in self.baselines if self.baselines.count(b) > 1})
        if repeated:
            raise ValueError(f"baselines: {repeated[0]} listed more than once")
        return self

    @field_validator("sal_range")
    @classmethod
    def _sal_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[0] >= value[1]:
            raise ValueError("expected [start, end] fractions of the steps with start < end")
        return value
