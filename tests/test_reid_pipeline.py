"""DeSKPro's stages as they really run: the smoke `dvc repro`, torchreid-equal evaluation,
DDP on CPU with 2 processes, kill and resume, the restorer choices and the ablation matrix."""

from __future__ import annotations

import json
import os
import shutil
import warnings

import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from flows.dag import stage_order
from tasks.core.params import load_params
from tests.conftest import dvc, edit_params, make_workspace, python_stage

pytestmark = pytest.mark.slow

PROTOCOLS = {"prcc_cross", "prcc_same", "celeb_light"}


def runs_by_stage(workspace) -> dict[str, list]:
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id])
    grouped: dict[str, list] = {}
    for run in runs:
        grouped.setdefault(run.data.tags["subjectlab.stage"], []).append(run)
    return grouped


def test_reid_stages_run_in_the_smoke_repro(smoke_repo):
    workspace, result = smoke_repo
    for stage in ("synthesize_persons", "train_reid_teacher", "train_reid", "evaluate_reid",
                  "reid_ablation@baseline", "reid_ablation@deskpro_star", "reid_ablation_report"):
        assert f"Running stage '{stage}'" in result.stdout
    report = json.loads((workspace / "metrics" / "evaluate_reid.json").read_text())
    assert set(report) == PROTOCOLS
    for values in report.values():
        assert {"rank1", "rank5", "rank10", "mAP"} <= set(values)
        assert 0 <= values["rank1"] <= values["rank5"] <= values["rank10"] <= 1 and 0 < values["mAP"] <= 1
    for path in ("data/models/reid_teacher/model.safetensors", "data/models/reid/deskpro.json",
                 "data/models/reid/global/model.safetensors", "data/models/reid/face/model.safetensors",
                 "plots/evaluate_reid/attention.png", "plots/train_reid/train_loss.csv",
                 "plots/reid_ablation_report/table.md", "plots/synthesize_persons/identity.png"):
        assert (workspace / path).is_file(), path
    assert {p.name for p in (workspace / "plots" / "evaluate_reid").glob("retrieval_*.png")} == {
        f"retrieval_{p}.png" for p in PROTOCOLS}
    # DeSKPro proper keeps the student, not the teacher, for inference
    assert json.loads((workspace / "data/models/reid/deskpro.json").read_text())["face_kind"] == "student"


# The rows whose teacher stream is tested on restored faces: with the smoke profile's clean
# restorer, SynthWorld's own face renders, so they are oracle rows.
ORACLE_ROWS = {"teacher", "deskpro_star"}


def table_lines(workspace) -> tuple[list[list[str]], list[str]]:
    """(cells of each Markdown table line, the text after the table) of the ablation report."""
    text = (workspace / "plots" / "reid_ablation_report" / "table.md").read_text().splitlines()
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in text if line.startswith("|")]
    return cells, [line for line in text if line and not line.startswith("|")]


def test_ablation_rows_each_have_a_run_and_a_table_line(smoke_repo):
    from tasks.deskpro.reid_ablation_report import DISTILLED_NOTE, ORACLE_NOTE

    workspace, _ = smoke_repo
    rows = list(load_params(workspace / "params.yaml").reid_ablation.table)
    (header, _, *body), footnotes = table_lines(workspace)
    assert [cells[0] for cells in body] == rows
    oracle = header.index("oracle")
    assert {cells[0] for cells in body if cells[oracle] == "x"} == ORACLE_ROWS
    assert footnotes == [ORACLE_NOTE, DISTILLED_NOTE]  # student_fkp learnt from the teacher on clean faces
    summary = json.loads((workspace / "metrics" / "reid_ablation_report.json").read_text())
    assert list(summary) == rows and all(set(v) == PROTOCOLS | {"oracle"} for v in summary.values())
    assert {row for row, values in summary.items() if values["oracle"]} == ORACLE_ROWS
    grouped = runs_by_stage(workspace)
    for row in rows:
        (run,) = grouped[f"reid_ablation@{row}"]
        assert run.info.status == "FINISHED" and run.data.tags["subjectlab.ablation_row"] == row
        assert "test.prcc_cross.rank1" in run.data.metrics and run.data.params["row"] == row
        assert run.data.tags["subjectlab.oracle"] == str(row in ORACLE_ROWS).lower()
    teacher_row = json.loads((workspace / "metrics" / "reid_ablation" / "teacher.json").read_text())
    assert teacher_row["training"]["global_step"] == 0  # model 6 is the teacher itself: nothing to train


def test_evaluation_equals_torchreid_on_the_same_distance_matrix(smoke_repo):
    workspace, _ = smoke_repo
    from lightning_modules.deskpro import DeSKProNet
    from lightning_modules.deskpro.evaluation import distance_matrix, evaluate
    from tasks.deskpro.setup import embed_protocols, load_folder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torchreid

    cwd = os.getcwd()
    os.chdir(workspace)
    try:
        params = load_params("params.yaml")
        net = DeSKProNet.from_pretrained(workspace / "data" / "models" / "reid")
        embedded = embed_protocols(params, load_folder(params), net)
    finally:
        os.chdir(cwd)
    for name, (query, gallery, _, _) in embedded.items():
        report, distmat = evaluate(query, gallery, max_rank=10)
        assert np.array_equal(distmat, distance_matrix(query, gallery).numpy())
        cmc, mean_ap = torchreid.metrics.evaluate_rank(distmat, query.pids, gallery.pids, query.camids,
                                                       gallery.camids, max_rank=10, use_cython=False)
        assert report["rank1"] == pytest.approx(float(cmc[0]), abs=1e-6), name
        assert report["rank5"] == pytest.approx(float(cmc[4]), abs=1e-6), name
        assert report["mAP"] == pytest.approx(float(mean_ap), abs=1e-6), name


@pytest.fixture()
def persons_copy(smoke_repo, tmp_path):
    """A workspace with the smoke run's persons and teacher, for training-only tests."""
    workspace, _ = smoke_repo
    target = make_workspace(tmp_path / "ws", git=False)
    shutil.copytree(workspace / "data" / "persons", target / "data" / "persons")
    shutil.copytree(workspace / "data" / "models" / "reid_teacher", target / "data" / "models" / "reid_teacher")
    return target


def test_ddp_on_cpu_with_two_processes_deals_whole_identities(persons_copy):
    params = yaml.safe_load((persons_copy / "params.yaml").read_text())
    params["trainer"].update(strategy="ddp", devices=2, accelerator="cpu")
    params["train_reid"].update(max_epochs=2)
    (persons_copy / "ddp.yaml").write_text(yaml.safe_dump(params))
    result = python_stage("train_reid", persons_copy, "--params", "ddp.yaml")
    log = result.stdout + result.stderr
    assert "distributed_backend=gloo" in log and "Starting with 2 processes" in log
    metrics = json.loads((persons_copy / "metrics" / "train_reid.json").read_text())
    # 8 identities, P = 4 per rank, 2 ranks: one step per epoch, each rank with its own 4 identities
    assert metrics["global_step"] == 2 and metrics["epochs"] == 2
    assert (persons_copy / "data" / "models" / "reid" / "deskpro.json").is_file()
    assert [len(v) for v in runs_by_stage(persons_copy).values()] == [1]  # rank 1 opened no run


@pytest.mark.parametrize("kind", ["export", "torchscript"])
def test_an_exported_face_restorer_is_applied_to_each_face(persons_copy, kind):
    # A stand-in for an exported restoration network: 2x upsampling and a brightness change.
    model = torch.nn.Sequential(torch.nn.Upsample(scale_factor=2, mode="bilinear"), torch.nn.Hardtanh(0.1, 0.9))
    if kind == "export":
        restorer_file = persons_copy / "restorer.pt2"
        size = load_params(persons_copy / "params.yaml").reid.face_size
        torch.export.save(torch.export.export(model, (torch.rand(1, 3, size, size),)), str(restorer_file))
    else:
        restorer_file = persons_copy / "restorer.pt"
        torch.jit.save(torch.jit.script(model), str(restorer_file))
    params = yaml.safe_load((persons_copy / "params.yaml").read_text())
    params["models"]["face_restorer"] = str(restorer_file)
    (persons_copy / "restorer.yaml").write_text(yaml.safe_dump(params))
    cwd = os.getcwd()
    os.chdir(persons_copy)
    try:
        from tasks.deskpro.setup import load_folder, person_dataset, restorer

        loaded = load_params("restorer.yaml")
        folder = load_folder(loaded)
        record_index = next(i for i, r in enumerate(folder.train) if r.face_box is not None)
        dataset = person_dataset(loaded, folder, folder.train, train=False, restore=restorer(loaded, folder.train))
        item = dataset[record_index]
    finally:
        os.chdir(cwd)
    restored = item["restored_face"]
    assert restored.shape == item["face"].shape
    # the model's output (clipped to [0.1, 0.9]), resized back to the face size (bicubic: small overshoot)
    assert restored.min() >= 0.05 and restored.max() <= 0.95
    assert not torch.equal(restored, item["face"])


def test_every_ablation_row_of_params_yaml_is_a_dvc_stage(tmp_path):
    workspace = make_workspace(tmp_path / "ws", git=True, ablation_rows=None)
    rows = list(load_params(workspace / "params.yaml").reid_ablation.table)
    assert rows == ["baseline", "csa", "csa_attention_loss", "student", "student_fkp", "teacher", "two_stream",
                    "deskpro", "deskpro_star"]  # the paper's Table 3
    order = stage_order(workspace)
    for row in rows:
        assert order.index(f"reid_ablation@{row}") > order.index("train_reid_teacher")
        assert order.index(f"reid_ablation@{row}") < order.index("reid_ablation_report")
    listed = dvc(workspace, "stage", "list").stdout
    assert all(f"reid_ablation@{row}" in listed for row in rows)


def test_only_a_clean_restorer_makes_the_teacher_rows_oracle_rows(tmp_path):
    from tasks.deskpro.oracle import sees_oracle_faces

    workspace = make_workspace(tmp_path / "ws", git=False, ablation_rows=None)
    (tmp_path / "gpen.pt2").write_bytes(b"")  # params only check that a restorer model file exists
    for restorer, expected in (("clean", ORACLE_ROWS), ("bicubic", set()), (str(tmp_path / "gpen.pt2"), set())):
        edit_params(workspace / "params.yaml", **{"models.face_restorer": restorer})
        params = load_params(workspace / "params.yaml")
        assert {name for name, variant in params.reid_ablation.rows.items()
                if sees_oracle_faces(params, variant)} == expected, restorer


def write_ablation_row(workspace, name: str, restorer: str) -> None:
    """metrics/reid_ablation/<name>.json as the row stage writes it, with made-up test numbers."""
    from tasks.deskpro.oracle import sees_oracle_faces

    edit_params(workspace / "params.yaml", **{"models.face_restorer": restorer})
    params = load_params(workspace / "params.yaml")
    variant = params.reid_ablation.rows[name]
    result = {"rank1": 0.5, "rank5": 0.75, "rank10": 0.875, "mAP": 0.25}
    row = {"row": name, "variant": variant.model_dump(), "face_restorer": restorer,
           "oracle": sees_oracle_faces(params, variant), "training": {}, "test": {p: result for p in PROTOCOLS}}
    path = workspace / "metrics" / "reid_ablation" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row))


def test_report_marks_oracle_rows_in_every_output_and_only_for_a_clean_restorer(tmp_path, in_process):
    import csv

    from tasks.deskpro.reid_ablation_report import DISTILLED_NOTE, ORACLE_NOTE

    workspace = make_workspace(tmp_path / "ws", git=False)
    rows = list(load_params(workspace / "params.yaml").reid_ablation.table)
    plots = workspace / "plots" / "reid_ablation_report"
    for restorer, oracle_rows in (("clean", ORACLE_ROWS), ("bicubic", set())):
        for name in rows:
            write_ablation_row(workspace, name, restorer)
        in_process("reid_ablation_report", workspace)
        (header, _, *body), footnotes = table_lines(workspace)
        column = header.index("oracle")
        assert {cells[0] for cells in body if cells[column] == "x"} == oracle_rows
        assert footnotes == ([ORACLE_NOTE, DISTILLED_NOTE] if restorer == "clean" else [])
        with (plots / "table.csv").open(newline="") as f:
            table = list(csv.DictReader(f))
        assert {r["model"] for r in table if r["oracle"] == "x"} == oracle_rows
        summary = json.loads((workspace / "metrics" / "reid_ablation_report.json").read_text())
        assert {name for name, values in summary.items() if values["oracle"]} == oracle_rows
        with (plots / "rank1.csv").open(newline="") as f:  # the bar plot has no footnote: the name says it
            labels = {r["model"] for r in csv.DictReader(f)}
        assert labels == {f"{name} (oracle)" if name in oracle_rows else name for name in rows}


def test_report_asks_to_rerun_a_row_written_before_oracle_rows_were_marked(tmp_path, in_process, capsys):
    workspace = make_workspace(tmp_path / "ws", git=False)
    rows = list(load_params(workspace / "params.yaml").reid_ablation.table)
    for name in rows:
        write_ablation_row(workspace, name, "clean")
    path = workspace / "metrics" / "reid_ablation" / "teacher.json"
    old = json.loads(path.read_text())
    del old["oracle"], old["face_restorer"]
    path.write_text(json.dumps(old))
    with pytest.raises(SystemExit) as stopped:
        in_process("reid_ablation_report", workspace)
    assert stopped.value.code != 0
    assert "teacher.json: no face_restorer, oracle; run the row again" in capsys.readouterr().err
    assert not (workspace / "plots" / "reid_ablation_report").exists()
