"""params.yaml -> typed, validated config objects.

Loaded once per stage. The active profile's overlay (``profiles.<profile>``) is merged over
the base sections first, then everything is validated by pydantic; the first problem is
reported as one line naming the key path (``train_segmenter.lr``) and what was expected.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (
    AfterValidator,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    field_validator,
    model_validator,
)

from tasks.config_base import Section
from tasks.config_diffusion import (  # noqa: F401  (TINY is part of this module's interface)
    TINY,
    ClassImagesConfig,
    FinetuneConfig,
    PretrainBaseConfig,
    PretrainClipConfig,
    ZooConfig,
)
from tasks.errors import ParamsError

DEFAULT_PARAMS_FILE = "params.yaml"


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


OSNET_VARIANTS = Literal["osnet_x1_0", "osnet_x0_75", "osnet_x0_5", "osnet_x0_25", "osnet_ibn_x1_0",
                         "osnet_ain_x1_0", "osnet_ain_x0_75", "osnet_ain_x0_5", "osnet_ain_x0_25"]


class ModelsConfig(Section):
    segmenter_encoder_weights: Optional[Path] = None
    reid_backbone: OSNET_VARIANTS = "osnet_x0_25"
    reid_backbone_weights: Optional[Path] = None
    # clean: SynthWorld's clean face renders (an oracle restorer); bicubic: no restoration;
    # or the path of an exported face-restoration model (torch.export .pt2 or TorchScript; e.g. GPEN).
    face_restorer: str = "clean"

    @field_validator("segmenter_encoder_weights", "reid_backbone_weights")
    @classmethod
    def _weights_exist(cls, value: Optional[Path]) -> Optional[Path]:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @field_validator("face_restorer")
    @classmethod
    def _restorer(cls, value: str) -> str:
        if value not in ("clean", "bicubic") and not Path(value).is_file():
            raise ValueError("expected clean, bicubic or the path of an exported restorer model (file not found)")
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


class SynthesizePersonsConfig(Section):
    """SynthWorld persons: cloth-changing identities for DeSKPro (PRCC / Celeb-reID-light protocols)."""

    num_train_ids: PositiveInt = 100
    num_test_ids: PositiveInt = 100
    train_outfits: int = Field(3, ge=2)        # outfits per training identity
    cameras: int = Field(3, ge=3)              # camera views per outfit (train); PRCC needs A, B, C
    prcc_images_per_camera: PositiveInt = 2
    celeb_outfits: int = Field(4, ge=2)        # Celeb-reID-light: every image in different clothes
    render_height: int = Field(256, ge=64, le=1024)
    render_width: int = Field(128, ge=32, le=512)
    degrade_factor: int = Field(4, ge=1, le=16)  # surveillance images are render size / factor
    face_size: int = Field(32, ge=8, le=256)     # the clean (restored) face crop the teacher sees


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


def _fraction_or_count(value: Union[int, float]) -> Union[int, float]:
    if isinstance(value, float) and not 0.0 < value <= 1.0:
        raise ValueError("expected a fraction in (0, 1] or a whole number of batches")
    return value


# A fraction of the batches of an epoch, or a whole number of them.
BatchLimit = Annotated[Union[PositiveInt, float], AfterValidator(_fraction_or_count)]


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


class ReidConfig(Section):
    """Shared by the DeSKPro stages: data, input sizes, batches, optimisation, eq. 3-7 constants."""

    dataset_dir: Path = Path("data/persons")   # a Market-1501-style folder (see README)
    image_size: tuple[PositiveInt, PositiveInt] = (128, 64)   # height, width
    face_size: int = Field(32, ge=8, le=256)
    embedding_dim: PositiveInt = 128
    identities_per_batch: int = Field(16, ge=2)   # P
    images_per_identity: int = Field(4, ge=2)     # K
    lr: PositiveFloat = 6e-4
    weight_decay: float = Field(5e-4, ge=0)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    triplet_margin: PositiveFloat = 0.3
    # Section 3.1: epsilon 0.1, lambda 7; tau 5 and alpha 0.7 for Celeb-reID(-light),
    # tau 1 and alpha 0.8 for PRCC.
    cloth_mask_epsilon: float = Field(0.1, ge=0, le=1)
    attention_loss_weight: float = Field(7.0, ge=0)
    temperature: PositiveFloat = 5.0
    alpha: float = Field(0.7, ge=0, le=1)


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
    max_epochs: PositiveInt = 30
    limit_train_batches: BatchLimit = 1.0


class TrainReidConfig(Section):
    variant: Variant = Variant()
    max_epochs: PositiveInt = 30
    limit_train_batches: BatchLimit = 1.0


class EvaluateReidConfig(Section):
    max_rank: PositiveInt = 50
    batch_size: PositiveInt = 64
    retrieval_queries: PositiveInt = 6    # rows of the retrieval picture per protocol
    attention_images: PositiveInt = 4     # images in the Fig. 3 attention picture


class ReidAblationConfig(Section):
    max_epochs: PositiveInt = 30
    limit_train_batches: BatchLimit = 1.0
    rows: dict[str, Variant] = {}

    @field_validator("rows")
    @classmethod
    def _names(cls, value: dict[str, Variant]) -> dict[str, Variant]:
        for name in value:
            if not name.replace("_", "").isalnum():
                raise ValueError(f"row name {name!r}: use letters, digits and underscores")
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
    synthesize_persons: SynthesizePersonsConfig = SynthesizePersonsConfig()
    augment: AugmentConfig = AugmentConfig()
    train_segmenter: TrainSegmenterConfig = TrainSegmenterConfig()
    reid: ReidConfig = ReidConfig()
    train_reid_teacher: TrainReidTeacherConfig = TrainReidTeacherConfig()
    train_reid: TrainReidConfig = TrainReidConfig()
    evaluate_reid: EvaluateReidConfig = EvaluateReidConfig()
    reid_ablation: ReidAblationConfig = ReidAblationConfig()
    zoo: ZooConfig = ZooConfig()
    pretrain_base: PretrainBaseConfig = PretrainBaseConfig()
    pretrain_clip: PretrainClipConfig = PretrainClipConfig()
    class_images: ClassImagesConfig = ClassImagesConfig()
    finetune: FinetuneConfig = FinetuneConfig()
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
