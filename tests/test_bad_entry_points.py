"""The entry points that run stages end as the stages do: the `subjectlab` CLI, the pipeline
flow (`python -m flows.pipeline`) and the scheduled deployment (`python -m flows.serve`). A user
mistake is one `error:` line and exit code 2, never a Prefect traceback wall; a stage that
refused its input surfaces as its own line."""

from __future__ import annotations

import sys

import pytest
import yaml

from tests.conftest import make_workspace, run
from tests.test_bad_values import assert_nothing_written, assert_refused, changed

def test_subjectlab_params_refuses_a_bad_option_in_one_line(tmp_path):
    result = run([sys.executable, "-m", "tasks.core.cli", "params", "--sett", "seed=1"], tmp_path, check=False)
    assert_refused(result, "subjectlab params: unrecognized arguments: --sett")


@pytest.mark.parametrize("args, edit, expected", [
    (["--stage", "synthesise"], None, "unknown stage(s) synthesise; dvc.yaml has synthesize,"),
    (["--stages", "augment"], None, "python -m flows.pipeline: unrecognized arguments: --stages"),
    ([], ("params.yaml", ""), "params.yaml: empty; compose a complete params file"),
    ([], ("params.yaml", "seed: 1\n"), "params.yaml: missing key profile"),
    ([], ("dvc.yaml", "stages: [\n"), "dvc.yaml: unable to read"),
])
def test_the_pipeline_flow_refuses_before_prefect_starts(tmp_path, args, edit, expected):
    workspace = make_workspace(tmp_path / "ws")
    if edit is not None:
        (workspace / edit[0]).write_text(edit[1])
    result = run([sys.executable, "-m", "flows.pipeline", *args], workspace, check=False, timeout=600)
    assert_refused(result, expected)
    assert "Starting temporary server" not in result.stderr
    assert_nothing_written(workspace)


def test_a_failed_stage_becomes_the_flows_one_line():
    from flows.entry import StageFailed, StageRefused
    from flows.pipeline import stage_failure

    refused = stage_failure("augment", 255, "mine/a.png: not a readable image (empty file)",
                            "failed to reproduce 'augment': failed to run: python -m tasks.msp.augment, exited with 2")
    assert isinstance(refused, StageRefused)
    assert str(refused) == "stage augment failed: mine/a.png: not a readable image (empty file)"
    missing = stage_failure("train_segmenter", 255, None,
                            "failed to reproduce 'train_segmenter': [Errno 2] No such file or directory: 'data/augmented'")
    assert isinstance(missing, StageRefused) and "No such file or directory: 'data/augmented'" in str(missing)
    crashed = stage_failure("augment", 255, None,
                            "failed to reproduce 'augment': failed to run: python -m tasks.msp.augment, exited with 1")
    assert isinstance(crashed, StageFailed) and not isinstance(crashed, StageRefused)
    assert str(crashed) == "stage augment failed (dvc repro exit 255); its output is above"


@pytest.mark.parametrize("edit, env, expected", [
    ({"schedule.cron": "61 3 * * *"}, {}, 'schedule.cron: Invalid cron string: "61 3 * * *"'),
    ({"schedule.timezone": "Mars/Olympus"}, {}, "schedule.timezone: expected an IANA time zone"),
    ({}, {"PREFECT_API_URL": "http://127.0.0.1:9/api"},
     "the Prefect API at http://127.0.0.1:9/api cannot be reached (start it: prefect server start)"),
])
def test_serve_ends_in_one_line(tmp_path, monkeypatch, edit, env, expected):
    workspace = make_workspace(tmp_path / "ws", git=False)
    params = workspace / "params.yaml"
    params.write_text(yaml.safe_dump(changed(yaml.safe_load(params.read_text()), **edit), sort_keys=False))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert_refused(run([sys.executable, "-m", "flows.serve"], workspace, check=False, timeout=600), expected)


@pytest.mark.slow
def test_a_stage_refusing_its_input_ends_the_flow_in_its_one_line(tmp_path):
    """A real flow run (a temporary Prefect server): the stage's own line, exit 2, no traceback."""
    from tests.test_subjects_folder import make_folder

    workspace = make_workspace(tmp_path / "ws", git=True)
    subjects = make_folder(workspace / "mine")
    scenes = workspace / "scenes"
    scenes.mkdir()
    (subjects / "my_cartoon" / "images" / "0.jpg").replace(scenes / "0.jpg")
    (subjects / "my_dog" / "images" / "2.png").write_bytes(b"")
    params = workspace / "params.yaml"
    params.write_text(yaml.safe_dump(changed(yaml.safe_load(params.read_text()), **{
        "augment.subjects_dir": "mine", "augment.scenes_dir": "scenes"}), sort_keys=False))
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "mine"], workspace)
    result = run([sys.executable, "-m", "flows.pipeline", "--stage", "augment"], workspace, check=False, timeout=900)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == ["error: stage augment failed: mine/my_dog/images/2.png: not a readable image (empty file)"]
    assert_nothing_written(workspace, tracking=True)
