"""The pipeline flow: every stage of dvc.yaml as a Prefect task, in DAG order.

Each task runs `dvc repro --single-item <stage>` in a subprocess: DVC decides whether the
stage is stale, Lightning's DDP may relaunch the stage's command line, and one workspace
runs one stage at a time (DVC's lock). One parent MLflow run spans the flow run; every
stage run nests under it through SUBJECTLAB_PARENT_RUN_ID.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.dag import stage_order
from tasks.core.params import load_params
from tasks.core.quiet import silence_known_noise
from tasks.core.tracking import PARENT_RUN_ENV, experiment_id, git_commit, tracking_uri

STAGE_STARTED = "Running stage"


@task(name="dvc-stage", task_run_name="{stage}")
def run_stage(stage: str, workspace: str, parent_run_id: Optional[str]) -> bool:
    """Reproduce one stage; True if DVC ran it, False if it was already up to date."""
    logger = get_run_logger()
    env = dict(os.environ)
    # Stage commands are `python -m ...`: use this interpreter's environment for them.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if parent_run_id:
        env[PARENT_RUN_ENV] = parent_run_id
    command = [sys.executable, "-m", "dvc", "repro", "--single-item", stage]
    process = subprocess.Popen(command, cwd=workspace, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    ran, tail = False, []
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        ran |= line.startswith(STAGE_STARTED)
        tail = (tail + [line])[-40:]
        if line and "\r" not in line:
            logger.info(line)
    if process.wait() != 0:
        raise RuntimeError(f"stage {stage} failed (exit {process.returncode}):\n" + "\n".join(tail))
    return ran


@flow(name="subjectlab-pipeline")
def pipeline(workspace: str = ".", stages: Optional[list[str]] = None) -> dict[str, bool]:
    """Run the DVC stages of `workspace` in order; `stages` limits the run to those named."""
    root = Path(workspace).resolve()
    params = load_params(root / "params.yaml")
    order = stage_order(root)
    unknown = sorted(set(stages or []) - set(order))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; dvc.yaml has {order}")
    selected = [s for s in order if not stages or s in stages]

    client = MlflowClient(tracking_uri(params, root))
    tags = {"subjectlab.stage": "pipeline", "subjectlab.profile": params.profile,
            "prefect.flow_run_id": str(flow_run.get_id() or "")}
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    parent = client.create_run(experiment_id(client, params, root), run_name="pipeline", tags=tags)
    status = "FAILED"
    try:
        results = {stage: run_stage(stage, str(root), parent.info.run_id) for stage in selected}
        status = "FINISHED"
        return results
    finally:
        client.set_terminated(parent.info.run_id, status=status)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run the subjectlab pipeline flow once.")
    parser.add_argument("--workspace", default=".")
    parser.add_argument("--stage", action="append", dest="stages", help="run only this stage (repeatable)")
    args = parser.parse_args(argv)
    silence_known_noise()
    pipeline(workspace=args.workspace, stages=args.stages)


if __name__ == "__main__":
    main()
