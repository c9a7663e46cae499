"""MSP-Diffusion's Table 1 stages in the smoke repro, SynthWorld's compositions, and bad input.

The smoke profile runs two configurations of ours (global diffuser, without and with SAL), the
ControlNet-OpenPose row (its ControlNet trained by train_controlnet@openpose) and one baseline row
(a personalization row's model, one prompt naming every subject).
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
from tests.conftest import one_intra_op_thread, python_stage, stopped, workspace_with_data, write_params
from tests.test_reid_pipeline import runs_by_stage

ROWS = ("plain_gd", "plain_gd_sal")
CONTROLNET_ROW = "plain_gd_controlnet"
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


def test_every_composition_has_a_twin_with_its_figures_pose(smoke_repo):
    """compositions_openpose/ repeats each composition with a pose image: skeletons on the
    figures' segments only (cartoons and robots), black where no figure stands."""
    from scipy.ndimage import binary_dilation

    workspace, _ = smoke_repo
    size = params_of(workspace)["synthesize"]["composition_size"]
    plain_folder = workspace / "data" / "synthworld" / "compositions"
    twins = workspace / "data" / "synthworld" / "compositions_openpose"
    files = sorted(plain_folder.glob("*.yaml"))
    assert [f.name for f in sorted(twins.glob("*.yaml"))] == [f.name for f in files]
    figures_seen = 0
    for path in files:
        comp = load_composition(path, size=size, identifiers=IDENTIFIER_POOL, rare_tokens=IDENTIFIER_POOL)
        twin = load_composition(twins / path.name, size=size, identifiers=IDENTIFIER_POOL,
                                rare_tokens=IDENTIFIER_POOL, controlnet=True)
        assert np.array_equal(twin.layout, comp.layout) and twin.global_prompt == comp.global_prompt
        drawn = twin.pose.any(-1)
        figures = [j for j in comp.subject_segments if comp.segments[j].subject.split("_")[0] in ("cartoon", "robot")]
        if not figures:
            assert not drawn.any(), path.name
            continue
        figures_seen += 1
        on_figures = binary_dilation(np.any([comp.masks[j] for j in figures], axis=0), iterations=1)
        assert drawn.any() and (drawn & ~on_figures).sum() <= 0.1 * drawn.sum(), path.name
    assert figures_seen


def test_train_controlnet_writes_a_controlnet_and_its_steering_measurement(smoke_repo):
    workspace, result = smoke_repo
    assert "Running stage 'train_controlnet@openpose'" in result.stdout
    cfg = params_of(workspace)["train_controlnet"]
    metrics = json.loads((workspace / "metrics" / "train_controlnet" / "openpose.json").read_text())
    assert metrics["steps"] == cfg["steps"] and metrics["held_out_pairs"] == cfg["eval_pairs"]
    assert metrics["train_pairs"] == params_of(workspace)["synthesize"]["pose_pairs"] - cfg["eval_pairs"]
    for key in ("foreground_iou_controlnet", "foreground_iou_without", "pairs_improved"):
        assert 0 <= metrics[key] <= 1, key
    model = workspace / "data" / "models" / "controlnet" / "openpose"
    assert (model / "config.json").is_file() and (model / "diffusion_pytorch_model.safetensors").is_file()
    for plot in ("steering.png", "train_loss.csv"):
        assert (workspace / "plots" / "train_controlnet" / "openpose" / plot).is_file(), plot
    (run,) = runs_by_stage(workspace)["train_controlnet@openpose"]
    assert "foreground_iou_controlnet" in run.data.metrics and run.data.tags["subjectlab.condition"] == "openpose"
    assert run.data.params["train_controlnet.steps"] == str(cfg["steps"])


def test_table_one_rows_and_report_run_in_the_smoke_repro(smoke_repo):
    workspace, result = smoke_repo
    for stage in [f"msp@{r}" for r in ROWS] + [f"msp_baseline@{BASELINE}", f"msp_controlnet@{CONTROLNET_ROW}",
                                               "msp_report"]:
        assert f"Running stage '{stage}'" in result.stdout
    msp = params_of(workspace)["msp"]
    per_row = len(COUNTS) * msp["compositions_per_count"] * msp["images_per_composition"]
    for row in (*ROWS, BASELINE, CONTROLNET_ROW):
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
    assert [line.split(" | ")[0].strip("| ") for line in lines[1:]] == [BASELINE, *ROWS, CONTROLNET_ROW]
    assert "GD, ControlNet" in lines[-1]
    assert "n>3 SAS" in lines[0] and "SAL raises SAS" in table and "ControlNet lowers the share of missing or hybrid" in table
    report = json.loads((workspace / "metrics" / "msp_report.json").read_text())
    assert set(report["rows"]) == {BASELINE, *ROWS, CONTROLNET_ROW}
    assert report["orderings"]["sal_raises_sas"] in (True, False)
    assert report["orderings"]["controlnet_lowers_missing_or_hybrid"] in (True, False)   # paired with plain_gd
    # the ControlNet row's pictures show the pose image too: one tile more than plain_gd's
    width = lambda row: Image.open(sorted((workspace / "plots" / "msp" / row).glob("*.png"))[0]).width  # noqa: E731
    assert width(CONTROLNET_ROW) > width("plain_gd")

    runs = runs_by_stage(workspace)
    for row in ROWS:
        (run,) = runs[f"msp@{row}"]
        assert run.data.tags["subjectlab.table"] == "msp" and run.data.tags["subjectlab.row"] == row
        assert "by_count.n4plus.sas" in run.data.metrics
    assert runs[f"msp_baseline@{BASELINE}"][0].data.tags["method"] == "baseline"
    assert runs[f"msp_controlnet@{CONTROLNET_ROW}"][0].data.tags["controlnet"] == "true"


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


BAD_INPUTS = [
    (_drop_a_prompt, "n2_0.yaml: segments: the layout colour #"),
    (_stranger, "is an identifier the model was not fine-tuned on"),
    (_small_layout, "n2_0.yaml: layout: .* is 16 x 16 px; the model generates 32 x 32"),
    (_pose_without_controlnet, "n2_0.yaml: pose: given, but ControlNet is off"),
    ("no_model", "data/models/finetuned: no fine-tuned model"),
    ("empty_folder", "holds no composition"),
]


@pytest.mark.parametrize("case, expected", BAD_INPUTS, ids=lambda case: case if isinstance(case, str) else
                         getattr(case, "__name__", None))
def test_bad_input_stops_before_sampling_in_one_line_and_writes_nothing(msp_copy, in_process, capsys, case, expected):
    if case == "no_model":
        shutil.rmtree(msp_copy / "data" / "models" / "finetuned")
    elif case == "empty_folder":
        for path in _composition(msp_copy).parent.glob("*.yaml"):
            path.unlink()
    else:
        _edit_composition(msp_copy, case)
    assert re.search(expected, stopped(in_process, capsys, "msp", msp_copy, "--row", ROWS[0]))
    assert not (msp_copy / "data" / "msp").exists() and not (msp_copy / "metrics" / "msp").exists()


def test_a_baseline_must_be_a_row_that_runs(msp_copy, in_process, capsys):
    name = write_params(msp_copy, "bad.yaml", lambda p: p["msp"].update(baselines=["dreambooth"]))
    assert "msp.baselines: 'dreambooth' is not a row of personalization.table" in stopped(
        in_process, capsys, "msp_baseline", msp_copy, "--row", "dreambooth", "--params", name)


def _twin(workspace: Path) -> Path:
    return workspace / "data" / "synthworld" / "compositions_openpose" / "n2_0.yaml"


def _drop_the_pose(workspace: Path) -> None:
    spec = yaml.safe_load(_twin(workspace).read_text())
    spec.pop("pose")
    _twin(workspace).write_text(yaml.safe_dump(spec, sort_keys=False))


@pytest.mark.parametrize("case, stage, expected", [
    ("no_pose", "msp_controlnet", r"n2_0.yaml: pose: missing, and ControlNet is on"),
    ("no_controlnet", "msp_controlnet", r"msp.controlnet.model: data/models/controlnet/openpose holds no ControlNet"),
    ("wrong_family", "msp", rf"msp.rows.{CONTROLNET_ROW}: controlnet is true; the row runs as "
                            rf"msp_controlnet@{CONTROLNET_ROW}"),
])
def test_a_controlnet_row_stops_on_bad_input_in_one_line(msp_copy, in_process, capsys, case, stage, expected):
    if case == "no_pose":
        _drop_the_pose(msp_copy)
    elif case == "no_controlnet":
        shutil.rmtree(msp_copy / "data" / "models" / "controlnet")
    assert re.search(expected, stopped(in_process, capsys, stage, msp_copy, "--row", CONTROLNET_ROW))
    assert not (msp_copy / "data" / "msp").exists() and not (msp_copy / "metrics" / "msp").exists()


@pytest.mark.parametrize("edit, expected", [
    (lambda p: p["msp"].update(controlnet_table=["plain_gd"]),
     "msp.controlnet_table: row 'plain_gd' has controlnet: false"),
    (lambda p: p["msp"].update(table=["plain_gd", CONTROLNET_ROW]), f"msp.table: row '{CONTROLNET_ROW}' has controlnet: true"),
    (lambda p: p["train_controlnet"].update(conditions=[]),
     "msp.controlnet_table runs, but msp.controlnet.model data/models/controlnet/openpose is written by "
     "train_controlnet@openpose, which train_controlnet.conditions does not list"),
])
def test_controlnet_params_that_cannot_run_are_refused(msp_copy, in_process, capsys, edit, expected):
    name = write_params(msp_copy, "bad.yaml", edit)
    assert expected in stopped(in_process, capsys, "msp_controlnet", msp_copy, "--row", CONTROLNET_ROW, "--params", name)


def _drop_a_caption(workspace: Path) -> None:
    index = workspace / "data" / "synthworld" / "poses" / "pairs.yaml"
    data = yaml.safe_load(index.read_text())
    data["pairs"][3].pop("caption")
    index.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("case, expected", [
    ("caption", r"poses/pairs.yaml: pairs\[3\]: caption missing"),
    ("held_out", r"train_controlnet.eval_pairs: 40 held out of the 40 pairs of data/synthworld/poses leaves none"),
    ("condition", r"train_controlnet.conditions: 'depth' is not listed \(openpose\)"),
])
def test_train_controlnet_stops_on_bad_input_in_one_line(msp_copy, in_process, capsys, case, expected):
    args = ["--condition", "depth" if case == "condition" else "openpose"]
    if case == "caption":
        _drop_a_caption(msp_copy)
    elif case == "held_out":
        args += ["--params", write_params(msp_copy, "bad.yaml", lambda p: p["train_controlnet"].update(eval_pairs=40))]
    shutil.rmtree(msp_copy / "data" / "models" / "controlnet")
    assert re.search(expected, stopped(in_process, capsys, "train_controlnet", msp_copy, *args))
    assert not (msp_copy / "data" / "models" / "controlnet").exists()
    assert not (msp_copy / "metrics" / "train_controlnet").exists()


def test_table_one_images_are_bit_identical_on_one_and_two_processes(msp_copy, in_process, monkeypatch):
    """One composition per batch, dealt whole to the ranks, every image from its own seed: the
    same pictures on 1 or 2 CPU processes, SAL's gradients included (one intra-op thread per
    process in both runs: a CPU matmul's summation order follows its thread count)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    row = "plain_gd_sal"
    folder = msp_copy / "data" / "msp" / row / "images"

    def pictures() -> dict[str, np.ndarray]:
        return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))}

    with one_intra_op_thread():   # one process: this one (no interpreter to start); two: a real DDP launch
        in_process("msp", msp_copy, "--row", row)
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
