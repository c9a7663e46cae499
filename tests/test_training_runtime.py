"""The segmenter stage as it really runs: DDP on CPU with 2 processes, and 2 "nodes" of one
process each launched by torchrun's rendezvous (kill and resume: tests/test_resume.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from safetensors.torch import load_file

from flows.tracking_server import free_port
from tests.conftest import make_workspace, stage_command, stage_env

pytestmark = pytest.mark.slow
STEPS = 3


def segmenter_copy(smoke_repo, path: Path, **trainer) -> Path:
    """A plain workspace with the smoke run's augmented data and params for a short DDP run."""
    source, _ = smoke_repo
    workspace = make_workspace(path, git=False)
    shutil.copytree(source / "data" / "augmented", workspace / "data" / "augmented")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train_segmenter"].update(limit_train_batches=STEPS)
    params["trainer"].update(strategy="ddp", accelerator="cpu", **trainer)
    (workspace / "ddp.yaml").write_text(yaml.safe_dump(params))
    return workspace


def stage_runs(workspace: Path) -> list:
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id])


def weights(workspace: Path) -> dict:
    return load_file(workspace / "data" / "models" / "segmenter" / "model.safetensors")


@pytest.fixture(scope="module")
def one_node_two_processes(smoke_repo, tmp_path_factory):
    workspace = segmenter_copy(smoke_repo, tmp_path_factory.mktemp("ddp") / "ws", devices=2)
    # One thread per process, as torchrun gives its workers (OMP_NUM_THREADS=1): CPU kernels
    # split their sums by thread, so equal weights need equal thread counts.
    result = subprocess.run([*stage_command("train_segmenter"), "--params", "ddp.yaml"], cwd=workspace,
                            env={**stage_env(), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return workspace, result


def test_ddp_on_cpu_with_two_processes(one_node_two_processes):
    workspace, result = one_node_two_processes
    log = result.stdout + result.stderr
    assert "distributed_backend=gloo" in log
    assert "Starting with 2 processes" in log
    metrics = json.loads((workspace / "metrics" / "train_segmenter.json").read_text())
    assert metrics["global_step"] == STEPS  # each rank ran STEPS batches of its own shard
    assert (workspace / "data" / "models" / "segmenter" / "model.safetensors").is_file()
    runs = stage_runs(workspace)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # rank 1 opened no run


def test_two_nodes_launched_by_torchrun_train_as_one_node_of_two_processes(one_node_two_processes, smoke_repo,
                                                                         tmp_path):
    """`torchrun --nnodes 2 --nproc-per-node 1` with c10d rendezvous, twice on localhost (the
    two "nodes"), trainer.num_nodes 2 and devices 1: Lightning takes its world from torchrun's
    environment; the global batch, the shards and so the final weights are those of one node
    with two processes."""
    workspace = segmenter_copy(smoke_repo, tmp_path / "ws", devices=1, num_nodes=2)
    endpoint = f"127.0.0.1:{free_port()}"
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
              "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "subjectlab-test",
              "-m", stage_command("train_segmenter")[-1], "--params", "ddp.yaml"]
    nodes = [subprocess.Popen(launch, cwd=workspace, env={**stage_env(), "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outputs = [node.communicate(timeout=900)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n\n".join(o[-3000:] for o in outputs)
    log = "\n".join(outputs)
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log

    metrics = json.loads((workspace / "metrics" / "train_segmenter.json").read_text())
    assert metrics["global_step"] == STEPS
    runs = stage_runs(workspace)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"   # one run, opened by global rank 0
    assert runs[0].data.params["trainer.num_nodes"] == "2"

    reference, _ = one_node_two_processes
    mine, theirs = weights(workspace), weights(reference)
    assert mine.keys() == theirs.keys()
    for name in mine:
        assert (mine[name] == theirs[name]).all(), name
