"""MLflow for stages: one run per stage execution, nested under a pipeline run if any.

The store is the embedded SQLite file under `paths.mlflow` unless MLFLOW_TRACKING_URI names
another (a tracking server). A flow passes its parent run id in SUBJECTLAB_PARENT_RUN_ID.
Only rank zero talks to MLflow: DDP relaunches of a stage never open runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run
from PIL import Image

from tasks.core.params import Params

PARENT_RUN_ENV = "SUBJECTLAB_PARENT_RUN_ID"
STAGE_TAG = "subjectlab.stage"


def embedded_uri(params: Params, root: Path = Path(".")) -> str:
    """The SQLite store under paths.mlflow of the workspace at `root`."""
    return f"sqlite:///{(root / params.paths.mlflow).resolve() / 'mlflow.db'}"


def tracking_uri(params: Params, root: Path = Path(".")) -> str:
    """MLFLOW_TRACKING_URI when set (a server), else the embedded store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri(params, root)
    if uri == embedded_uri(params, root):
        (root / params.paths.mlflow).mkdir(parents=True, exist_ok=True)
    return uri


def experiment_id(client: MlflowClient, params: Params, root: Path = Path(".")) -> str:
    """The id of params.mlflow.experiment in the client's store, created on first use."""
    name = params.mlflow.experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # With the embedded store keep artifacts beside the database, not in the cwd.
    location = None
    if client.tracking_uri == embedded_uri(params, root):
        location = ((root / params.paths.mlflow).resolve() / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        return client.get_experiment_by_name(name).experiment_id


def use_experiment(params: Params) -> str:
    """Point the fluent MLflow API of this (stage) process at our store and experiment."""
    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    return experiment_id(MlflowClient(uri), params)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def git_commit(cwd: Path = Path(".")) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


@contextmanager
def stage_run(stage: str, params: Params) -> Iterator[Optional[Run]]:
    """An MLflow run for one stage execution (None on non-zero ranks)."""
    from tasks.core.stage import is_rank_zero

    if not is_rank_zero():
        yield None
        return
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; undo that when the stage ends
    # so that a stage called in-process (a notebook, a test) leaves no global behind.
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    started = time.monotonic()
    try:
        with _stage_run(stage, params) as run:
            yield run
        # One line per stage: what finished, how long it took, where to look.
        print(f"{stage}: done in {time.monotonic() - started:.0f} s (MLflow run {run.info.run_id[:8]}, "
              f"experiment {params.mlflow.experiment})", flush=True)
    finally:
        mlflow.set_tracking_uri(previous_uri)


@contextmanager
def _stage_run(stage: str, params: Params) -> Iterator[Run]:
    experiment_id = use_experiment(params)
    parent = os.environ.get(PARENT_RUN_ENV) or None
    tags = {STAGE_TAG: stage, "subjectlab.profile": params.profile}
    commit = git_commit()
    if commit:
        tags["mlflow.source.git.commit"] = commit
    with mlflow.start_run(experiment_id=experiment_id, run_name=stage, parent_run_id=parent,
                          nested=parent is not None, tags=tags) as run:
        effective = params.effective()
        shared = {key: effective[key] for key in ("profile", "seed", "trainer", "models")}
        section = {stage: effective[stage]} if stage in effective else {}
        mlflow.log_params(flatten({**shared, **section}))
        yield run


def log_image(image: np.ndarray | Image.Image, artifact_file: str) -> None:
    """Log an image (HxWx3 uint8 or PIL) as a PNG artifact of the active run."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        picture.save(path)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if parent == "." else parent)


def log_metrics_tree(metrics: dict[str, Any], prefix: str = "") -> None:
    """Log a nested dict of numbers as flat MLflow metrics (`test.iou.sks_cartoon`)."""
    flat = {}
    for key, value in flatten(metrics, prefix).items():
        try:
            flat[key] = float(value)
        except ValueError:
            continue
    if flat:
        mlflow.log_metrics(flat)
