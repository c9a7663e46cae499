"""Flow runs picked up by a Prefect worker from a process work pool, as a lab schedules them, on
a real Prefect server with its UI; the UI then checked in a real headless browser."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.serve import DEPLOYMENT_NAME, deploy_to_pool
from flows.tracking_server import free_port
from tests.browser import artifacts_dir, browser_page
from tests.conftest import make_workspace, stage_env, wait_for_health

pytestmark = pytest.mark.slow
POOL = "subjectlab-test"


async def create_run(deployment_id, parameters: dict):
    async with get_client() as client:
        return await client.create_flow_run_from_deployment(deployment_id, parameters=parameters)


async def read_run(flow_run_id):
    async with get_client() as client:
        return await client.read_flow_run(flow_run_id)


async def read_pool_and_deployment(deployment_id):
    async with get_client() as client:
        return await client.read_work_pool(POOL), await client.read_deployment(deployment_id)


@pytest.fixture(scope="module")
def prefect_ui(tmp_path_factory):
    """`prefect server start` (API and UI) on a free port with its own database; the UI is told
    where its API is, as on any port but the default."""
    home = tmp_path_factory.mktemp("prefect")
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {**stage_env(), "PREFECT_HOME": str(home), "PREFECT_UI_API_URL": api,
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    with open(home / "server.log", "wb") as log:
        server = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                                   "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    wait_for_health(f"{api}/health", server, home / "server.log")
    with temporary_settings({PREFECT_API_URL: api}):
        yield f"http://127.0.0.1:{port}"
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=60)


def stop_worker(worker: subprocess.Popen) -> None:
    """Ctrl-C, as in the worker's terminal: once it has run a flow, Prefect's worker waits on after
    the first interrupt (a minute, measured, with its flow-run process long gone), and ends at once
    on the second, which is Prefect's own way to stop it now."""
    for interrupt, grace in ((signal.SIGINT, 10), (signal.SIGINT, 30), (signal.SIGKILL, 30)):
        try:
            os.killpg(worker.pid, interrupt)
            worker.wait(timeout=grace)
            return
        except ProcessLookupError:   # ended between the wait and the next interrupt
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def worker_run(prefect_ui, tracking_server, tmp_path_factory):
    """The deployment on a process pool, a worker subprocess, a flow run created through the API."""
    tmp_path = tmp_path_factory.mktemp("worker")
    workspace = make_workspace(tmp_path / "ws")
    deployment_id = deploy_to_pool(workspace, POOL)

    # The worker's environment is what its flow runs get: the API and the tracking server.
    env = {**stage_env(), "PREFECT_API_URL": PREFECT_API_URL.value(), "MLFLOW_TRACKING_URI": tracking_server.uri,
           "PREFECT_WORKER_QUERY_SECONDS": "1"}
    log = tmp_path / "worker.log"
    with open(log, "wb") as output:
        worker = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", POOL,
                                   "--type", "process", "--limit", "1"], env=env, cwd=tmp_path, stdout=output,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        flow_run = asyncio.run(create_run(deployment_id, {"workspace": str(workspace), "stages": ["synthesize_persons"]}))
        deadline = time.monotonic() + 600
        while True:
            current = asyncio.run(read_run(flow_run.id))
            if current.state.is_final() or time.monotonic() > deadline or worker.poll() is not None:
                break
            time.sleep(1)
    finally:
        stop_worker(worker)
    return workspace, deployment_id, flow_run, current, log


def test_a_worker_runs_a_flow_run_created_through_the_api(worker_run, tracking_server):
    workspace, deployment_id, flow_run, current, log = worker_run
    pool, deployment = asyncio.run(read_pool_and_deployment(deployment_id))
    assert pool.type == "process"
    assert deployment.name == DEPLOYMENT_NAME and deployment.work_pool_name == POOL
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
    assert current.state.is_completed(), (current.state, log.read_text()[-4000:])
    picked_up = (current.start_time - current.created).total_seconds()
    print(f"worker pick-up latency: {picked_up:.1f} s")
    assert (workspace / "data" / "persons").is_dir()

    client = MlflowClient(tracking_server.uri)
    experiment = client.get_experiment_by_name("subjectlab")
    (parent,) = client.search_runs([experiment.experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run.id}'")
    assert parent.info.status == "FINISHED"
    (child,) = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert child.data.tags["subjectlab.stage"] == "synthesize_persons" and child.info.status == "FINISHED"


def test_prefect_ui_shows_the_deployment_its_schedule_and_the_completed_run(worker_run, prefect_ui):
    _, _, flow_run, current, _ = worker_run
    assert current.state.is_completed()
    with browser_page() as page:
        page.goto(prefect_ui)
        page.get_by_role("link", name="Deployments").first.click()
        page.get_by_text(DEPLOYMENT_NAME, exact=True).first.wait_for()
        page.get_by_text("At 03:00 AM").first.wait_for()          # the cron schedule 0 3 * * *, as the UI says it
        page.get_by_text("subjectlab-pipeline").first.wait_for()   # the flow's name arrives by a request of its own
        page.screenshot(path=str(artifacts_dir() / "prefect-deployments.png"), full_page=True)

        page.get_by_role("link", name="Runs").first.click()
        page.get_by_text(flow_run.name, exact=True).first.wait_for()
        row = page.locator("div", has=page.get_by_text(flow_run.name, exact=True)).filter(has_text="Completed")
        assert row.count() > 0
        page.screenshot(path=str(artifacts_dir() / "prefect-flow-runs.png"), full_page=True)
