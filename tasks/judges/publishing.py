"""The publishing tail the judge stages share: the judge, its held-out figures, its curves and a
labelled grid of predictions, written into a stage's atomic outputs and logged to MLflow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping

import mlflow
import numpy as np
from PIL import Image

from tasks.core.curves import write_curves
from tasks.core.tracking import log_image, log_metrics_tree


def publish_judge(net, metrics: Mapping, split: str, labelled_grid: Callable[[], np.ndarray], history,
                  tmp_model: Path, tmp_metrics: Path, tmp_plots: Path, artifact_path: str) -> None:
    """`labelled_grid` is called once the judge is on the CPU (where it was saved from)."""
    net.cpu().save_pretrained(tmp_model)
    tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    write_curves(history, tmp_plots)
    grid = labelled_grid()
    Image.fromarray(grid).save(tmp_plots / "predictions.png")
    log_image(grid, f"{artifact_path}/predictions.png")
    log_metrics_tree({split: {k: v for k, v in metrics[split].items() if k != "images"}})
    mlflow.log_artifacts(str(tmp_model), artifact_path=artifact_path)
    mlflow.log_artifacts(str(tmp_plots), artifact_path=f"{artifact_path}/plots")
