"""Whole-stage publishing: all of a stage's outputs become visible, or none of them.

Every point of the publish (tasks/core/outputs.py) gets an injected failure (in process) and
a kill -9 (in a subprocess); afterwards the outputs must be all old or all new, and once the
next run has started, no twin (staged, replaced, discarded, journal) may be left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core import failpoints
from tasks.core.failpoints import ENV, InjectedFault
from tasks.core.outputs import atomic_outputs, recover
from tests.conftest import ROOT, edit_params, make_workspace, python_stage

# The points of a publish over three outputs, in the order they are reached.
POINTS = ["publish.before_journal", "publish.journal_written",
          "publish.replaced.0", "publish.swapped.0", "publish.replaced.1", "publish.swapped.1",
          "publish.replaced.2", "publish.swapped.2", "publish.before_commit", "publish.committed"]


@pytest.fixture(autouse=True)
def fresh_failpoints():
    failpoints.reset()


def targets(root: Path) -> list[Path]:
    return [root / "data" / "model", root / "metrics" / "stage.json", root / "plots" / "stage"]


def write_version(paths: list[Path], version: str) -> None:
    model, metrics, plots = paths
    model.mkdir(parents=True)
    (model / "weights.bin").write_text(version)
    (model / "config.json").write_text(version)
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({"version": version}))
    plots.mkdir(parents=True)
    (plots / "curve.csv").write_text(version)


def version_of(paths: list[Path]) -> list[str | None]:
    model, metrics, plots = paths
    return [
        (model / "weights.bin").read_text() if model.exists() else None,
        json.loads(metrics.read_text())["version"] if metrics.exists() else None,
        (plots / "curve.csv").read_text() if plots.exists() else None,
    ]


def twins(root: Path) -> list[str]:
    """Hidden leftovers of publishing (a dead run's lock file may stay: it locks nothing)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob(".*") if not p.name.endswith(".lock"))


def stage_like(root: Path, version: str) -> None:
    """What a stage does: write every output into its staging twin, then publish."""
    with atomic_outputs(*targets(root)) as staged:
        write_version(staged, version)


# With no previous outputs nothing is moved aside: the `replaced` points are never reached.
CASES = [(point, False) for point in POINTS] + [(point, True) for point in POINTS if ".replaced." not in point]


@pytest.mark.parametrize(("point", "first_run"), CASES)
def test_a_failure_at_any_point_of_publishing_leaves_all_old_or_all_new(tmp_path, monkeypatch, point, first_run):
    old = None if first_run else "old"
    if not first_run:
        write_version(targets(tmp_path), "old")
    monkeypatch.setenv(ENV, f"{point}=raise")
    with pytest.raises(InjectedFault):
        stage_like(tmp_path, "new")
    # Past the commit point the new outputs stand; before it, the old ones are back.
    expected = "new" if point == "publish.committed" else old
    assert version_of(targets(tmp_path)) == [expected] * 3
    monkeypatch.delenv(ENV)
    stage_like(tmp_path, "next")  # the next run starts cleanly and publishes
    assert version_of(targets(tmp_path)) == ["next"] * 3
    assert twins(tmp_path) == [] and not list(tmp_path.rglob(".*.lock"))


KILLED_STAGE = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.test_publishing import stage_like
stage_like(Path({workspace!r}), "new")
"""


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_any_point_of_publishing_is_rolled_back_or_completed_at_the_next_start(tmp_path, point):
    write_version(targets(tmp_path), "old")
    env = {**os.environ, ENV: f"{point}=kill"}
    script = KILLED_STAGE.format(root=str(ROOT), workspace=str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr
    recover(targets(tmp_path))  # what the next run of the stage does first
    expected = "new" if point == "publish.committed" else "old"
    assert version_of(targets(tmp_path)) == [expected] * 3
    assert twins(tmp_path) == []


def test_leftovers_of_dead_runs_named_by_process_id_are_cleared(tmp_path):
    paths = targets(tmp_path)
    write_version(paths, "old")
    for path in paths:  # what publishing by process id used to leave behind
        (path.parent / f".{path.name}.tmp-12345").mkdir()
    stage_like(tmp_path, "new")
    assert version_of(paths) == ["new"] * 3
    assert twins(tmp_path) == []


def test_a_second_run_of_the_same_stage_is_refused_while_one_stages(tmp_path):
    from tasks.core.errors import UserError

    with atomic_outputs(*targets(tmp_path)) as staged:
        write_version(staged, "first")
        with pytest.raises(UserError, match="another run of this stage is writing it"):
            stage_like(tmp_path, "second")
    assert version_of(targets(tmp_path)) == ["first"] * 3


@pytest.mark.slow
@pytest.mark.parametrize("point", ["publish.swapped.0", "publish.before_commit"])
def test_a_real_stage_killed_while_publishing_is_whole_after_its_next_run(tmp_path, point):
    """The synthesize stage (SynthWorld folder + metrics) killed mid-publish: until it runs
    again DVC does not record it; its next run rolls back and publishes a matching pair."""
    workspace = make_workspace(tmp_path / "ws", git=False)
    edit_params(workspace / "params.yaml", **{"synthesize.num_subjects": 2})
    python_stage("synthesize", workspace)
    edit_params(workspace / "params.yaml", **{"synthesize.num_subjects": 3})
    env_run = subprocess.run([sys.executable, "-m", "tasks.synthworld.synthesize"], cwd=workspace,
                             env={**os.environ, ENV: f"{point}=kill"}, capture_output=True, text=True, timeout=600)
    assert env_run.returncode == -9
    result = python_stage("synthesize", workspace)
    assert "rolled back an unfinished publish" in result.stderr
    metrics = json.loads((workspace / "metrics" / "synthesize.json").read_text())
    subjects = [p for p in (workspace / "data" / "synthworld" / "subjects").iterdir() if p.is_dir()]
    assert len(subjects) == 3 and metrics["subjects"] == 3
    assert twins(workspace / "data") == [] and twins(workspace / "metrics") == []
