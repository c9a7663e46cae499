"""The shared shape of a table stage: rows written by a foreach family of stages (one JSON per
row), set side by side as Markdown + CSV (+ a CSV per plot), with footnotes. The DeSKPro
ablation, the personalization table and MSP's Table 1 assemble their reports here."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import mlflow

from tasks.core.errors import InputDataError


def read_rows(directory: Path, names: Sequence[str], family: str, keys: Sequence[str]) -> list[dict]:
    """The rows' JSON files, in the order of `names`; a missing row, or one written by an older
    version without `keys`, names the command that makes it."""
    rows = []
    for name in names:
        path = directory / f"{name}.json"
        if not path.is_file():
            raise InputDataError(f"{path}: missing; run the row first (dvc repro {family}@{name})")
        row = json.loads(path.read_text())
        missing = [key for key in keys if key not in row]
        if missing:
            raise InputDataError(f"{path}: no {', '.join(missing)}; run the row again (dvc repro -f {family}@{name})")
        rows.append(row)
    return rows


def markdown(header: Sequence[str], body: Sequence[Sequence[str]], footnotes: Sequence[str] = ()) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    for note in footnotes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, header: Sequence[str], body: Sequence[Sequence[object]]) -> None:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([list(header), *map(list, body)])


def write_table(directory: Path, header: Sequence[str], body: Sequence[Sequence[str]],
                footnotes: Sequence[str] = ()) -> str:
    """table.md and table.csv in `directory` (created); returns the Markdown."""
    directory.mkdir(parents=True, exist_ok=True)
    text = markdown(header, body, footnotes)
    (directory / "table.md").write_text(text)
    write_csv(directory / "table.csv", header, body)
    return text


def finish_report(tmp_metrics: Path, tmp_plots: Path, rows: Sequence[dict], keys: Sequence[str], extra: dict,
                  artifact_path: str, text: str) -> None:
    """A report stage's last steps: its DVC metrics (every row's `keys`, plus `extra`), its
    plots folder to MLflow, and the table on the console."""
    summary = {"rows": {row["row"]: {k: row[k] for k in keys if k != "row"} for row in rows}, **extra}
    tmp_metrics.write_text(json.dumps(summary, indent=2) + "\n")
    mlflow.log_artifacts(str(tmp_plots), artifact_path=artifact_path)
    print(text, flush=True)
