"""SIGTERM and SIGINT (Prefect cancellation, `docker stop`, Kubernetes, Ctrl-C) and kill -9.

A stage asked to stop says so in one line, exits 143 / 130, publishes nothing, leaves no
staging twin behind, and marks its MLflow run KILLED; a training stage keeps its state in a
checkpoint first (the exact resume is tests/test_resume.py). A run whose process died
without a word is marked KILLED when the stage next starts. Under DVC the stage's line is
what the user reads, and DVC records nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tasks.core.failpoints import ENV
from tests.conftest import dvc, make_workspace, stage_command, stage_env

pytestmark = pytest.mark.slow


def statuses(workspace: Path) -> list[str]:
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("subjectlab")
    return [r.info.status for r in client.search_runs([experiment.experiment_id], order_by=["start_time"])]


def hidden_leftovers(workspace: Path) -> list[str]:
    return sorted(str(p.relative_to(workspace)) for folder in ("data", "metrics", "plots")
                  for p in (workspace / folder).rglob(".*") if not p.name.endswith(".lock"))


def start(stage: str, workspace: Path, failpoints: str | None = None) -> subprocess.Popen:
    env = stage_env()
    if failpoints:
        env[ENV] = failpoints
    return subprocess.Popen(stage_command(stage), cwd=workspace, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def signal_once(process: subprocess.Popen, signum: int, when: Path, timeout: float = 300) -> tuple[str, str]:
    """Send `signum` as soon as `when` exists (the stage is mid-work), then collect the output."""
    deadline = time.time() + timeout
    while not when.exists():
        assert process.poll() is None, process.communicate()
        assert time.time() < deadline, f"{when} never appeared"
        time.sleep(0.02)
    process.send_signal(signum)
    return process.communicate(timeout=300)


@pytest.fixture()
def workspace(tmp_path) -> Path:
    return make_workspace(tmp_path / "ws", git=False)


@pytest.mark.parametrize(("signum", "code", "name"), [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_a_generating_stage_stopped_mid_work_publishes_nothing_and_says_so(workspace, signum, code, name):
    process = start("synthesize", workspace)
    # the staging twin of its data folder exists: the stage is drawing SynthWorld
    out, err = signal_once(process, signum, workspace / "data" / ".synthworld.staged" / "subjects")
    assert process.returncode == code, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"synthesize: interrupted by {name}; no outputs published; "
                                            "run the stage again to continue")
    assert not (workspace / "data" / "synthworld").exists()
    assert not (workspace / "metrics" / "synthesize.json").exists()
    assert hidden_leftovers(workspace) == []
    assert statuses(workspace) == ["KILLED"]


def test_a_training_stage_stopped_by_a_real_sigterm_keeps_a_checkpoint(smoke_repo, tmp_path):
    source, _ = smoke_repo
    workspace = make_workspace(tmp_path / "ws", git=False)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train_segmenter"].update(max_epochs=50)  # long enough to be stopped mid-training
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    (workspace / "data").mkdir(exist_ok=True)
    os.symlink(source / "data" / "augmented", workspace / "data" / "augmented")
    process = start("train_segmenter", workspace)
    # the first periodic checkpoint: training is under way
    checkpoints = workspace / "checkpoints" / "train_segmenter"
    deadline = time.time() + 300
    while not list(checkpoints.glob("*/last.ckpt")):
        assert process.poll() is None and time.time() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 143, (process.returncode, err[-3000:])
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if "interrupted" in line]
    assert line.startswith("train_segmenter: interrupted by SIGTERM; training state saved at step ")
    (last,) = checkpoints.glob("*/last.ckpt")
    assert str(last.relative_to(workspace)) in line
    assert not (workspace / "data" / "models" / "segmenter").exists()
    assert hidden_leftovers(workspace) == []
    assert statuses(workspace) == ["KILLED"]


def test_a_signal_while_publishing_waits_for_the_whole_publish(workspace):
    result = subprocess.run(stage_command("synthesize"), cwd=workspace, capture_output=True, text=True,
                            env={**stage_env(), ENV: "publish.swapped.0=sigterm"}, timeout=600)
    # the swap is not cut: both outputs are the new ones, and the stage ends as finished
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((workspace / "metrics" / "synthesize.json").read_text())
    assert metrics["subjects"] == len([p for p in (workspace / "data" / "synthworld" / "subjects").iterdir() if p.is_dir()])
    assert hidden_leftovers(workspace) == []
    assert statuses(workspace) == ["FINISHED"]


def test_a_run_left_running_by_a_dead_process_is_marked_killed_at_the_next_start(workspace):
    killed = subprocess.run(stage_command("synthesize"), cwd=workspace, capture_output=True, text=True,
                            env={**stage_env(), ENV: "publish.before_journal=kill"}, timeout=600)
    assert killed.returncode == -9
    assert statuses(workspace) == ["RUNNING"]  # nobody was left to say otherwise
    again = subprocess.run(stage_command("synthesize"), cwd=workspace, capture_output=True, text=True,
                           env=stage_env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "marked 1 MLflow run(s) left RUNNING by a dead process as KILLED" in again.stderr
    assert statuses(workspace) == ["KILLED", "FINISHED"]
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}")
    (dead,) = client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id],
                                 filter_string="attributes.status = 'KILLED'")
    assert dead.data.tags["subjectlab.ended"].startswith("its process died")


def test_under_dvc_an_interrupted_stage_is_reported_by_its_own_line_and_not_recorded(tmp_path):
    workspace = make_workspace(tmp_path / "ws")
    env_failpoint = {ENV: "stage.staging=sigterm"}
    os.environ.update(env_failpoint)
    try:
        result = dvc(workspace, "repro", "--single-item", "synthesize", check=False)
    finally:
        os.environ.pop(ENV)
    assert result.returncode != 0
    log = result.stdout + result.stderr
    assert "synthesize: interrupted by SIGTERM; no outputs published; run the stage again to continue" in log
    assert "does not exist" not in log
    lock = workspace / "dvc.lock"
    assert not lock.exists() or "synthesize" not in yaml.safe_load(lock.read_text()).get("stages", {})
