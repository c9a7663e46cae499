"""Deploy the pipeline flow with its cron schedule so the Prefect UI shows and triggers it.

Served (one process registers the deployment and runs what it schedules):

    prefect server start            # terminal 1: the UI at http://127.0.0.1:4200
    python -m flows.serve           # terminal 2

On a work pool (a worker picks the runs up; as many workers as machines):

    python -m flows.serve --pool subjectlab      # registers the deployment (and the process pool)
    prefect worker start --pool subjectlab       # on each machine that runs flows (make worker)

The deployment's code is this project's folder (`from_source` on a local path): a process
worker runs the flow there with the worker's own environment, so MLFLOW_TRACKING_URI and
PREFECT_API_URL set for the worker reach every stage. A Docker or Kubernetes pool takes the
same deployment with the pool's type and an image instead (docs/SCALE-OUT.md).

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
CODE_ROOT = Path(__file__).resolve().parents[1]   # holds flows/pipeline.py
ENTRYPOINT = "flows/pipeline.py:pipeline"


def schedule(cron: str, timezone: str, source: Path):
    try:
        return Cron(cron, timezone=timezone)
    except ValueError as err:   # Prefect's own cron parser: a field out of range, a bad step
        raise ParamsError(f"{source}: schedule.cron: {err}") from None


def deployment_settings(workspace: Path) -> dict:
    """What the served and the pooled deployment share: schedule, parameters, no overlap."""
    workspace = workspace.resolve()
    params = load_params(workspace / "params.yaml")
    return dict(
        name=DEPLOYMENT_NAME,
        schedules=[schedule(params.schedule.cron, params.schedule.timezone, workspace / "params.yaml")],
        parameters={"workspace": str(workspace)},
        concurrency_limit=1,
        description="Reproduce the subjectlab DVC pipeline of this workspace.",
        tags=["subjectlab"],
    )


def build_deployment(workspace: Path):
    return pipeline.to_deployment(**deployment_settings(workspace))


def ensure_process_pool(pool: str) -> None:
    """The work pool, created as a process pool when the server does not have it yet."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    async def create() -> None:
        async with get_client() as client:
            try:
                await client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            except ObjectAlreadyExists:
                pass

    asyncio.run(create())


def deploy_to_pool(workspace: Path, pool: str):
    """Register the deployment on `pool` for workers to run; its id."""
    ensure_process_pool(pool)
    code = pipeline.from_source(source=str(CODE_ROOT), entrypoint=ENTRYPOINT)
    # to_deployment + apply registers it as `deploy` would, without deploy's look-up of the
    # pool's online workers (a request Prefect 3.8's own server refuses: limit=None)
    return code.to_deployment(work_pool_name=pool, **deployment_settings(workspace)).apply()


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m flows.serve", description="Serve the scheduled subjectlab pipeline deployment.")
    parser.add_argument("--workspace", default=".")
    parser.add_argument("--pool", default=None,
                        help="register the deployment on this work pool for workers (created as a process pool "
                             "if missing) instead of serving it from this process")
    args = parser.parse_args(argv)
    try:
        if args.pool:
            deployment_id = deploy_to_pool(Path(args.workspace), args.pool)
            print(f"deployment subjectlab-pipeline/{DEPLOYMENT_NAME} ({deployment_id}) on work pool {args.pool}; "
                  f"start a worker: prefect worker start --pool {args.pool}", flush=True)
            return
        serve(build_deployment(Path(args.workspace)))
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
