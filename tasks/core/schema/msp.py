"""params.yaml sections of the MSP-Diffusion stages: augment (A.1, Disen-Mix images), train_segmenter (A.4)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator

from tasks.core.section import BatchLimit, Section


def _ordered_range(value: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    a, b = value
    if not (low < a <= b <= high):
        raise ValueError(f"expected [min, max] with {low} < min <= max <= {high}")
    return value


class AugmentConfig(Section):
    subjects_dir: Path = Path("data/synthworld/subjects")
    scenes_dir: Path = Path("data/synthworld/scenes")
    canvas_size: int = Field(128, ge=32, le=4096)
    augmentations_per_subject: PositiveInt = 128
    zoom_range: tuple[float, float] = (0.4, 0.5)
    crop_probability: float = Field(0.1, ge=0.0, le=1.0)
    crop_range: tuple[float, float] = (0.65, 0.95)
    val_count: NonNegativeInt = 194
    test_count: NonNegativeInt = 150
    mix_sizes: list[int] = [2, 3]
    mixed_per_combination: NonNegativeInt = 2
    max_combinations: NonNegativeInt = 40
    mix_prefix: str = "a picture is divided into several regions"
    grid_samples: PositiveInt = 16

    @field_validator("zoom_range", "crop_range")
    @classmethod
    def _unit_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        return _ordered_range(value, 0.0, 1.0)

    @field_validator("mix_sizes")
    @classmethod
    def _mix_sizes(cls, value: list[int]) -> list[int]:
        if any(size < 2 for size in value):
            raise ValueError("every mixed image combines at least 2 subjects")
        return value


class TrainSegmenterConfig(Section):
    batch_size: PositiveInt = 4
    lr: PositiveFloat = 1e-4
    max_epochs: PositiveInt = 14
    limit_train_batches: BatchLimit = 1.0
    limit_val_batches: BatchLimit = 1.0
    decoder_channels: list[PositiveInt] = [256, 128, 64, 32, 16]

    @field_validator("decoder_channels")
    @classmethod
    def _five_blocks(cls, value: list[int]) -> list[int]:
        if len(value) != 5:
            raise ValueError("expected 5 decoder channel counts (one per ResNet stage)")
        return value
