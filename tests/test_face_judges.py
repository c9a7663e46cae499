"""eCLIPsed's two face judges: the part segmenter (train_face_parts, the ResNet-34 U-Net on
SynthWorld's part maps) and the attribute + identity classifier (train_face_attributes), their
reader of a faces folder, a few real training steps, the saved models, and both stages run on
a smoke faces folder."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader

from lightning_modules.core.errors import InputDataError
from lightning_modules.data.faces import read_faces_folder
from lightning_modules.judges.face_data import FaceAttributeDataset
from lightning_modules.judges.faces import IDENTITY, FaceAttributeClassifier, FaceAttributeJudge, evaluate_face_judge
from lightning_modules.segmentation import (
    ResNet34UNet,
    SegmentationItem,
    SubjectSegmentationDataset,
    SubjectSegmenter,
)
from lightning_modules.synthworld.faces import FACE_ATTRIBUTES, PART_CLASSES
from tests.conftest import make_workspace, stopped
from tests.face_folder import write_faces_folder

ATTRIBUTES = {name: list(values) for name, values in FACE_ATTRIBUTES.items()}


@pytest.fixture()
def faces(tmp_path) -> Path:
    return write_faces_folder(tmp_path / "faces", identities=4, images_per_identity=4, size=32)


# --- the faces folder ---------------------------------------------------------------------------

def test_the_reader_gives_records_splits_and_vocabularies(faces):
    folder = read_faces_folder(faces)
    assert folder.part_classes == list(PART_CLASSES) and folder.attributes == ATTRIBUTES
    assert folder.identities == [0, 1, 2, 3] and folder.image_size == 32
    assert [len(folder.split(s)) for s in ("train", "val", "test")] == [8, 4, 4]
    record = folder.split("test")[0]
    assert record.image == faces / "images" / "0000_03.png" and record.parts == faces / "parts" / "0000_03.png"
    assert set(record.attributes) == set(ATTRIBUTES)


def _edit_csv(faces: Path, edit) -> None:
    """Rewrite faces.csv with edit(rows) applied (rows: header first, then the faces)."""
    with (faces / "faces.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    with (faces / "faces.csv").open("w", newline="") as f:
        csv.writer(f).writerows(edit(rows))


def _set(rows: list[list[str]], line: int, column: str, value: str) -> list[list[str]]:
    rows[line - 1][rows[0].index(column)] = value   # line numbers as in the errors: the header is line 1
    return rows


@pytest.mark.parametrize("case, expected", [
    ("no_folder", r"faces: no faces folder; run the synthesize_faces stage first"),
    ("no_csv", r"faces.csv: missing; run the synthesize_faces stage first"),
    ("no_yaml", r"dataset.yaml: missing; run the synthesize_faces stage first"),
    ("small_parts", r"parts/0001_02.png: 16x16 pixels, but dataset.yaml's image_size is 32"),
    ("rgb_parts", r"parts/0000_00.png: RGB image \(RGB\), which reading it as a parsing map would change"),
    ("part_value", r"parts/0002_01.png: part value 12, but dataset.yaml lists 10 part_classes"),
    ("no_image", r"faces.csv:3: image 'images/0000_01.png': file not found"),
    ("bad_value", r"faces.csv:2: hair_color 'purple' is not one of"),
    ("bad_split", r"faces.csv:2: unknown split 'holdout'"),
    ("no_column", r"faces.csv: no column mouth"),
])
def test_a_bad_faces_folder_is_named_in_one_error(faces, case, expected):
    if case == "no_folder":
        shutil.rmtree(faces)
    elif case == "no_csv":
        (faces / "faces.csv").unlink()
    elif case == "no_yaml":
        (faces / "dataset.yaml").unlink()
    elif case == "small_parts":
        Image.new("L", (16, 16)).save(faces / "parts" / "0001_02.png")
    elif case == "rgb_parts":
        Image.new("RGB", (32, 32)).save(faces / "parts" / "0000_00.png")
    elif case == "part_value":
        Image.fromarray(np.full((32, 32), 12, np.uint8)).save(faces / "parts" / "0002_01.png")
    elif case == "no_image":
        (faces / "images" / "0000_01.png").unlink()
    elif case == "bad_value":
        _edit_csv(faces, lambda rows: _set(rows, 2, "hair_color", "purple"))
    elif case == "bad_split":
        _edit_csv(faces, lambda rows: _set(rows, 2, "split", "holdout"))
    elif case == "no_column":
        _edit_csv(faces, lambda rows: [row[:rows[0].index("mouth")] + row[rows[0].index("mouth") + 1:]
                                       for row in rows])
    with pytest.raises(InputDataError, match=expected):
        read_faces_folder(faces)


# --- the part segmenter -------------------------------------------------------------------------

def test_a_part_map_is_read_by_value_palette_included(faces, tmp_path):
    folder = read_faces_folder(faces)
    record = folder.records[0]
    truth = np.asarray(Image.open(record.parts))
    palette = Image.fromarray(truth, mode="L").convert("P")   # an identity palette: same indices
    palette.putpalette([v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 13) % 256)])
    palette.save(tmp_path / "palette.png")
    for mask in (record.parts, tmp_path / "palette.png"):
        image, labels = SubjectSegmentationDataset([SegmentationItem(record.image, mask, None)], 32)[0]
        assert image.shape == (3, 32, 32) and torch.equal(labels, torch.from_numpy(truth.astype(np.int64)))
    counts = SubjectSegmentationDataset([SegmentationItem(r.image, r.parts, None) for r in folder.records],
                                        32).class_pixel_counts(len(PART_CLASSES))
    assert counts.sum() == 16 * 32 * 32 and counts[PART_CLASSES.index("eyes")] > 0


def test_a_few_steps_lower_the_part_loss(faces, tmp_path):
    L.seed_everything(0, verbose=False)
    items = [SegmentationItem(r.image, r.parts, None) for r in read_faces_folder(faces).split("train")]
    dataset = SubjectSegmentationDataset(items, 32)
    net = ResNet34UNet(len(PART_CLASSES), (32, 16, 16, 8, 8), class_names=PART_CLASSES, image_size=32)
    module = SubjectSegmenter(net, lr=1e-3)
    batch = next(iter(DataLoader(dataset, batch_size=8)))
    before = module.compute_loss(batch)[0].item()
    trainer = L.Trainer(accelerator="cpu", max_steps=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(module, DataLoader(dataset, batch_size=8, shuffle=True))
    assert trainer.global_step == 8 and module.compute_loss(batch)[0].item() < before


# --- the attribute and identity judge -----------------------------------------------------------

def test_predict_logits_and_features_read_any_size():
    net = FaceAttributeClassifier(ATTRIBUTES, [3, 7, 11], image_size=32, width=8).eval()
    for size in ((32, 32), (64, 64), (48, 40)):
        images = torch.rand(2, 3, *size)
        logits, predicted = net.logits(images), net.predict(images)
        assert list(logits) == [*ATTRIBUTES, IDENTITY] == net.head_names
        assert all(logits[name].shape == (2, len(values)) for name, values in ATTRIBUTES.items())
        assert logits[IDENTITY].shape == (2, 3)
        assert all(p.dtype == torch.long and p.shape == (2,) for p in predicted.values())
        assert set(predicted[IDENTITY].tolist()) <= {3, 7, 11}   # the identities themselves, not head indices
        assert net.features(images).shape == (2, net.embedding_dim) == (2, 8 * 8)
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        net.predict(torch.rand(3, 32, 32))


def test_the_judge_round_trips_through_from_pretrained(tmp_path):
    torch.manual_seed(0)
    net = FaceAttributeClassifier(ATTRIBUTES, [0, 1, 5], image_size=32, width=8).eval()
    net.save_pretrained(tmp_path / "judge")
    assert {p.name for p in (tmp_path / "judge").iterdir()} == {"config.json", "model.safetensors"}
    loaded = FaceAttributeClassifier.from_pretrained(tmp_path / "judge")
    assert not loaded.training and loaded.attributes == ATTRIBUTES and loaded.identities == [0, 1, 5]
    images = torch.rand(4, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(net.logits(images).values(), loaded.logits(images).values()))
    assert torch.equal(net.features(images), loaded.features(images))


def test_a_few_steps_lower_the_attribute_loss_and_the_judge_is_measured(faces, tmp_path):
    L.seed_everything(0, verbose=False)
    folder = read_faces_folder(faces)
    dataset = FaceAttributeDataset(folder.split("train"), list(ATTRIBUTES), folder.identities, 32)
    assert dataset.targets.shape == (8, len(ATTRIBUTES) + 1)
    net = FaceAttributeClassifier(ATTRIBUTES, folder.identities, image_size=32, width=8)
    module = FaceAttributeJudge(net, lr=1e-2, max_epochs=10, augment=False)
    batch = (dataset.pixels, dataset.targets)
    before, terms = module.compute_loss(batch)
    assert set(terms) == {f"{name}_loss" for name in net.head_names}
    assert torch.allclose(before, sum(terms.values()))
    trainer = L.Trainer(accelerator="cpu", max_epochs=10, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    held_out = FaceAttributeDataset(folder.split("val"), list(ATTRIBUTES), folder.identities, 32)
    trainer.fit(module, DataLoader(dataset, batch_size=4, shuffle=True), DataLoader(held_out, batch_size=4))
    assert trainer.global_step == 20 and module.compute_loss(batch)[0] < before
    assert {f"val/{name}_accuracy" for name in net.head_names} <= set(trainer.callback_metrics)
    result = evaluate_face_judge(net, DataLoader(held_out, batch_size=3))
    assert net.training   # evaluate_face_judge leaves the mode it found
    with torch.no_grad():
        logits = net.eval()(held_out.pixels)
    for i, name in enumerate(net.head_names):
        assert result[name] == round((logits[name].argmax(1) == held_out.targets[:, i]).float().mean().item(), 4)
    assert result["images"] == 4 and set(result["per_value"]) == set(ATTRIBUTES)


# --- the stages ---------------------------------------------------------------------------------

@pytest.fixture()
def faces_workspace(tmp_path, in_process) -> Path:
    """A smoke workspace with the synthesize_faces stage's faces (12 identities x 6, 32 px)."""
    workspace = make_workspace(tmp_path / "ws", git=False)
    in_process("synthesize_faces", workspace)
    return workspace


def test_both_stages_train_and_publish_their_judges(faces_workspace, in_process):
    workspace = faces_workspace
    in_process("train_face_parts", workspace)
    metrics = json.loads((workspace / "metrics" / "train_face_parts.json").read_text())
    assert metrics["evaluated_on"] == "test" and metrics["part_classes"] == list(PART_CLASSES)
    test = metrics["test"]
    assert test["faces"] == 12 and set(test["iou"]) == set(PART_CLASSES) and 0 <= test["mIoU"] <= 1
    assert "background included" in test["mIoU_over"] and "background" in test["mIoU_classes"]
    assert metrics["global_step"] == 4 and metrics["epochs"] == 1   # smoke: 1 epoch of 4 batches
    config = json.loads((workspace / "data" / "models" / "face_parts" / "config.json").read_text())
    assert config["class_names"] == list(PART_CLASSES) and config["image_size"] == 32
    segmenter = ResNet34UNet.from_pretrained(workspace / "data" / "models" / "face_parts").eval()
    assert segmenter(torch.rand(1, 3, 32, 32)).shape == (1, len(PART_CLASSES), 32, 32)
    plots = workspace / "plots" / "train_face_parts"
    assert {"train_loss.csv", "val.csv", "predictions.png"} <= {p.name for p in plots.iterdir()}

    in_process("train_face_attributes", workspace)
    metrics = json.loads((workspace / "metrics" / "train_face_attributes.json").read_text())
    assert metrics["evaluated_on"] == "test" and metrics["attributes"] == ATTRIBUTES
    assert metrics["identities"] == 12 and metrics["test"]["images"] == 12
    assert all(0 <= metrics["test"][name] <= 1 for name in [*ATTRIBUTES, IDENTITY])
    judge = FaceAttributeClassifier.from_pretrained(workspace / "data" / "models" / "face_attributes")
    assert judge.identities == list(range(12)) and judge.image_size == 32
    assert judge.features(torch.rand(2, 3, 64, 64)).shape == (2, metrics["embedding_dim"])
    plots = workspace / "plots" / "train_face_attributes"
    assert {"train_loss.csv", "val.csv", "predictions.png"} <= {p.name for p in plots.iterdir()}
    with (plots / "val.csv").open() as f:
        assert {"identity_accuracy", "mouth_accuracy", "loss"} <= set(f.readline().strip().split(","))
    assert not list((workspace / "checkpoints").glob("train_face_*/*"))   # published: state removed

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("subjectlab").experiment_id
    for stage, metric in (("train_face_parts", "test.mIoU"), ("train_face_attributes", "test.identity")):
        (run,) = client.search_runs([experiment], f"tags.`subjectlab.stage` = '{stage}'")
        assert run.info.status == "FINISHED" and metric in run.data.metrics
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, stage.removeprefix("train_"))}
        assert f"{stage.removeprefix('train_')}/predictions.png" in artifacts


@pytest.mark.parametrize("stage", ["train_face_parts", "train_face_attributes"])
@pytest.mark.parametrize("case, expected", [
    ("no_faces", "data/faces: no faces folder; run the synthesize_faces stage first"),
    ("no_csv", "data/faces/faces.csv: missing"),
    ("small_parts", "data/faces/parts/0000_00.png: 16x16 pixels, but dataset.yaml's image_size is 32"),
])
def test_bad_input_stops_in_one_line_and_writes_nothing(tmp_path, in_process, capsys, stage, case, expected):
    workspace = make_workspace(tmp_path / "ws", git=False)
    if case != "no_faces":
        write_faces_folder(workspace / "data" / "faces", identities=3, images_per_identity=3, size=32)
    if case == "no_csv":
        (workspace / "data" / "faces" / "faces.csv").unlink()
    elif case == "small_parts":
        Image.new("L", (16, 16)).save(workspace / "data" / "faces" / "parts" / "0000_00.png")
    assert expected in stopped(in_process, capsys, stage, workspace)
    assert not (workspace / "data" / "models").exists() and not (workspace / "metrics").exists()
    assert not (workspace / "plots").exists()


def test_a_killed_face_judge_run_resumes_to_the_same_weights(faces_workspace, in_process, capsys):
    """kill -9 after the step-2 checkpoint, started again: the same weights and metrics as a run
    never stopped (the loader's place, the augmentation seeds and the optimizer are in it).
    train_face_parts trains the segmentation module, whose resume tests/test_resume.py proves on
    the subject segmenter (here it would cost the suite three minutes)."""
    from tests.test_resume import assert_same_run, reference_run, run_stage, snapshot

    workspace, stage, model = faces_workspace, "train_face_attributes", "face_attributes"
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["trainer"]["checkpoint_every_n_steps"] = 2
    (workspace / "resume.yaml").write_text(yaml.safe_dump(params))
    reference = reference_run(in_process, stage, workspace, model, f"{stage}.json")

    killed = run_stage(stage, workspace, "train.batch_end@3=kill")
    assert killed.returncode == -9, killed.stderr[-3000:]
    (last,) = (workspace / "checkpoints" / stage).glob("*/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 2

    capsys.readouterr()
    in_process(stage, workspace, "--params", "resume.yaml")
    assert f"Resuming {stage} from" in capsys.readouterr().out
    assert_same_run(reference, snapshot(workspace, model, f"{stage}.json"))
