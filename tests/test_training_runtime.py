"""The segmenter stage as it really runs: DDP on CPU with 2 processes (kill and resume: tests/test_resume.py)."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow import MlflowClient

from tests.conftest import python_stage

pytestmark = pytest.mark.slow


def write_params(workspace, **train_segmenter) -> str:
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train_segmenter"].update(train_segmenter)
    return params


def test_ddp_on_cpu_with_two_processes(augmented_copy):
    params = write_params(augmented_copy, limit_train_batches=3)
    params["trainer"].update(strategy="ddp", devices=2, accelerator="cpu")
    (augmented_copy / "ddp.yaml").write_text(yaml.safe_dump(params))
    result = python_stage("train_segmenter", augmented_copy, "--params", "ddp.yaml")
    log = result.stdout + result.stderr
    assert "distributed_backend=gloo" in log
    assert "Starting with 2 processes" in log
    metrics = json.loads((augmented_copy / "metrics" / "train_segmenter.json").read_text())
    assert metrics["global_step"] == 3  # each rank ran 3 batches of its own shard
    assert (augmented_copy / "data" / "models" / "segmenter" / "model.safetensors").is_file()
    client = MlflowClient(f"sqlite:///{augmented_copy / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 1 opened no run
