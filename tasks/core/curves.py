"""Training curves as CSV files for `dvc plots` (and MLflow artifacts)."""

from __future__ import annotations

import csv
from pathlib import Path

from lightning_modules.core.history import MetricsHistory


def write_curves(history: MetricsHistory, plots: Path) -> None:
    plots.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train_loss.csv", history.train), ("val.csv", history.val)):
        if not rows and name == "val.csv":  # a stage without validation has no val curve
            continue
        fields = sorted({key for row in rows for key in row}, key=lambda k: (k not in ("epoch", "step"), k))
        with (plots / name).open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields or ["step"])
            writer.writeheader()
            writer.writerows(rows)
