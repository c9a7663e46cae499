"""params.yaml -> typed, validated config objects.

params.yaml holds the effective values: it is composed from conf/ (the base sections plus the
active profile, tasks/core/profiles.py) by `dvc exp run` or `subjectlab params`, and DVC
reads each stage's sections from it. A stage loads it once and pydantic validates every
section; the first problem is reported as one line naming the key path
(``train_segmenter.lr``) and what was expected. A params file states every key of every
section: a stage never runs on a default the file does not show. On load, the whole file is
also checked against the machine that runs it (the trainer settings, every batch's memory).

The shared sections live here; each method's sections live beside its stages
(tasks/<method>/params.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import AfterValidator, BaseModel, Field, ValidationError, field_validator, model_validator

from tasks.core.errors import ParamsError
from tasks.core.hardware import ACCELERATORS, PRECISIONS, check_strategy_name, check_trainer
from tasks.core.resources import batch_memory, check_batches
from tasks.core.section import MAX_STEPS, Section
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
    EvaluateBaseConfig,
    FinetuneConfig,
    PersonalizationConfig,
    PretrainBaseConfig,
    PretrainClipConfig,
    PretrainDinoConfig,
    ZooConfig,
)
from tasks.core.schema.eclipsed import EclipsedConfig, TrainFacePartsConfig, TrainStyleganConfig
from tasks.core.schema.judges import TrainClassifierConfig, TrainFaceAttributesConfig
from tasks.core.schema.msp import AugmentConfig, MspConfig, TrainControlnetConfig, TrainSegmenterConfig
from tasks.core.schema.synthworld import SynthesizeConfig, SynthesizeFacesConfig, SynthesizePersonsConfig

__all__ = ["DEFAULT_PARAMS_FILE", "ORACLE_RESTORER", "Params", "TINY", "Variant", "load_params", "validate"]

DEFAULT_PARAMS_FILE = "params.yaml"
COMPOSE_HINT = "compose a complete params file: subjectlab params"
# Lightning seeds every generator with a 32-bit seed and silently replaces a larger one.
MAX_SEED = 2**32 - 1
# Processes and machines of one training run: far above any cluster's, checked against this
# machine on load (tasks/core/hardware.py).
MAX_DEVICES = 1024
MAX_NODES = 10_000
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
    """Lightning's Trainer hardware arguments; the names and values are Lightning's own."""

    accelerator: Literal[ACCELERATORS] = "cpu"
    devices: Union[Annotated[int, Field(ge=1, le=MAX_DEVICES)],
                   Annotated[list[Annotated[int, Field(ge=0, lt=MAX_DEVICES)]], Field(min_length=1)],
                   Literal["auto"]] = 1
    strategy: Annotated[str, AfterValidator(check_strategy_name)] = "auto"
    precision: Literal[PRECISIONS] = "32-true"
    num_nodes: int = Field(1, ge=1, le=MAX_NODES)
    num_workers: int = Field(0, ge=0, le=MAX_DEVICES)
    log_every_n_steps: int = Field(10, ge=1, le=MAX_STEPS)
    checkpoint_every_n_steps: int = Field(100, ge=1, le=MAX_STEPS)
    # "warn": deterministic where the backend allows it (some CUDA kernels do not).
    deterministic: Union[bool, Literal["warn"]] = "warn"

    def check_this_machine(self) -> None:
        check_trainer(self.accelerator, self.devices, self.strategy, self.precision, self.num_nodes, self.num_workers)


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

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("expected an IANA time zone such as UTC or Europe/Paris") from None
        return value


class Params(Section):
    profile: str = "default"     # the name of the profile params.yaml was composed with
    seed: int = Field(0, ge=0, le=MAX_SEED)
    paths: PathsConfig = PathsConfig()
    mlflow: MlflowConfig = MlflowConfig()
    trainer: TrainerConfig = TrainerConfig()
    models: ModelsConfig = ModelsConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    synthesize: SynthesizeConfig = SynthesizeConfig()
    synthesize_persons: SynthesizePersonsConfig = SynthesizePersonsConfig()
    synthesize_faces: SynthesizeFacesConfig = SynthesizeFacesConfig()
    augment: AugmentConfig = AugmentConfig()
    train_segmenter: TrainSegmenterConfig = TrainSegmenterConfig()
    train_classifier: TrainClassifierConfig = TrainClassifierConfig()
    train_face_attributes: TrainFaceAttributesConfig = TrainFaceAttributesConfig()
    train_face_parts: TrainFacePartsConfig = TrainFacePartsConfig()
    train_stylegan: TrainStyleganConfig = TrainStyleganConfig()
    eclipsed: EclipsedConfig = EclipsedConfig()
    reid: ReidConfig = ReidConfig()
    train_reid_teacher: TrainReidTeacherConfig = TrainReidTeacherConfig()
    train_reid: TrainReidConfig = TrainReidConfig()
    evaluate_reid: EvaluateReidConfig = EvaluateReidConfig()
    reid_ablation: ReidAblationConfig = ReidAblationConfig()
    zoo: ZooConfig = ZooConfig()
    pretrain_base: PretrainBaseConfig = PretrainBaseConfig()
    pretrain_clip: PretrainClipConfig = PretrainClipConfig()
    pretrain_dino: PretrainDinoConfig = PretrainDinoConfig()
    class_images: ClassImagesConfig = ClassImagesConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    evaluate_base: EvaluateBaseConfig = EvaluateBaseConfig()
    personalization: PersonalizationConfig = PersonalizationConfig()
    msp: MspConfig = MspConfig()
    train_controlnet: TrainControlnetConfig = TrainControlnetConfig()

    @model_validator(mode="after")
    def _msp_baselines_run(self) -> "Params":
        # A baseline row draws from a personalization row's model: that row must run.
        for name in self.msp.baselines:
            if name not in self.personalization.table:
                raise ValueError(f"msp.baselines: {name!r} is not a row of personalization.table "
                                 f"({', '.join(self.personalization.table) or 'none'})")
        # The default ControlNet is the train_controlnet stage's: its family must train it.
        trained = Path(str(self.paths.data)) / "models" / "controlnet"
        model = self.msp.controlnet.model
        if self.msp.controlnet_table and model.parent == trained and model.name not in self.train_controlnet.conditions:
            raise ValueError(f"msp.controlnet_table runs, but msp.controlnet.model {model} is written by "
                             f"train_controlnet@{model.name}, which train_controlnet.conditions does not list")
        return self

    def effective(self) -> dict[str, Any]:
        """The parameters as plain data (what MLflow records)."""
        return self.model_dump(mode="json")

    def check_this_machine(self) -> None:
        """The trainer settings and every training batch against this machine. Part of validation,
        as the schema is: every stage checks the whole file, so that a batch that cannot fit
        stops the pipeline before its first stage, not an hour into it."""
        self.trainer.check_this_machine()
        check_batches(batch_memory(self.trainer, self.augment, self.train_segmenter, self.reid,
                                   self.evaluate_reid, self.zoo, self.pretrain_base, self.pretrain_clip,
                                   self.finetune) + [self.train_classifier.batch_memory(),
                                                     self.train_face_attributes.batch_memory(),
                                                     self.train_face_parts.batch_memory(),
                                                     self.train_stylegan.batch_memory()], self.trainer)


def _format_error(source: str, error: dict[str, Any]) -> str:
    # pydantic adds the member of a union it tried ("constrained-int") to the path: not a key
    loc = [str(part) for part in error["loc"] if not isinstance(part, str) or part.replace("_", "").isalnum()]
    value = error.get("input")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{source}: unknown key {'.'.join(loc)}"
    if error["type"] == "missing":
        return f"{source}: missing key {'.'.join(loc)}"
    if isinstance(value, dict):
        # A check across a section's keys names the key it is about first ("warmup_steps: ...");
        # the key joins the path, and the section's whole mapping is not echoed back.
        key, _, rest = message.partition(": ")
        if not loc and "." in key and rest:
            return f"{source}: {message}"   # a check across sections names its key path itself
        if key in value and rest:
            return f"{source}: {'.'.join([*loc, key])}: {rest} (got {value[key]!r})"
        return f"{source}: {'.'.join(loc) or '(top level)'}: {message}"
    return f"{source}: {'.'.join(loc) or '(top level)'}: {message} (got {value!r})"


def _section_type(annotation: Any) -> Optional[type[BaseModel]]:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _first_missing(model: type[BaseModel], raw: dict, path: str = "") -> Optional[str]:
    """The first key of the schema a params mapping leaves out (sections, their keys, nested ones).
    A model of overrides (every key optional, None by default: a table row's changes) is partial
    by design."""
    if all(field.default is None for field in model.model_fields.values()):
        return None
    for name, field in model.model_fields.items():
        if name not in raw:
            return path + name
        value, section = raw[name], _section_type(field.annotation)
        if section is not None and isinstance(value, dict):
            missing = _first_missing(section, value, f"{path}{name}.")
        elif isinstance(value, dict) and getattr(field.annotation, "__origin__", None) is dict:
            # a mapping of sections (reid_ablation.rows): each entry complete
            row = _section_type(field.annotation.__args__[1])
            missing = next((m for key, entry in value.items() if row is not None and isinstance(entry, dict)
                            for m in [_first_missing(row, entry, f"{path}{name}.{key}.")] if m), None)
        else:
            missing = None
        if missing:
            return missing
    return None


def _require_complete(raw: dict, source: str) -> None:
    """A params file states every value: a stage never runs on defaults it did not show."""
    if not raw:
        raise ParamsError(f"{source}: empty; {COMPOSE_HINT}")
    missing = _first_missing(Params, raw)
    if missing:
        field = Params.model_fields.get(missing)
        kind = "section" if field is not None and _section_type(field.annotation) else "key"
        raise ParamsError(f"{source}: missing {kind} {missing}; {COMPOSE_HINT}")


def validate(raw: Any, source: str = DEFAULT_PARAMS_FILE) -> Params:
    """Validate params data (a composed params.yaml); the first problem as a ParamsError."""
    if raw is not None and not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level")
    _require_complete(raw or {}, source)
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ParamsError(_format_error(source, err.errors()[0])) from None


def read_yaml(path: Path) -> Any:
    """A YAML file's data; a syntax error as one ParamsError line naming the file and line."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}:{where} not valid YAML ({getattr(err, 'problem', err)})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: not readable ({err.__class__.__name__})") from None


def load_params(path: str | Path = DEFAULT_PARAMS_FILE) -> Params:
    """Read params.yaml (or another composed file), validate it, and check that this machine can
    run it (tasks/core/hardware.py, tasks/core/resources.py)."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found (compose it: subjectlab params)")
    params = validate(read_yaml(path), str(path))
    try:
        params.check_this_machine()
    except ParamsError as err:
        raise ParamsError(f"{path}: {err}") from None
    return params
