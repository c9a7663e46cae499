"""Serve the pipeline flow with its cron schedule so the Prefect UI shows and triggers it.

    prefect server start            # terminal 1: the UI at http://127.0.0.1:4200
    python -m flows.serve           # terminal 2: registers the deployment and runs what it schedules

The schedule is params.yaml's `schedule` section; runs of the deployment never overlap,
because stages of one workspace must run one at a time.
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve
from prefect.schedules import Cron

from flows.entry import run_flow_main
from flows.pipeline import pipeline
from tasks.core.cli import OneLineParser
from tasks.core.errors import ParamsError, UserError
from tasks.core.params import load_params

DEPLOYMENT_NAME = "scheduled"


def schedule(cron: str, timezone: str, source: Path):
    try:
        return Cron(cron, timezone=timezone)
    except ValueError as err:   # Prefect's own cron parser: a field out of range, a bad step
        raise ParamsError(f"{source}: schedule.cron: {err}") from None


def build_deployment(workspace: Path):
    workspace = workspace.resolve()
    params = load_params(workspace / "params.yaml")
    return pipeline.to_deployment(
        name=DEPLOYMENT_NAME,
        schedules=[schedule(params.schedule.cron, params.schedule.timezone, workspace / "params.yaml")],
        parameters={"workspace": str(workspace)},
        concurrency_limit=1,
        description="Reproduce the subjectlab DVC pipeline of this workspace.",
        tags=["subjectlab"],
    )


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m flows.serve", description="Serve the scheduled subjectlab pipeline deployment.")
    parser.add_argument("--workspace", default=".")
    args = parser.parse_args(argv)
    deployment = build_deployment(Path(args.workspace))
    try:
        serve(deployment)
    except Exception as err:   # noqa: BLE001 - only an unreachable server is phrased; the rest re-raised
        if not api_unreachable(err):
            raise
        from prefect.settings import PREFECT_API_URL

        raise UserError(f"the Prefect API at {PREFECT_API_URL.value() or '(ephemeral)'} cannot be reached "
                        "(start it: prefect server start)") from None


def api_unreachable(err: BaseException) -> bool:
    """A failure to connect to the Prefect server, however deep in the client it surfaced."""
    import httpx

    while err is not None:
        if isinstance(err, (httpx.ConnectError, httpx.ConnectTimeout, ConnectionRefusedError)):
            return True
        err = err.__cause__ or err.__context__
    return False


if __name__ == "__main__":
    run_flow_main(main)
