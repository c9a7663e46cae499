"""The pipeline flow: every stage of dvc.yaml as a Prefect task, in DAG order.

Each task runs `dvc repro --single-item <stage>` in a subprocess: DVC decides whether the
stage is stale, Lightning's DDP may relaunch the stage's command line, and one workspace
runs one stage at a time (DVC's lock). One parent MLflow run spans the flow run; every
stage run nests under it through SUBJECTLAB_PARENT_RUN_ID.

A stage that stops on a user mistake prints one `error:` line and exits 2; its task fails
with that line as its message, and `python -m flows.pipeline` ends with it (flows/entry.py).
The params file and the stage names are checked before the flow starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from mlflow import MlflowClient
from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run

from flows.dag import stage_order
from flows.entry import StageFailed, StageRefused, run_flow_main
from tasks.core.cli import OneLineParser
from tasks.core.errors import UserError
from tasks.core.params import Params, load_params
from tasks.core.tracking import PARENT_RUN_ENV, PROCESS_TAG, experiment_id, git_commit, process_id, tracking_uri

STAGE_STARTED = "Running stage"
STAGE_ERROR = "error: "   # the one line a stage prints when it refuses its input (tasks/core/errors.py)
DVC_ERROR = "ERROR: "     # DVC's own: a missing dependency, a held lock, ... or a failed command
DVC_COMMAND_FAILED = "failed to run:"


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
    ran, refusal, dvc_error = False, None, None
    assert process.stdout is not None
    for line in process.stdout:
        line = line.rstrip()
        ran |= line.startswith(STAGE_STARTED)
        if line.startswith(STAGE_ERROR):
            refusal = line.removeprefix(STAGE_ERROR)
        elif line.startswith(DVC_ERROR):
            dvc_error = line.removeprefix(DVC_ERROR)
        if line and "\r" not in line:
            logger.info(line)
    if process.wait() != 0:
        raise stage_failure(stage, process.returncode, refusal, dvc_error)
    return ran


def stage_failure(stage: str, code: int, refusal: Optional[str], dvc_error: Optional[str]) -> Exception:
    """The stage's own one line when it refused its input; DVC's when DVC refused to run it (a
    missing dependency: run the stage before); otherwise a crash, whose output the log shows."""
    if refusal is not None:
        return StageRefused(f"stage {stage} failed: {refusal}")
    if dvc_error is not None and DVC_COMMAND_FAILED not in dvc_error:
        return StageRefused(f"stage {stage} failed: {dvc_error}")
    return StageFailed(f"stage {stage} failed (dvc repro exit {code}); its output is above")


def check_workspace(root: Path, stages: Optional[list[str]]) -> tuple[Params, list[str]]:
    """(params, the stages to run in order), or the user's mistake in one line: a params file
    that does not validate, a dvc.yaml DVC cannot read, a stage it does not have."""
    params = load_params(root / "params.yaml")
    from dvc.exceptions import DvcException

    try:
        order = stage_order(root)
    except DvcException as err:
        first = " ".join(str(err).split()) or err.__class__.__name__
        raise UserError(f"{root / 'dvc.yaml'}: {first}") from None
    unknown = sorted(set(stages or []) - set(order))
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)}; dvc.yaml has {', '.join(order)}")
    return params, [s for s in order if not stages or s in stages]


@flow(name="subjectlab-pipeline")
def pipeline(workspace: str = ".", stages: Optional[list[str]] = None) -> dict[str, bool]:
    """Run the DVC stages of `workspace` in order; `stages` limits the run to those named."""
    root = Path(workspace).resolve()
    params, selected = check_workspace(root, stages)

    client = MlflowClient(tracking_uri(params, root))
    # PROCESS_TAG: a flow process that dies leaves its run RUNNING; the next stage start closes it.
    tags = {"subjectlab.stage": "pipeline", "subjectlab.profile": params.profile,
            "prefect.flow_run_id": str(flow_run.get_id() or ""), PROCESS_TAG: process_id()}
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
    parser = OneLineParser(prog="python -m flows.pipeline", description="Run the subjectlab pipeline flow once.")
    parser.add_argument("--workspace", default=".")
    parser.add_argument("--stage", action="append", dest="stages", help="run only this stage (repeatable)")
    args = parser.parse_args(argv)
    check_workspace(Path(args.workspace).resolve(), args.stages)   # before Prefect starts
    pipeline(workspace=args.workspace, stages=args.stages)


if __name__ == "__main__":
    run_flow_main(main)
