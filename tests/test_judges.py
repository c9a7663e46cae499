"""SynthWorld's prompt-accuracy judge: the class + scene classifier, its LightningModule, and the
train_classifier stage run by DVC on the smoke profile."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules.core.losses import NonFiniteLossError
from lightning_modules.judges import (
    NO_SCENE,
    ClassSceneClassifier,
    ClassSceneJudge,
    evaluate_judge,
    light_augmentation,
    resize_to,
)
from tasks.core.errors import InputDataError
from tests.conftest import dvc, edit_params, make_workspace

CLASSES, SCENES = ["cartoon", "dog", "robot", "vase"], ["at night", "on a beach", "in a city"]


def test_classify_reads_any_size_and_the_heads_name_their_labels():
    net = ClassSceneClassifier(CLASSES, SCENES, image_size=32, width=8).eval()
    for size in ((32, 32), (64, 64), (96, 96), (40, 24)):
        class_logits, scene_logits = net.classify(torch.rand(2, 3, *size))
        assert class_logits.shape == (2, 4) and scene_logits.shape == (2, 3)
    images = torch.rand(2, 3, 64, 64)
    # a 64 px image is judged as its antialiased 32 px version
    assert all(torch.equal(a, b) for a, b in zip(net.classify(images), net(resize_to(images, 32))))
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        net.classify(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="image_size 8 is below 16"):
        ClassSceneClassifier(CLASSES, SCENES, image_size=8)


def test_save_and_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    net = ClassSceneClassifier(CLASSES, SCENES, image_size=48, width=8).eval()
    net.save_pretrained(tmp_path / "judge")
    assert {p.name for p in (tmp_path / "judge").iterdir()} == {"config.json", "model.safetensors"}
    loaded = ClassSceneClassifier.from_pretrained(tmp_path / "judge")
    assert not loaded.training   # a judge judges in eval mode (BatchNorm's running statistics)
    assert loaded.class_names == CLASSES and loaded.scene_names == SCENES and loaded.image_size == 48
    x = torch.rand(2, 3, 64, 64)
    assert all(torch.equal(a, b) for a, b in zip(net.classify(x), loaded.classify(x)))


def test_light_augmentation_flips_and_shifts_without_changing_the_labels():
    images = torch.rand(64, 3, 16, 16)
    flipped_or_not = light_augmentation(images, max_shift=0.0, brightness=0.0,
                                        generator=torch.Generator().manual_seed(0))
    same = (flipped_or_not - images).abs().flatten(1).amax(1) < 1e-5
    mirrored = (flipped_or_not - images.flip(-1)).abs().flatten(1).amax(1) < 1e-5
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54
    a = light_augmentation(images, generator=torch.Generator().manual_seed(1))
    b = light_augmentation(images, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == images.shape and 0 <= a.min() and a.max() <= 1


def test_compute_loss_is_the_two_cross_entropies_and_skips_scenes_without_caption():
    net = ClassSceneClassifier(CLASSES, SCENES, width=8).eval()
    images = torch.rand(4, 3, 32, 32)
    classes, scenes = torch.tensor([0, 1, 2, 3]), torch.tensor([0, NO_SCENE, 2, 1])
    loss, terms = ClassSceneJudge(net).compute_loss((images, classes, scenes))
    class_logits, scene_logits = net(images)
    named = scenes != NO_SCENE
    assert torch.allclose(terms["class_loss"], torch.nn.functional.cross_entropy(class_logits, classes))
    assert torch.allclose(terms["scene_loss"], torch.nn.functional.cross_entropy(scene_logits[named], scenes[named]))
    assert torch.allclose(loss, terms["class_loss"] + terms["scene_loss"])
    no_scenes, terms = ClassSceneJudge(net).compute_loss((images, classes, torch.full((4,), NO_SCENE)))
    assert terms["scene_loss"].item() == 0.0 and torch.allclose(no_scenes, terms["class_loss"])


def toy_renders(n: int, seed: int = 0) -> TensorDataset:
    """The class is a square's color, the scene the background's: what a few steps can learn."""
    g = torch.Generator().manual_seed(seed)
    colors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    backgrounds = torch.tensor([[0.1, 0.1, 0.1], [0.9, 0.9, 0.9], [0.5, 0.3, 0.1]])
    images, classes, scenes = torch.zeros(n, 3, 32, 32), torch.arange(n) % 4, torch.arange(n) % 3
    for i in range(n):
        images[i] = backgrounds[scenes[i]][:, None, None]
        y, x = torch.randint(0, 20, (2,), generator=g).tolist()
        images[i, :, y:y + 12, x:x + 12] = colors[classes[i]][:, None, None]
    return TensorDataset(images, classes, scenes)


def test_a_few_epochs_learn_class_and_scene(tmp_path):
    L.seed_everything(0, verbose=False)
    net = ClassSceneClassifier(CLASSES, SCENES, width=8)
    data = toy_renders(48)
    before = evaluate_judge(net, DataLoader(data, batch_size=16))
    trainer = L.Trainer(accelerator="cpu", max_epochs=12, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(ClassSceneJudge(net, lr=1e-2, max_epochs=12), DataLoader(data, batch_size=16, shuffle=True),
                DataLoader(toy_renders(12, seed=2), batch_size=6))
    after = evaluate_judge(net, DataLoader(toy_renders(48, seed=1), batch_size=16))
    assert trainer.global_step == 36 and net.training   # evaluate_judge leaves the mode it found
    logged = set(trainer.callback_metrics)
    assert {"val/loss", "val/class_accuracy", "val/scene_accuracy", "val/both_accuracy"} <= logged
    assert after["class"] >= 0.9 and after["scene"] >= 0.9 and after["both"] > before["both"]
    assert after["images"] == 48 and set(after["per_class"]) == set(CLASSES)


def test_evaluate_judge_counts_like_a_loop():
    torch.manual_seed(1)
    net = ClassSceneClassifier(CLASSES, SCENES, width=4).eval()
    data = toy_renders(20)
    images, classes, scenes = data.tensors
    scenes = scenes.clone()
    scenes[::4] = NO_SCENE
    result = evaluate_judge(net, DataLoader(TensorDataset(images, classes, scenes), batch_size=6))
    with torch.no_grad():
        class_pred, scene_pred = (logits.argmax(1) for logits in net(images))
    class_hit = class_pred == classes
    named = scenes != NO_SCENE
    scene_hit = (scene_pred == scenes) & named
    assert result["class"] == round(class_hit.float().mean().item(), 4)
    assert result["scene"] == round((scene_hit.sum() / named.sum()).item(), 4)
    assert result["both"] == round((class_hit & (scene_hit | ~named)).float().mean().item(), 4)
    for i, name in enumerate(CLASSES):
        assert result["per_class"][name] == round(class_hit[classes == i].float().mean().item(), 4)


def test_non_finite_loss_stops_training(tmp_path):
    images, classes, scenes = toy_renders(4).tensors
    images[0, 0, 0, 0] = float("nan")
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, limit_val_batches=0,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(NonFiniteLossError, match="train_classifier loss became nan at step 0"):
        trainer.fit(ClassSceneJudge(ClassSceneClassifier(CLASSES, SCENES, width=4), augment=False),
                    DataLoader(TensorDataset(images, classes, scenes), batch_size=4))


# --- the stage ----------------------------------------------------------------------------------

def write_manifest(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_the_manifest_is_checked_naming_the_file(tmp_path):
    from tasks.judges.train_classifier import read_labelled_splits

    with pytest.raises(InputDataError, match="manifest.csv: missing; run the augment stage first"):
        read_labelled_splits(tmp_path)
    row = {"image": "images/a.png", "class_noun": "dog", "scene_caption": "", "split": "train"}
    write_manifest(tmp_path / "manifest.csv", [row, {**row, "split": "val"}])
    with pytest.raises(InputDataError, match="manifest.csv: no row has a scene_caption"):
        read_labelled_splits(tmp_path)
    write_manifest(tmp_path / "manifest.csv", [{k: v for k, v in row.items() if k != "class_noun"}])
    with pytest.raises(InputDataError, match="manifest.csv: no column class_noun"):
        read_labelled_splits(tmp_path)
    write_manifest(tmp_path / "manifest.csv", [{**row, "scene_caption": "at night"}, {**row, "split": "holdout"}])
    with pytest.raises(InputDataError, match=r"manifest.csv:3: unknown split 'holdout'"):
        read_labelled_splits(tmp_path)
    write_manifest(tmp_path / "manifest.csv", [{**row, "scene_caption": "at night"}, {**row, "split": "val"}])
    classes, scenes, splits, _ = read_labelled_splits(tmp_path)
    assert classes == ["dog"] and scenes == ["at night"]
    assert [item.scene_index for item in splits["train"] + splits["val"]] == [0, NO_SCENE]


@pytest.fixture(scope="module")
def classifier_repo(smoke_repo) -> Path:
    """The smoke reproduction (`dvc repro` in a fresh git + DVC workspace), which trained the
    judge as a user does; tests read it and copy what they change."""
    return smoke_repo[0]


@pytest.mark.slow
def test_dvc_repro_trains_and_publishes_the_judge(classifier_repo):
    workspace = classifier_repo
    metrics = json.loads((workspace / "metrics" / "train_classifier.json").read_text())
    assert metrics["evaluated_on"] == "test"
    assert {"class", "scene", "both", "images", "per_class", "per_scene"} <= set(metrics["test"])
    assert metrics["test"]["images"] == 8 and all(0 <= metrics["test"][k] <= 1 for k in ("class", "scene", "both"))
    assert metrics["global_step"] == 4 and metrics["epochs"] == 2   # smoke: 2 epochs of 2 batches
    with (workspace / "data" / "augmented" / "manifest.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert metrics["classes"] == sorted({r["class_noun"] for r in rows})
    assert metrics["scenes"] == sorted({r["scene_caption"] for r in rows})

    judge = ClassSceneClassifier.from_pretrained(workspace / "data" / "models" / "classifier")
    assert judge.class_names == metrics["classes"] and judge.image_size == 32
    assert judge.classify(torch.rand(3, 3, 64, 64))[0].shape == (3, len(metrics["classes"]))
    plots = workspace / "plots" / "train_classifier"
    assert {"train_loss.csv", "val.csv", "predictions.png"} <= {p.name for p in plots.iterdir()}
    with (plots / "val.csv").open() as f:
        assert {"class_accuracy", "scene_accuracy", "both_accuracy", "loss"} <= set(next(csv.DictReader(f)))
    assert not list((workspace / "checkpoints").glob("train_classifier/*"))   # published: state removed
    status = dvc(workspace, "status", "train_classifier").stdout
    assert "changed" not in status and "modified" not in status   # the lock matches what was run

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workspace / 'mlflow' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id],
                              "tags.`subjectlab.stage` = 'train_classifier'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert {"test.class", "test.scene", "test.both"} <= set(runs[0].data.metrics)
    assert "train/loss_step" in runs[0].data.metrics   # Lightning logged into the stage's run


@pytest.mark.slow
def test_without_a_test_split_the_stage_names_val_as_what_it_measured(classifier_repo, tmp_path, in_process, capsys):
    workspace = make_workspace(tmp_path / "ws", git=False)
    shutil.copytree(classifier_repo / "data" / "augmented", workspace / "data" / "augmented")
    manifest = workspace / "data" / "augmented" / "manifest.csv"
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    write_manifest(manifest, [r for r in rows if r["split"] != "test"])
    edit_params(workspace / "params.yaml", **{"augment.test_count": 0, "train_classifier.max_epochs": 1})

    in_process("train_classifier", workspace)
    assert "augment.test_count is 0, so the accuracy is measured on the val split" in capsys.readouterr().out
    metrics = json.loads((workspace / "metrics" / "train_classifier.json").read_text())
    assert metrics["evaluated_on"] == "val" and "test" not in metrics and metrics["val"]["images"] == 8


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_judge(classifier_repo, tmp_path, in_process):
    """kill -9 mid-epoch, started again: the same weights and metrics as a run never stopped
    (augmentation draws from the per-step seed, the cosine schedule and the loader's place are
    in the checkpoint)."""
    from tests.test_resume import assert_same_run, reference_run, run_stage, snapshot, workspace_with

    workspace = workspace_with((classifier_repo, None), tmp_path, ("augmented",), **{
        "train_classifier.max_epochs": 2, "train_classifier.limit_train_batches": 3,
        "trainer.checkpoint_every_n_steps": 4})
    reference = reference_run(in_process, "train_classifier", workspace, "classifier", "train_classifier.json")

    # killed at step 5, before its checkpoint: the step-4 one, after the first batch of epoch 2, remains
    assert run_stage("train_classifier", workspace, "train.batch_end@5=kill").returncode == -9
    assert not (workspace / "data" / "models" / "classifier").exists()
    (last,) = (workspace / "checkpoints" / "train_classifier").glob("*/last.ckpt")
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 4
    resumed = run_stage("train_classifier", workspace)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming train_classifier from" in resumed.stdout and "not resumable" not in resumed.stderr
    assert_same_run(reference, snapshot(workspace, "classifier", "train_classifier.json"))
