"""Interrupted and resumed, a training stage ends where the uninterrupted run ends.

For each family of training stage (segmenter, re-ID, diffusion) a reference run trains
uninterrupted; the same stage is then stopped mid-epoch (SIGTERM, SIGINT, or kill -9 at a
chosen step, through the stage's failpoints) and started again. The resumed run must
publish the same weights (bit for bit on this CPU) and the same metrics, the interrupted
one must publish nothing, say so in one line and exit 130 / 143, and leave its MLflow run
KILLED (for kill -9: marked so when the stage next starts). A damaged checkpoint is set
aside in one line and training starts over, to the same end.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file

from tasks.core.failpoints import ENV
from tests.conftest import make_workspace, stage_command, stage_env

pytestmark = pytest.mark.slow


def run_stage(stage: str, workspace: Path, failpoints: str | None = None) -> subprocess.CompletedProcess:
    env = stage_env()
    if failpoints:
        env[ENV] = failpoints
    return subprocess.run([*stage_command(stage), "--params", "resume.yaml"], cwd=workspace, env=env,
                          capture_output=True, text=True, timeout=1200)


def workspace_with(smoke_repo, tmp_path: Path, data: tuple[str, ...], **changes) -> Path:
    """A plain workspace holding the smoke run's `data` folders and a params file `resume.yaml`."""
    source, _ = smoke_repo
    workspace = make_workspace(tmp_path / "ws", git=False)
    for name in data:
        shutil.copytree(source / "data" / name, workspace / "data" / name)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    for dotted, value in changes.items():
        section, key = dotted.split(".")
        params[section][key] = value
    (workspace / "resume.yaml").write_text(yaml.safe_dump(params))
    return workspace


def snapshot(workspace: Path, model: str, metrics: str) -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {}
    for file in sorted((workspace / "data" / "models" / model).rglob("*.safetensors")):
        tensors.update({f"{file.name}:{k}": v for k, v in load_file(file).items()})
    assert tensors
    return tensors, json.loads((workspace / "metrics" / metrics).read_text())


def unpublish(workspace: Path, model: str, metrics: str) -> None:
    shutil.rmtree(workspace / "data" / "models" / model)
    (workspace / "metrics" / metrics).unlink()


def reference_run(in_process, stage: str, workspace: Path, model: str, metrics: str):
    """Train uninterrupted, keep what it published, then clear the outputs for the next run. It
    trains in this process (no interpreter to start): the runs it is compared with are fresh
    processes, so a resumed run is also checked against a different process's arithmetic."""
    in_process(stage, workspace, "--params", "resume.yaml")
    reference = snapshot(workspace, model, metrics)
    unpublish(workspace, model, metrics)
    return reference


def assert_same_run(reference, resumed) -> None:
    ref_tensors, ref_metrics = reference
    tensors, metrics = resumed
    assert metrics == ref_metrics
    assert tensors.keys() == ref_tensors.keys()
    for name, value in tensors.items():
        assert torch.equal(value, ref_tensors[name]), name


def assert_interrupted(result: subprocess.CompletedProcess, stage: str, code: int, signal_name: str, step: int):
    assert result.returncode == code, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if "interrupted" in line]
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"{stage}: interrupted by {signal_name}; training state saved at step {step} in ")
    assert lines[0].endswith("run the stage again to continue")


def run_statuses(workspace: Path) -> list[str]:
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id], order_by=["start_time"])
    return [r.info.status for r in runs]


def test_segmenter_killed_resumes_to_the_same_weights_and_a_damaged_checkpoint_restarts(smoke_repo, tmp_path,
                                                                                         in_process):
    workspace = workspace_with(smoke_repo, tmp_path, ("augmented",), **{
        "train_segmenter.max_epochs": 2, "train_segmenter.limit_train_batches": 4,
        "trainer.checkpoint_every_n_steps": 3})
    reference = reference_run(in_process, "train_segmenter", workspace, "segmenter", "train_segmenter.json")

    # kill -9 at step 6, before that step's checkpoint: the step-3 one, mid first epoch, remains.
    assert run_stage("train_segmenter", workspace, "train.batch_end@6=kill").returncode == -9
    assert not (workspace / "data" / "models" / "segmenter").exists()
    assert not (workspace / "metrics" / "train_segmenter.json").exists()
    (last,) = (workspace / "checkpoints" / "train_segmenter").glob("*/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 3
    resumed = run_stage("train_segmenter", workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming train_segmenter from" in resumed.stdout
    assert "not resumable" not in resumed.stderr  # Lightning's mid-epoch warning
    assert "marked 1 MLflow run(s) left RUNNING by a dead process as KILLED" in resumed.stderr
    assert_same_run(reference, snapshot(workspace, "segmenter", "train_segmenter.json"))
    assert run_statuses(workspace) == ["FINISHED", "KILLED", "FINISHED"]

    # Stopped by SIGTERM at the first step of the second epoch, then its checkpoint cut short
    # (a full disk, a copy interrupted): set aside in one line, training restarts, same end.
    unpublish(workspace, "segmenter", "train_segmenter.json")
    stopped = run_stage("train_segmenter", workspace, "train.batch_end@5=sigterm")
    assert_interrupted(stopped, "train_segmenter", 143, "SIGTERM", 5)
    assert run_statuses(workspace)[-1] == "KILLED"
    (last,) = (workspace / "checkpoints" / "train_segmenter").glob("*/last.ckpt")
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    restarted = run_stage("train_segmenter", workspace)
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    (line,) = [line for line in restarted.stderr.splitlines() if "unreadable" in line]
    assert str(last.relative_to(workspace)) in line and "set aside as corrupt-" in line
    assert "training starts from the beginning" in line
    assert "Traceback" not in restarted.stderr and "Resuming" not in restarted.stdout
    assert_same_run(reference, snapshot(workspace, "segmenter", "train_segmenter.json"))


def test_reid_teacher_stopped_by_sigint_resumes_to_the_same_weights(smoke_repo, tmp_path, in_process):
    workspace = workspace_with(smoke_repo, tmp_path, ("persons",), **{
        "train_reid_teacher.max_epochs": 2, "train_reid_teacher.limit_train_batches": 3,
        "trainer.checkpoint_every_n_steps": 100})
    reference = reference_run(in_process, "train_reid_teacher", workspace, "reid_teacher", "train_reid_teacher.json")

    stopped = run_stage("train_reid_teacher", workspace, "train.batch_end@3=sigint")
    assert_interrupted(stopped, "train_reid_teacher", 130, "SIGINT", 3)
    assert run_statuses(workspace)[-1] == "KILLED"
    resumed = run_stage("train_reid_teacher", workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, snapshot(workspace, "reid_teacher", "train_reid_teacher.json"))


def test_finetune_stopped_by_sigterm_resumes_to_the_same_weights(smoke_repo, tmp_path, in_process):
    workspace = workspace_with(smoke_repo, tmp_path, ("augmented", "class_images", "models/base"), **{
        "finetune.max_steps": 8, "trainer.checkpoint_every_n_steps": 100})
    reference = reference_run(in_process, "finetune", workspace, "finetuned", "finetune.json")

    stopped = run_stage("finetune", workspace, "train.batch_end@3=sigterm")
    assert_interrupted(stopped, "finetune", 143, "SIGTERM", 3)
    # the checkpoint holds what trains (LoRA tensors, the embedding table), not the frozen models
    (last,) = (workspace / "checkpoints" / "finetune").glob("*/last.ckpt")
    state = torch.load(last, map_location="cpu", weights_only=False)["state_dict"]
    assert any("lora" in key for key in state)
    assert all("lora" in key or key.endswith("token_embedding.weight") for key in state)
    resumed = run_stage("finetune", workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(reference, snapshot(workspace, "finetuned", "finetune.json"))
