"""The augment stage's manifest (manifest.csv: one row per image, its subject, split and
captions), as every stage that reads the augmented data finds it."""

from __future__ import annotations

import csv
from pathlib import Path

from tasks.core.errors import InputDataError
from tasks.core.params import Params


def manifest_path(params: Params) -> Path:
    return params.paths.data / "augmented" / "manifest.csv"


def manifest_rows(params: Params) -> list[dict]:
    manifest = manifest_path(params)
    if not manifest.is_file():
        raise InputDataError(f"{manifest}: missing; run the augment stage first (dvc repro augment)")
    with manifest.open(newline="") as f:
        return list(csv.DictReader(f))
