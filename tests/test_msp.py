"""MSP-Diffusion's Table 1 stages in the smoke repro, SynthWorld's compositions, and bad input.

The smoke profile runs two configurations of ours (global diffuser, without and with SAL) and one
baseline row (a personalization row's model, one prompt naming every subject).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lightning_modules.msp import load_composition
from lightning_modules.synthworld.subjects import IDENTIFIER_POOL
from tests.conftest import python_stage, workspace_with_data, write_params
from tests.test_reid_pipeline import runs_by_stage

ROWS = ("plain_gd", "plain_gd_sal")
BASELINE = "textual_inversion"
COUNTS = ("n1", "n2", "n3", "n4plus")
MSP_DATA = ("augmented", "synthworld", "models", "personalization")


def params_of(workspace: Path) -> dict:
    return yaml.safe_load((workspace / "params.yaml").read_text())


def test_synthesize_writes_compositions_whose_truth_is_the_layout(smoke_repo):
    workspace, _ = smoke_repo
    cfg = params_of(workspace)["synthesize"]
    folder = workspace / "data" / "synthworld" / "compositions"
    files = sorted(folder.glob("*.yaml"))
    assert len(files) == len(cfg["composition_counts"]) * cfg["compositions_per_count"]
    subjects = {p.name for p in (workspace / "data" / "synthworld" / "subjects").iterdir() if p.is_dir()}
    for path in files:
        comp = load_composition(path, size=cfg["composition_size"], identifiers=IDENTIFIER_POOL,
                                rare_tokens=IDENTIFIER_POOL)
        n = int(path.stem.split("_")[0][1:])
        truths = [comp.segments[j].subject for j in comp.subject_segments]
        assert len(truths) == n and len(set(truths)) == n and set(truths) <= subjects
        assert comp.scaffolding is not None
        # every subject segment is a silhouette (a fraction of the canvas), the rest is background
        for j in comp.subject_segments:
            assert 10 <= comp.masks[j].sum() < 0.6 * comp.masks[j].size


def test_table_one_rows_and_report_run_in_the_smoke_repro(smoke_repo):
    workspace, result = smoke_repo
    for stage in [f"msp@{r}" for r in ROWS] + [f"msp_baseline@{BASELINE}", "msp_report"]:
        assert f"Running stage '{stage}'" in result.stdout
    msp = params_of(workspace)["msp"]
    per_row = len(COUNTS) * msp["compositions_per_count"] * msp["images_per_composition"]
    for row in (*ROWS, BASELINE):
        metrics = json.loads((workspace / "metrics" / "msp" / f"{row}.json").read_text())
        assert metrics["images"] == per_row and set(metrics["by_count"]) == set(COUNTS)
        for key in ("clip_i", "clip_t", "sas", "identity_accuracy", "missing", "hybrid", "complete"):
            assert np.isfinite(metrics[key]), (row, key)
            assert -1 <= metrics[key] <= 1
        images = sorted((workspace / "data" / "msp" / row / "images").glob("*.png"))
        assert len(images) == per_row
        pictures = sorted((workspace / "plots" / "msp" / row).glob("*.png"))
        assert len(pictures) == len(COUNTS) * msp["compositions_per_count"]
        # layout, the segmenter's reading and every image side by side
        assert Image.open(pictures[0]).width > Image.open(pictures[0]).height
    sal = json.loads((workspace / "metrics" / "msp" / "plain_gd_sal.json").read_text())
    assert sal["sal_loss"] is not None and 0 <= sal["sal_loss"] <= 1
    assert json.loads((workspace / "metrics" / "msp" / "plain_gd.json").read_text())["sal_loss"] is None

    table = (workspace / "plots" / "msp_report" / "table.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0].strip("| ") for line in lines[1:]] == [BASELINE, *ROWS]
    assert "n>3 SAS" in lines[0] and "SAL raises SAS" in table
    report = json.loads((workspace / "metrics" / "msp_report.json").read_text())
    assert set(report["rows"]) == {BASELINE, *ROWS}
    assert report["orderings"]["sal_raises_sas"] in (True, False)

    runs = runs_by_stage(workspace)
    for row in ROWS:
        (run,) = runs[f"msp@{row}"]
        assert run.data.tags["subjectlab.table"] == "msp" and run.data.tags["subjectlab.row"] == row
        assert "by_count.n4plus.sas" in run.data.metrics
    assert runs[f"msp_baseline@{BASELINE}"][0].data.tags["method"] == "baseline"


@pytest.fixture()
def msp_copy(smoke_repo, tmp_path) -> Path:
    return workspace_with_data(smoke_repo[0], tmp_path / "ws", MSP_DATA)


def _composition(workspace: Path) -> Path:
    return workspace / "data" / "synthworld" / "compositions" / "n2_0.yaml"


def _edit_composition(workspace: Path, edit) -> None:
    path = _composition(workspace)
    spec = yaml.safe_load(path.read_text())
    edit(spec, path.parent)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))


def _drop_a_prompt(spec, folder):
    spec["segments"].pop(next(iter(spec["segments"])))


def _stranger(spec, folder):
    colour = next(iter(spec["segments"]))
    spec["segments"][colour] = f"a {IDENTIFIER_POOL[-1]} cartoon"   # the smoke run fine-tunes 4 subjects


def _small_layout(spec, folder):
    Image.open(folder / spec["layout"]).resize((16, 16), Image.NEAREST).save(folder / spec["layout"])


def _pose_without_controlnet(spec, folder):
    shutil.copy(folder / spec["layout"], folder / "pose.png")
    spec["pose"] = "pose.png"


@pytest.mark.parametrize("case, expected", [
    (_drop_a_prompt, "n2_0.yaml: segments: the layout colour #"),
    (_stranger, "is an identifier the model was not fine-tuned on"),
    (_small_layout, "n2_0.yaml: layout: .* is 16 x 16 px; the model generates 32 x 32"),
    (_pose_without_controlnet, "n2_0.yaml: pose: given, but ControlNet is off"),
    ("no_model", "data/models/finetuned: no fine-tuned model"),
    ("empty_folder", "holds no composition"),
])
def test_bad_input_stops_before_sampling_in_one_line_and_writes_nothing(msp_copy, case, expected):
    if case == "no_model":
        shutil.rmtree(msp_copy / "data" / "models" / "finetuned")
    elif case == "empty_folder":
        for path in _composition(msp_copy).parent.glob("*.yaml"):
            path.unlink()
    else:
        _edit_composition(msp_copy, case)
    result = python_stage("msp", msp_copy, "--row", ROWS[0], check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "Predicting" not in result.stdout + result.stderr
    assert re.search(expected, result.stderr), result.stderr[-1000:]
    assert not (msp_copy / "data" / "msp").exists() and not (msp_copy / "metrics" / "msp").exists()


def test_a_baseline_must_be_a_row_that_runs(msp_copy):
    name = write_params(msp_copy, "bad.yaml", lambda p: p["msp"].update(baselines=["dreambooth"]))
    result = python_stage("msp_baseline", msp_copy, "--row", "dreambooth", "--params", name, check=False)
    assert result.returncode == 2
    assert "msp.baselines: 'dreambooth' is not a row of personalization.table" in result.stderr


def test_table_one_images_are_bit_identical_on_one_and_two_processes(msp_copy, monkeypatch):
    """One composition per batch, dealt whole to the ranks, every image from its own seed: the
    same pictures on 1 or 2 CPU processes, SAL's gradients included (one intra-op thread per
    process in both runs: a CPU matmul's summation order follows its thread count)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    row = "plain_gd_sal"
    folder = msp_copy / "data" / "msp" / row / "images"

    def pictures() -> dict[str, np.ndarray]:
        return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}

    python_stage("msp", msp_copy, "--row", row)
    one, one_metrics = pictures(), json.loads((msp_copy / "metrics" / "msp" / f"{row}.json").read_text())

    def ddp(params):
        params["trainer"].update(strategy="ddp", devices=2, accelerator="cpu")
    result = python_stage("msp", msp_copy, "--row", row, "--params", write_params(msp_copy, "ddp.yaml", ddp))
    assert "Starting with 2 processes" in result.stdout + result.stderr
    two = pictures()
    assert one.keys() == two.keys() and len(one) == len(COUNTS) * 2
    for name in one:
        assert np.array_equal(one[name], two[name]), name
    two_metrics = json.loads((msp_copy / "metrics" / "msp" / f"{row}.json").read_text())
    assert {k: v for k, v in two_metrics.items() if k != "sal_loss"} == \
        {k: v for k, v in one_metrics.items() if k != "sal_loss"}   # rank zero's SAL losses cover half the batches
    assert [len(v) for v in runs_by_stage(msp_copy).values()] == [2]   # rank 1 opened no run
