"""The UIs checked as a person would, in a real headless browser: MLflow's runs table and
compare view of the re-ID ablation rows (the Prefect UI: tests/test_workers.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from flows.tracking_server import free_port
from tasks.core.tracking import compare_url, runs_url
from tasks.deskpro.reid_ablation_report import TABLE_VIEW
from tests.browser import artifacts_dir, browser_page
from tests.conftest import SMOKE_ABLATION_ROWS, stage_env, wait_for_health

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_ui(smoke_repo, tmp_path_factory):
    """MLflow's UI (its server) on a copy of the smoke pipeline's store."""
    source, _ = smoke_repo
    store = tmp_path_factory.mktemp("ui") / "mlflow.db"
    shutil.copy2(source / "mlflow" / "mlflow.db", store)
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{store}",
               "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(command, env=stage_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    wait_for_health(f"{uri}/health", server)
    yield uri
    server.terminate()
    server.wait(timeout=30)


def test_mlflow_ui_opens_the_ablation_rows_and_compares_their_metrics(mlflow_ui):
    client = MlflowClient(mlflow_ui)
    experiment = client.get_experiment_by_name("subjectlab")
    # the experiment says what it is: a model-training experiment, not a GenAI one
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    search = "tags.`subjectlab.stage` LIKE 'reid_ablation@%'"
    rows = client.search_runs([experiment.experiment_id], search)
    names = sorted(r.info.run_name for r in rows)
    assert names == sorted(f"reid_ablation@{row}" for row in SMOKE_ABLATION_ROWS)

    with browser_page() as page:   # a new user's browser: nothing chosen, nothing remembered
        # Table 3 as MLflow's runs table: the view the report stage saved, its metrics as columns
        page.goto(runs_url(mlflow_ui, experiment.experiment_id, view=TABLE_VIEW))
        for name in names:
            page.get_by_text(name, exact=True).first.wait_for()
        body = page.inner_text("body")
        assert "No data available" not in body and "Traces\n0" not in body
        assert "msp@plain_gd" not in body   # the view's filter holds
        columns = body.split("Run Name", 1)[1].split("reid_ablation@", 1)[0]
        for column in ("test.prcc_cross.rank1", "test.prcc_cross.mAP", "test.celeb_light.rank5"):
            assert column in columns, columns
        for run in rows:
            value = run.data.metrics["test.prcc_cross.mAP"]
            assert f"{value:.4g}" in body or f"{value:.4f}".rstrip("0") in body, value
        page.screenshot(path=str(artifacts_dir() / "mlflow-runs-reid-ablation.png"), full_page=True)

        # the plain filtered link shows the same rows
        page.goto(runs_url(mlflow_ui, experiment.experiment_id, search))
        for name in names:
            page.get_by_text(name, exact=True).first.wait_for()

        page.goto(compare_url(mlflow_ui, experiment.experiment_id, [r.info.run_id for r in rows]))
        page.get_by_text(f"Comparing {len(rows)} Runs", exact=False).first.wait_for()
        metric = "test.celeb_light.rank1"
        page.get_by_text(metric, exact=True).first.wait_for()
        text = page.inner_text("body")
        for name in names:
            assert name in text
        # the metrics section lists the ablation's metrics, a value per run beside them (a
        # virtualised grid: its cells are read as text, each run's value among them)
        metrics_part = text.split("Metrics\nShow diff only", 1)[1]
        for key in ("test.celeb_light.mAP", "test.celeb_light.rank1", "test.prcc_cross.mAP"):
            assert key in metrics_part
        for run in rows:
            value = run.data.metrics[metric]
            assert any(f"{value:.{digits}f}".rstrip("0").rstrip(".") in metrics_part for digits in (1, 2, 3, 4, 5))
        page.screenshot(path=str(artifacts_dir() / "mlflow-compare-reid-ablation.png"), full_page=True)


def test_static_report_has_every_table_and_picture_linked_to_its_run(smoke_repo, mlflow_ui, tmp_path):
    source, _ = smoke_repo
    result = subprocess.run([sys.executable, "-m", "flows.report", "--workspace", str(source), "--out",
                             str(tmp_path / "report"), "--mlflow-ui", mlflow_ui], env=stage_env(), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    page_path = tmp_path / "report" / "index.html"
    assert result.stdout.strip() == f"report: {page_path}"
    pictures = sorted((source / "plots").rglob("*.png"))
    client = MlflowClient(mlflow_ui)

    with browser_page() as page:
        page.goto(page_path.as_uri())
        page.wait_for_load_state("load")
        headings = page.locator("h3").all_inner_texts()
        for title in ("DeSKPro: Table 3", "Personalization", "MSP-Diffusion: Table 1", "eCLIPsed: Table 1"):
            assert any(h.startswith(title) for h in headings), headings
        assert page.locator("table").count() >= 4
        assert "deskpro_star" in page.locator("table").first.inner_text()   # Table 3's rows
        # every picture of the pipeline is on the page, and every one loaded
        images = page.locator("img")
        assert images.count() == len(pictures)
        broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0)"
                               ".map(i => i.src)")
        assert broken == []
        # every link leads to a run that exists, named for the stage it says
        links = page.evaluate("() => [...document.links].map(a => [a.href, a.textContent])")
        assert len(links) == len(pictures) + 4 + 1   # pictures, tables, all runs
        for href, text in links:
            assert href.startswith(mlflow_ui + "/#/experiments/"), href
            if "/runs/" in href:
                run = client.get_run(href.rsplit("/", 1)[1])
                assert run.info.status == "FINISHED"
                assert run.data.tags["subjectlab.stage"] in text, (text, run.data.tags["subjectlab.stage"])
        page.screenshot(path=str(artifacts_dir() / "report.png"))

        # and a person following one lands on the run's page
        table_link = page.get_by_role("link", name="MLflow run of reid_ablation_report")
        table_link.click()
        page.get_by_text("reid_ablation_report", exact=True).first.wait_for()
        assert "/runs/" in page.url
