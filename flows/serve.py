"""Serve the pipeline flow with its cron schedule so the Prefect UI shows and triggers it.

    prefect server start            # terminal 1: the UI at http://127.0.0.1:4200
    python -m flows.serve           # terminal 2: registers the deployment and runs what it schedules

The schedule is params.yaml's `schedule` section; runs of the deployment never overlap,
because stages of one workspace must run one at a time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from prefect import serve
from prefect.schedules import Cron

from flows.pipeline import pipeline
from tasks.core.params import load_params
from tasks.core.errors import run_stage_main

DEPLOYMENT_NAME = "scheduled"


def build_deployment(workspace: Path):
    workspace = workspace.resolve()
    params = load_params(workspace / "params.yaml")
    return pipeline.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[Cron(params.schedule.cron, timezone=params.schedule.timezone)],
        parameters={"workspace": str(workspace)},
        concurrency_limit=1,
        description="Reproduce the subjectlab DVC pipeline of this workspace.",
        tags=["subjectlab"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the scheduled subjectlab pipeline deployment.")
    parser.add_argument("--workspace", default=".")
    args = parser.parse_args(argv)
    serve(build_deployment(Path(args.workspace)))


if __name__ == "__main__":
    run_stage_main(main)
