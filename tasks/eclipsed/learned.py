"""What editing needs and nothing more (a page imports it): the generator (eclipsed.generator)
and a row's learned directions (`${paths.data}/eclipsed/<row>/`: directions.safetensors with
"directions" K x num_ws x w_dim, and directions.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file

from lightning_modules.eclipsed.stylegan import StyleGenerator
from tasks.core.errors import InputDataError
from tasks.core.params import Params

DIRECTIONS_FILE = "directions.safetensors"
DIRECTIONS_META = "directions.json"
TABLE = "eclipsed_table_1"   # the subjectlab.table tag of the rows' MLflow runs


def model_dir(path: Path, key: str, stage: str) -> Path:
    if not (path / "config.json").is_file():
        raise InputDataError(f"eclipsed.{key}: {path} holds no model (config.json); run dvc repro {stage}")
    return path


def load_generator(params: Params) -> StyleGenerator:
    path = model_dir(params.eclipsed.generator, "generator", "train_stylegan")
    return StyleGenerator.from_pretrained(path).eval().requires_grad_(False)


def directions_dir(params: Params, row: str) -> Path:
    return params.paths.data / "eclipsed" / row


@dataclass
class LearnedDirections:
    row: str
    directions: torch.Tensor      # K x num_ws x w_dim
    meta: dict                    # directions.json


def load_directions(params: Params, row: str, generator: Optional[StyleGenerator] = None) -> LearnedDirections:
    folder = directions_dir(params, row)
    weights, meta_file = folder / DIRECTIONS_FILE, folder / DIRECTIONS_META
    if not weights.is_file() or not meta_file.is_file():
        raise InputDataError(f"{folder}: no trained directions; run dvc repro eclipsed@{row}")
    directions = load_file(str(weights))["directions"]
    if generator is not None and tuple(directions.shape[1:]) != (generator.num_ws, generator.w_dim):
        raise InputDataError(f"{weights}: directions of shape {list(directions.shape)} do not fit the generator "
                             f"({generator.num_ws} style layers of {generator.w_dim}); train the row again")
    return LearnedDirections(row, directions, json.loads(meta_file.read_text()))
