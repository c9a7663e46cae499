"""The Prefect pipeline flow on a real (test) Prefect server: a task per stage, nested runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

from flows.dag import stage_order
from flows.pipeline import pipeline
from flows.serve import build_deployment
from tests.conftest import make_workspace

pytestmark = pytest.mark.slow
# The flow runs DeSKPro's main chain of the DAG: a data stage, two trainings that hand one model
# to the next, an evaluation (every other stage is more of the same kind of task; the full smoke
# pipeline is tests/test_pipeline's job, and each extra stage here costs a process start).
STAGES = ["synthesize_persons", "train_reid_teacher", "train_reid", "evaluate_reid"]
ALL_STAGES = ["augment", "synthesize", "synthesize_faces", "synthesize_persons", "train_reid_teacher", "reid_ablation@baseline",
              "reid_ablation@deskpro_star", "reid_ablation@student_fkp", "reid_ablation@teacher",
              "reid_ablation_report", "train_reid", "evaluate_reid", "train_segmenter", "zoo", "pretrain_base",
              "pretrain_clip", "class_images", "finetune", "train_classifier", "pretrain_dino", "evaluate_base",
              "train_face_attributes", "train_face_parts", "train_stylegan", "eclipsed@final", "eclipsed_report",
              "personalization@lora", "personalization@textual_inversion", "personalization_report", "msp@plain_gd",
              "msp@plain_gd_sal", "msp_baseline@textual_inversion", "train_controlnet@openpose",
              "msp_controlnet@plain_gd_controlnet", "msp_report"]


def test_stage_order_comes_from_dvc_yaml(tmp_path):
    order = stage_order(make_workspace(tmp_path / "ws", git=True))
    assert sorted(order) == sorted(ALL_STAGES)
    for before, after in (("synthesize", "augment"), ("augment", "train_segmenter"), ("augment", "train_classifier"),
                          ("synthesize_persons", "train_reid_teacher"), ("train_reid_teacher", "train_reid"),
                          ("train_reid", "evaluate_reid"), ("train_reid_teacher", "reid_ablation@teacher"),
                          ("reid_ablation@baseline", "reid_ablation_report"), ("zoo", "pretrain_base"),
                          ("augment", "pretrain_base"), ("zoo", "pretrain_clip"), ("pretrain_base", "class_images"),
                          ("class_images", "finetune"), ("train_segmenter", "evaluate_base"),
                          ("train_classifier", "personalization@lora"), ("pretrain_dino", "personalization@lora"),
                          ("personalization@textual_inversion", "personalization_report"),
                          ("finetune", "msp@plain_gd"), ("train_segmenter", "msp@plain_gd_sal"),
                          ("synthesize_faces", "train_face_parts"), ("synthesize_faces", "pretrain_clip"),
                          ("train_face_attributes", "train_stylegan"), ("train_stylegan", "eclipsed@final"),
                          ("train_face_parts", "eclipsed@final"), ("pretrain_clip", "eclipsed@final"),
                          ("eclipsed@final", "eclipsed_report"),
                          ("personalization@textual_inversion", "msp_baseline@textual_inversion"),
                          ("msp@plain_gd_sal", "msp_report"), ("msp_baseline@textual_inversion", "msp_report"),
                          ("pretrain_base", "train_controlnet@openpose"), ("synthesize", "train_controlnet@openpose"),
                          ("train_controlnet@openpose", "msp_controlnet@plain_gd_controlnet"),
                          ("finetune", "msp_controlnet@plain_gd_controlnet"),
                          ("msp_controlnet@plain_gd_controlnet", "msp_report")):
        assert order.index(before) < order.index(after)


async def task_runs_of(flow_run_id) -> list:
    async with get_client() as client:
        return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                           sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=50)


def test_pipeline_flow_runs_a_task_per_stage_with_nested_mlflow_runs(prefect_server, tracking_server, tmp_path,
                                                                     monkeypatch):
    """The flow against the shared tracking server (MLflow on PostgreSQL, proxied artifacts),
    through MLFLOW_TRACKING_URI alone; the embedded store: tests/test_pipeline.py."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_server.uri)
    workspace = make_workspace(tmp_path / "ws")
    state = pipeline(workspace=str(workspace), stages=STAGES, return_state=True)
    assert state.is_completed()
    assert state.result() == {stage: True for stage in STAGES}

    task_runs = asyncio.run(task_runs_of(state.state_details.flow_run_id))
    assert sorted(t.name for t in task_runs) == sorted(STAGES)
    assert all(t.state.is_completed() for t in task_runs)

    assert not (workspace / "mlflow" / "mlflow.db").exists()   # nothing went to a local store
    client = MlflowClient(tracking_server.uri)
    experiment = client.get_experiment_by_name("subjectlab")
    flow_run_id = str(state.state_details.flow_run_id)
    (parent,) = client.search_runs([experiment.experiment_id], f"tags.`prefect.flow_run_id` = '{flow_run_id}'")
    assert parent.info.status == "FINISHED" and parent.data.tags["subjectlab.stage"] == "pipeline"
    children = client.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.data.tags["subjectlab.stage"] for r in children) == sorted(STAGES)
    assert all(r.info.status == "FINISHED" for r in children)
    assert all(r.data.params["profile"] == "smoke" for r in children)   # each stage's params reached the server

    by_stage = {r.data.tags["subjectlab.stage"]: r for r in children}
    for stage in ("train_reid_teacher", "train_reid"):
        run = by_stage[stage]
        # Lightning's curves, and MLflow's system metrics (which Lightning never starts)
        assert any(key.startswith("train/") for key in run.data.metrics), (stage, sorted(run.data.metrics))
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(run.data.metrics)
    for stage in ("train_reid_teacher", "evaluate_reid"):
        # artifacts come back through the server (mlflow-artifacts:), not from a local path
        run = by_stage[stage]
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")
        local = client.download_artifacts(run.info.run_id, "", str(tmp_path / "download" / stage))
        files = [p for p in Path(local).rglob("*") if p.is_file()]
        assert files and all(p.stat().st_size > 0 for p in files), stage

    # a second flow run finds everything up to date and reruns nothing
    again = pipeline(workspace=str(workspace), stages=STAGES, return_state=True)
    assert again.result() == {stage: False for stage in STAGES}


def test_failing_stage_fails_the_flow_and_its_parent_run(prefect_server, tmp_path):
    workspace = make_workspace(tmp_path / "ws")
    # train_segmenter alone in a fresh workspace: its input (the augmented data) is missing
    state = pipeline(workspace=str(workspace), stages=["train_segmenter"], return_state=True)
    assert state.is_failed()
    assert "stage train_segmenter failed" in str(state.message) + repr(state.data)
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id])
    assert parent.info.status == "FAILED"
    assert not (workspace / "data" / "models" / "segmenter").exists()


def test_serve_deployment_carries_the_cron_schedule(prefect_server, tmp_path):
    workspace = make_workspace(tmp_path / "ws", git=False)
    deployment = build_deployment(workspace)
    deployment_id = deployment.apply()

    async def read():
        async with get_client() as client:
            return await client.read_deployment(deployment_id)

    stored = asyncio.run(read())
    assert stored.name == "scheduled"
    assert stored.parameters == {"workspace": str(workspace.resolve())}
    assert [s.schedule.cron for s in stored.schedules] == ["0 3 * * *"]
