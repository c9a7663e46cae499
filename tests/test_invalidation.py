"""`dvc status` re-runs exactly what changed, in a real git + DVC workspace.

The workspace's dvc.lock is written by `dvc commit` over placeholder outputs instead of a
run of the pipeline: what is under test is DVC's view of deps and params, not the stages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.core.profiles import compose
from tests.conftest import dvc, make_workspace, run

# The demo's personalization table: the LoRA row is the finetune stage's own run.
ROWS = {"personalization@dreambooth", "personalization@textual_inversion"}
MSP = {"msp@plain_gd", "msp@plain_gd_sal", "msp_baseline@dreambooth"}   # they draw with the diffusion code
DIFFUSION = {"zoo", "pretrain_base", "pretrain_clip", "pretrain_dino", "class_images", "finetune",
             "evaluate_base"} | ROWS | MSP
GIT = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]


def placeholder_outputs(workspace: Path) -> list[str]:
    """Write a stand-in for every out and every data dep no stage produces; the stage names."""
    from dvc.repo import Repo

    def fill(path: Path, text: str) -> None:
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        else:
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder").write_text(text)

    with Repo(str(workspace)) as repo:
        stages = list(repo.index.stages)
        for stage in stages:
            for out in stage.outs:
                fill(Path(out.fs_path), "{}\n" if out.fs_path.endswith(".json") else stage.name)
        for stage in stages:
            for dep in stage.deps:
                if not hasattr(dep, "params") and not Path(dep.fs_path).exists():
                    fill(Path(dep.fs_path), "input")
        return sorted(stage.name for stage in stages)


def changed(workspace: Path) -> set[str]:
    return set(json.loads(dvc(workspace, "status", "--json").stdout or "{}"))


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> tuple[Path, list[str]]:
    """A workspace on the default profile, every stage committed as up to date."""
    workspace = make_workspace(tmp_path_factory.mktemp("invalidation") / "ws", profile="default", ablation_rows=None)
    names = placeholder_outputs(workspace)
    dvc(workspace, "commit", "--force")
    run([*GIT, "add", "-A"], workspace)
    run([*GIT, "commit", "-qm", "committed"], workspace)
    return workspace, names


@pytest.fixture()
def workspace(committed) -> Path:
    path, _ = committed
    assert changed(path) == set()
    yield path
    run(["git", "checkout", "-q", "--", "."], path)
    run(["git", "clean", "-qfd", "conf", "tasks", "lightning_modules"], path)


def recompose(workspace: Path, *overrides: str) -> None:
    """What `dvc exp run -S ...` does before it reproduces: compose params.yaml from conf/."""
    compose(list(overrides), root=workspace)


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


def test_an_inactive_profile_and_comments_change_nothing(workspace):
    smoke = workspace / "conf" / "profile" / "smoke.yaml"
    smoke.write_text(smoke.read_text().replace("max_steps: 8", "max_steps: 9"))
    append(workspace / "conf" / "config.yaml", "# a comment\n")
    recompose(workspace)
    assert changed(workspace) == set()


def test_a_stage_section_changes_that_stage_alone(workspace):
    recompose(workspace, "finetune.max_steps=99")
    assert changed(workspace) == {"finetune"} | ROWS   # every row fine-tunes with finetune, its keys apart
    recompose(workspace, "+personalization.rows.textual_inversion.max_steps=7")
    assert changed(workspace) == {"personalization@textual_inversion"}
    recompose(workspace, "msp.rows.plain_gd_sal.global_diffuser=false")
    assert changed(workspace) == {"msp@plain_gd_sal"}
    recompose(workspace, "reid_ablation.rows.deskpro.knowledge_propagation=false")
    assert changed(workspace) == {"reid_ablation@deskpro"}


def test_a_table_reruns_its_report_when_its_rows_change_and_ignores_rows_it_does_not_run(workspace):
    # The demo's Table 3 runs two rows: editing another row's definition changes no stage.
    recompose(workspace, "reid_ablation.rows.csa.attention_loss=true")
    assert changed(workspace) == set()
    recompose(workspace, "reid_ablation.table=[deskpro]")
    assert changed(workspace) == {"reid_ablation_report"}
    recompose(workspace, "personalization.rows.custom_diffusion.lr=3.0e-4")   # a row the demo does not run
    assert changed(workspace) == set()
    recompose(workspace, "personalization.table=[textual_inversion,dreambooth]")
    assert changed(workspace) == {"personalization_report"}   # the report's order is the table's
    recompose(workspace, "msp.rows.plain.sal=true")            # a Table 1 row the demo does not run
    assert changed(workspace) == set()
    recompose(workspace, "msp.table=[plain_gd_sal,plain_gd]")
    assert changed(workspace) == {"msp_report"}


def test_a_shared_section_changes_the_stages_that_read_it(workspace):
    recompose(workspace, "trainer.precision=bf16-mixed")
    trains = changed(workspace)
    assert "finetune" in trains and "train_segmenter" in trains
    assert not trains & {"synthesize", "synthesize_persons", "augment", "zoo", "reid_ablation_report"}


def test_editing_the_shared_runtime_invalidates_every_stage(committed, workspace):
    _, names = committed
    append(workspace / "tasks" / "core" / "outputs.py", "# shared\n")
    assert changed(workspace) == set(names)
    run(["git", "checkout", "-q", "--", "."], workspace)
    append(workspace / "lightning_modules" / "core" / "visual.py", "# shared\n")
    assert changed(workspace) == set(names)


def test_editing_a_method_invalidates_only_its_stages(committed, workspace):
    _, names = committed
    append(workspace / "lightning_modules" / "diffusion" / "data.py", "# diffusion\n")
    assert changed(workspace) == DIFFUSION
    run(["git", "checkout", "-q", "--", "."], workspace)
    append(workspace / "tasks" / "deskpro" / "setup.py", "# deskpro\n")
    assert changed(workspace) == {n for n in names if n.startswith(("train_reid", "evaluate_reid", "reid_ablation"))}


def test_a_path_set_by_an_override_reaches_dvc_yaml(workspace):
    recompose(workspace, "augment.subjects_dir=my_subjects")
    status = json.loads(dvc(workspace, "status", "--json").stdout)
    assert set(status) == {"augment", "pretrain_dino"}   # DINO trains on the subject images themselves
    assert all("my_subjects" in json.dumps(status[stage]) for stage in status)


def test_dvc_exp_run_composes_the_profile_and_an_override(tmp_path):
    """The README's way to change a knob: DVC's own Hydra composition, then the stage runs."""
    workspace = make_workspace(tmp_path / "ws", profile="default")
    dvc(workspace, "exp", "run", "-S", "profile=smoke", "-S", "synthesize.num_subjects=2", "synthesize")
    params = (workspace / "params.yaml").read_text()
    assert "profile: smoke" in params
    metrics = json.loads((workspace / "metrics" / "synthesize.json").read_text())
    smoke = compose(["profile=smoke"], root=workspace, output=tmp_path / "smoke.yaml")
    assert metrics["subjects"] == 2 and metrics["scenes"] == smoke.synthesize.num_scenes
