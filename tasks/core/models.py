"""Where the base models of a workspace are: the zoo's and the pretraining stages' records.

Stages after `zoo` never look at params.zoo directly: they ask here, so a real model
directory named in params and a tiny model built by the pipeline are found the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.core.errors import InputDataError
from tasks.core.outputs import atomic_outputs
from tasks.core.params import Params
from tasks.core.stage import is_rank_zero
from tasks.core.tracking import stage_run

RECORD = "model.json"


def zoo_dir(params: Params) -> Path:
    return params.paths.data / "zoo"


def base_dir(params: Params) -> Path:
    return params.paths.data / "models" / "base"


def clip_dir(params: Params) -> Path:
    return params.paths.data / "models" / "clip"


def dino_dir(params: Params) -> Path:
    return params.paths.data / "models" / "dino"


def write_record(directory: Path, path: Path, **extra) -> None:
    """`directory/model.json` names the model directory to load (inside it or elsewhere)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / RECORD).write_text(json.dumps({"path": str(path), **extra}, indent=2) + "\n")


def read_record(directory: Path, stage: str) -> dict:
    record = directory / RECORD
    if not record.is_file():
        raise InputDataError(f"{record}: missing; run the {stage} stage first (dvc repro {stage})")
    data = json.loads(record.read_text())
    if not Path(data["path"]).is_dir():
        raise InputDataError(f"{record}: model directory {data['path']} not found")
    return data


def zoo_model(params: Params, name: str) -> dict:
    """The zoo's entry for text_to_image / clip / dino: {"path": ..., "tiny": bool}."""
    return read_record(zoo_dir(params) / name, "zoo")


def base_model_path(params: Params) -> Path:
    """The text-to-image model fine-tuning starts from (pretrained tiny, or the user's)."""
    return Path(read_record(base_dir(params), "pretrain_base")["path"])


def clip_model_path(params: Params) -> Path:
    return Path(read_record(clip_dir(params), "pretrain_clip")["path"])


def dino_model_path(params: Params) -> Path:
    """The ViT the DINO metric reads: the tiny one after self-distillation, or the user's."""
    return Path(read_record(dino_dir(params), "pretrain_dino")["path"])


def record_real_model(stage: str, params: Params, outputs: tuple[Path, Path, Path], path: Path) -> None:
    """A real model named in params.zoo is used as it is: the pretraining stage records where it
    is (outputs: model record folder, metrics file, plots folder) and trains nothing."""
    if not is_rank_zero():
        return
    with stage_run(stage, params), atomic_outputs(*outputs) as (tmp, tmp_metrics, tmp_plots):
        write_record(tmp, path, pretrained=False)
        tmp_metrics.write_text(json.dumps({"skipped": True}) + "\n")
        tmp_plots.mkdir()
