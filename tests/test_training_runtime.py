"""The segmenter stage as it really runs: DDP on CPU with 2 processes, kill and resume."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from mlflow import MlflowClient

from tests.conftest import kill_at_first_checkpoint, python_stage

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


def test_killed_run_resumes_from_its_last_checkpoint(augmented_copy):
    params = write_params(augmented_copy, max_epochs=3, limit_train_batches=4)
    params["trainer"].update(checkpoint_every_n_steps=4, log_every_n_steps=1)
    (augmented_copy / "resume.yaml").write_text(yaml.safe_dump(params))
    last = kill_at_first_checkpoint("train_segmenter", augmented_copy, "resume.yaml")
    checkpoints = augmented_copy / "checkpoints" / "train_segmenter"
    killed_at = torch.load(last, map_location="cpu", weights_only=False)["global_step"]
    assert 4 <= killed_at < 12
    # the killed run published nothing
    assert not (augmented_copy / "data" / "models" / "segmenter").exists()
    assert not (augmented_copy / "metrics" / "train_segmenter.json").exists()

    result = python_stage("train_segmenter", augmented_copy, "--params", "resume.yaml")
    assert f"Resuming train_segmenter from {last.relative_to(augmented_copy)}" in result.stdout
    metrics = json.loads((augmented_copy / "metrics" / "train_segmenter.json").read_text())
    assert metrics["global_step"] == 12 and metrics["epochs"] == 3
    client = MlflowClient(f"sqlite:///{augmented_copy / 'mlflow' / 'mlflow.db'}")
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id])
              if r.info.status == "FINISHED"]
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss_step")]
    assert steps and min(steps) >= killed_at  # training went on from the checkpoint, not from 0
    assert not checkpoints.joinpath(last.parent.name).exists()  # cleaned up once published
