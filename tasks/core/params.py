"""params.yaml -> typed, validated config objects.

params.yaml holds the effective values: it is composed from conf/ (the base sections plus the
active profile, tasks/core/profiles.py) by `dvc exp run` or `subjectlab params`, and DVC
reads each stage's sections from it. A stage loads it once and pydantic validates every
section; the first problem is reported as one line naming the key path
(``train_segmenter.lr``) and what was expected.

The shared sections live here; each method's sections live beside its stages
(tasks/<method>/params.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, NonNegativeInt, PositiveInt, ValidationError, field_validator

from tasks.core.errors import ParamsError
from tasks.core.section import Section
from tasks.core.schema.deskpro import (
    EvaluateReidConfig,
    ReidAblationConfig,
    ReidConfig,
    TrainReidConfig,
    TrainReidTeacherConfig,
    Variant,
)
from tasks.core.schema.diffusion import (
    TINY,
    ClassImagesConfig,
    FinetuneConfig,
    PretrainBaseConfig,
    PretrainClipConfig,
    ZooConfig,
)
from tasks.core.schema.msp import AugmentConfig, TrainSegmenterConfig
from tasks.core.schema.synthworld import SynthesizeConfig, SynthesizePersonsConfig

__all__ = ["DEFAULT_PARAMS_FILE", "ORACLE_RESTORER", "Params", "TINY", "Variant", "load_params", "validate"]

DEFAULT_PARAMS_FILE = "params.yaml"
# models.face_restorer: SynthWorld's clean face renders, an oracle restorer no real system has.
ORACLE_RESTORER = "clean"


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
    face_restorer: str = ORACLE_RESTORER

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


class Params(Section):
    profile: str = "default"     # the name of the profile params.yaml was composed with
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

    def effective(self) -> dict[str, Any]:
        """The parameters as plain data (what MLflow records)."""
        return self.model_dump(mode="json")


def _format_error(source: str, error: dict[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown key {where}"
    if error["type"] == "missing":
        return f"{source}: missing key {where}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{source}: {where}: {message} (got {error.get('input')!r})"


def validate(raw: Any, source: str = DEFAULT_PARAMS_FILE) -> Params:
    """Validate params data (a composed params.yaml); the first problem as a ParamsError."""
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_error(source, err.errors()[0])) from None


def read_yaml(path: Path) -> Any:
    """A YAML file's data; a syntax error as one ParamsError line naming the file and line."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read params.yaml (or another composed file) and return the validated config."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (compose it: subjectlab params)")
    return validate(read_yaml(path), str(path))
