"""Queued DVC experiments (`dvc exp run --queue`) run by queue workers, one pinned per device,
as docs/SCALE-OUT.md tells a lab to run an ablation grid across its GPUs."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time

import pytest
from mlflow import MlflowClient

from tests.conftest import SMOKE_MSP_BASELINES, SMOKE_PERSONALIZATION_ROWS, dvc, run, table_rows

pytestmark = pytest.mark.slow
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
ROWS = ("csa", "deskpro")   # Table 3 rows the smoke workspace has not run


def queue_settings(row: str) -> list[str]:
    """The Hydra overrides of the smoke workspace (DVC recomposes params.yaml from conf/ for an
    experiment) with one Table 3 row."""
    overrides = ["profile=smoke", table_rows(SMOKE_PERSONALIZATION_ROWS, "personalization"),
                 f"msp.baselines=[{','.join(SMOKE_MSP_BASELINES)}]", f"reid_ablation.table=[{row}]"]
    return [arg for override in overrides for arg in ("-S", override)]


def test_queued_experiments_run_on_workers_pinned_to_devices(smoke_repo, tracking_server, tmp_path, monkeypatch):
    source, _ = smoke_repo
    workspace = tmp_path / "ws"
    shutil.copytree(source, workspace, symlinks=True, ignore=shutil.ignore_patterns("mlflow", "checkpoints"))
    # the reproduced state is the experiments' baseline: committed, as a user would
    (workspace / ".gitignore").write_text("/mlflow\n/checkpoints\n")
    run([*GIT, "add", "-A"], workspace)
    run([*GIT, "commit", "-qm", "reproduced"], workspace)

    for row in ROWS:
        # The table as the target: DVC checks its own stages, not every method's
        dvc(workspace, "exp", "run", "--queue", "-n", row, *queue_settings(row), "reid_ablation_report")
    # Queued experiments run in temporary copies of the repository: the shared server keeps
    # their MLflow runs. Each worker is started with its own device; the experiments a worker
    # runs inherit its environment.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.uri)
    started = time.monotonic()
    result = run([sys.executable, "-m", "flows.queue_workers", "--devices", "0,1"], workspace)
    assert result.stdout.splitlines() == ["queue worker 1: CUDA_VISIBLE_DEVICES=0",
                                          "queue worker 2: CUDA_VISIBLE_DEVICES=1"]
    deadline = time.monotonic() + 900
    while True:
        status = dvc(workspace, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status or time.monotonic() > deadline:
            break
        time.sleep(3)
    print(f"queue of {len(ROWS)} experiments, 2 workers: {time.monotonic() - started:.0f} s")
    dvc(workspace, "queue", "stop", "--kill", check=False)
    assert status.count("Success") == len(ROWS), status

    shown = json.loads(dvc(workspace, "exp", "show", "--json").stdout)
    experiments = {rev["name"]: rev["data"] for entry in shown for exp in entry.get("experiments") or []
                   for rev in exp["revs"]}
    assert set(ROWS) <= set(experiments)
    for row in ROWS:
        report = experiments[row]["metrics"]["metrics/reid_ablation_report.json"]["data"]
        assert list(report) == [row], report   # the experiment's own table: its one row
        assert experiments[row]["metrics"][f"metrics/reid_ablation/{row}.json"]["data"]

    client = MlflowClient(tracking_server.uri)
    experiment = client.get_experiment_by_name("subjectlab")
    devices = {}
    for row in ROWS:
        (stage,) = client.search_runs([experiment.experiment_id], f"tags.`subjectlab.stage` = 'reid_ablation@{row}'")
        assert stage.info.status == "FINISHED"
        devices[row] = stage.data.tags.get("subjectlab.cuda_visible_devices")
    assert set(devices.values()) <= {"0", "1"} and None not in devices.values(), devices
    assert "CUDA_VISIBLE_DEVICES" not in os.environ
