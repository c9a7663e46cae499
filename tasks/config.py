"""params.yaml -> typed, validated config objects.

Loaded once per stage. The active profile's overlay (``profiles.<profile>``) is merged over
the base sections first, then everything is validated by pydantic; the first problem is
reported as one line naming the key path (``train_segmenter.lr``) and what was expected.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
)

from tasks.errors import ParamsError

DEFAULT_PARAMS_FILE = "params.yaml"


class Section(BaseModel):
    # Unknown keys are errors: a misspelt knob must not be silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ordered_range(value: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    a, b = value
    if not (low < a <= b <= high):
        raise ValueError(f"expected [min, max] with {low} < min <= max <= {high}")
    return value


class PathsConfig(Section):
    data: Path = Path("data")
    metrics: Path = Path("metrics")
    plots: Path = Path("plots")
    checkpoints: Path = Path("checkpoints")
    mlflow: Path = Path("mlflow")


class MlflowConfig(Section):
    experiment: str = Field("subjectlab", min_length=1)


class TrainerConfig(Section):
    accelerator: Literal["cpu", "gpu", "cuda", "mps", "tpu", "auto"] = "cpu"
    devices: Union[PositiveInt, list[NonNegativeInt], Literal["auto"]] = 1
    strategy: str = "auto"
    precision: Literal[
        "32-true", "32", "16-mixed", "bf16-mixed", "bf16-true", "16-true", "64-true"
    ] = "32-true"
    num_nodes: PositiveInt = 1
    num_workers: NonNegativeInt = 0
    log_every_n_steps: PositiveInt = 10
    checkpoint_every_n_steps: PositiveInt = 100
    # "warn": deterministic where the backend allows it (some CUDA kernels do not).
    deterministic: Union[bool, Literal["warn"]] = "warn"


class ModelsConfig(Section):
    segmenter_encoder_weights: Optional[Path] = None

    @field_validator("segmenter_encoder_weights")
    @classmethod
    def _weights_exist(cls, value: Optional[Path]) -> Optional[Path]:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value


class ScheduleConfig(Section):
    cron: str = "0 3 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError("expected a 5-field cron expression such as '0 3 * * *'")
        return value


class SynthesizeConfig(Section):
    num_subjects: int = Field(11, ge=1, le=48)
    images_per_subject: PositiveInt = 11
    image_size: int = Field(256, ge=48, le=2048)
    num_scenes: PositiveInt = 100
    scene_size: int = Field(256, ge=32, le=4096)


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
    limit_train_batches: Union[PositiveInt, float] = 1.0
    limit_val_batches: Union[PositiveInt, float] = 1.0
    decoder_channels: list[PositiveInt] = [256, 128, 64, 32, 16]

    @field_validator("decoder_channels")
    @classmethod
    def _five_blocks(cls, value: list[int]) -> list[int]:
        if len(value) != 5:
            raise ValueError("expected 5 decoder channel counts (one per ResNet stage)")
        return value

    @field_validator("limit_train_batches", "limit_val_batches")
    @classmethod
    def _fraction_or_count(cls, value: Union[int, float]) -> Union[int, float]:
        if isinstance(value, float) and not 0.0 < value <= 1.0:
            raise ValueError("expected a fraction in (0, 1] or a whole number of batches")
        return value


class Params(Section):
    profile: str = "default"
    seed: NonNegativeInt = 0
    paths: PathsConfig = PathsConfig()
    mlflow: MlflowConfig = MlflowConfig()
    trainer: TrainerConfig = TrainerConfig()
    models: ModelsConfig = ModelsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    augment: AugmentConfig = AugmentConfig()
    train_segmenter: TrainSegmenterConfig = TrainSegmenterConfig()
    profiles: dict[str, dict[str, Any]] = {}

    def effective(self) -> dict[str, Any]:
        """The merged parameters as plain data (what MLflow records)."""
        data = self.model_dump(mode="json")
        data.pop("profiles")
        return data


def _merge(base: dict[str, Any], overlay: dict[str, Any], where: str) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        path = f"{where}.{key}"
        if key not in merged:
            raise ParamsError(f"unknown key {path} (not in the base sections)")
        if isinstance(value, dict) and isinstance(merged[key], dict):
            merged[key] = _merge(merged[key], value, path)
        else:
            merged[key] = value
    return merged


def _format_error(source: str, error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown key {where}"
    if error["type"] == "missing":
        return f"{source}: missing key {where}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {where}: {message} (got {error.get('input')!r})"


def resolve(raw: dict[str, Any], source: str = DEFAULT_PARAMS_FILE) -> Params:
    """Apply the active profile's overlay to raw params data and validate it."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    profile = raw.get("profile", "default")
    profiles = raw.get("profiles") or {}
    if not isinstance(profiles, dict):
        raise ParamsError(f"{source}: profiles: expected a mapping of profile name -> overlay")
    if profile not in profiles and profile != "default":
        known = ", ".join(sorted(profiles)) or "none"
        raise ParamsError(f"{source}: profile: unknown profile {profile!r} (known: {known})")
    overlay = profiles.get(profile) or {}
    base = {key: value for key, value in raw.items() if key != "profiles"}
    # Sections the file leaves out take their defaults, so overlays may still name them.
    defaults = Params().model_dump(mode="python")
    defaults.pop("profiles")
    for key, value in defaults.items():
        base.setdefault(key, value)
    for name, other in profiles.items():  # a typo in any profile is caught, active or not
        other = other or {}
        if not isinstance(other, dict):
            raise ParamsError(f"{source}: profiles.{name}: expected a mapping")
        try:
            _merge(base, other, f"profiles.{name}")
        except ParamsError as err:
            raise ParamsError(f"{source}: {err}") from None
    merged = _merge(base, overlay, f"profiles.{profile}")  # validated just above
    merged["profiles"] = profiles
    try:
        return Params.model_validate(merged)
    except ValidationError as err:
        raise ParamsError(_format_error(source, err.errors()[0])) from None


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read params.yaml (or another file) and return the validated, profile-merged config."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    return resolve(raw, str(path))
