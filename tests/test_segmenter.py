"""The subject-aware segmentation U-Net and its LightningModule, on tiny real data."""

from __future__ import annotations

import csv
import json

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import resnet34

from lightning_modules.core.metrics import confusion_matrix, iou_from_confusion
from lightning_modules.segmentation import (
    ResNet34UNet,
    SegmentationItem,
    SubjectSegmentationDataset,
    SubjectSegmenter,
    balanced_class_weights,
    evaluate_iou,
)
from lightning_modules.core.losses import NonFiniteLossError
from tests.conftest import edit_params


def test_forward_and_encoder_features():
    net = ResNet34UNet(num_classes=5, decoder_channels=[32, 16, 16, 8, 8])
    x = torch.rand(2, 3, 64, 64)
    assert net(x).shape == (2, 5, 64, 64)
    features = net.encode(x)
    assert [f.shape[1] for f in features] == [64, 64, 128, 256, 512]
    assert [f.shape[-1] for f in features] == [32, 16, 8, 4, 2]


def test_save_and_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    net = ResNet34UNet(3, [16, 16, 8, 8, 8], class_names=["background", "a", "b"]).eval()
    net.save_pretrained(tmp_path / "seg")
    assert (tmp_path / "seg" / "model.safetensors").is_file()
    loaded = ResNet34UNet.from_pretrained(tmp_path / "seg").eval()
    x = torch.rand(1, 3, 32, 32)
    assert loaded.class_names == ["background", "a", "b"]
    assert torch.equal(net(x), loaded(x))


def test_encoder_loads_torchvision_resnet34_weights(tmp_path):
    reference = resnet34(weights=None)
    save_file(reference.state_dict(), str(tmp_path / "resnet34.safetensors"))
    net = ResNet34UNet(2, [8, 8, 8, 8, 8])
    net.load_encoder_weights(tmp_path / "resnet34.safetensors")
    assert torch.equal(net.layers[3][0].conv1.weight, reference.layer4[0].conv1.weight)
    save_file({"fc.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(KeyError, match="expected torchvision resnet34 weights"):
        net.load_encoder_weights(tmp_path / "other.safetensors")


def test_iou_from_confusion_matches_hand_count():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 2, 0]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 0]])
    iou = iou_from_confusion(confusion_matrix(pred, target, 4))
    # class 0: tp 2, fp 1, fn 1 -> 2/4; class 1: tp 2, fp 1 -> 2/3; class 2: tp 2, fn 1 -> 2/3
    assert torch.allclose(iou[:3], torch.tensor([0.5, 2 / 3, 2 / 3], dtype=torch.float64))
    assert torch.isnan(iou[3])


def squares(n: int, size: int = 32, seed: int = 0) -> TensorDataset:
    """Colored squares on gray: class 1 red, class 2 green (a task a few steps can learn)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.full((n, 3, size, size), 0.5)
    labels = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        c = 1 + i % 2
        y, x = torch.randint(0, size - 12, (2,), generator=g).tolist()
        images[i, :, y:y + 12, x:x + 12] = torch.tensor([1.0, 0.0, 0.0] if c == 1 else [0.0, 1.0, 0.0])[:, None, None]
        labels[i, y:y + 12, x:x + 12] = c
    return TensorDataset(images, labels)


def test_a_few_training_steps_learn_the_segments(tmp_path):
    L.seed_everything(0, verbose=False)
    net = ResNet34UNet(3, [32, 16, 16, 8, 8], class_names=["background", "red", "green"])
    data = squares(16)
    before = evaluate_iou(net, DataLoader(data, batch_size=8))
    trainer = L.Trainer(accelerator="cpu", max_epochs=15, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(SubjectSegmenter(net, lr=3e-3), DataLoader(data, batch_size=8, shuffle=True))
    after = evaluate_iou(net, DataLoader(data, batch_size=8))
    assert trainer.global_step == 30
    assert after["mIoU"] > before["mIoU"] + 0.2
    assert after["iou"]["red"] > 0.3 and after["iou"]["green"] > 0.3


def test_compute_loss_is_the_pixel_cross_entropy():
    net = ResNet34UNet(3, [8, 8, 8, 8, 8]).eval()
    images, labels = squares(4).tensors
    loss, terms = SubjectSegmenter(net).compute_loss((images, labels))
    assert terms == {} and torch.allclose(loss, torch.nn.functional.cross_entropy(net(images), labels))


def test_balanced_class_weights_follow_the_pixel_frequencies():
    counts = torch.tensor([900, 90, 9, 0])
    assert balanced_class_weights(counts, 0.5).tolist() == pytest.approx([1.0, 10 ** 0.5, 10.0, 1.0])
    assert balanced_class_weights(counts, 1.0).tolist() == pytest.approx([1.0, 10.0, 100.0, 1.0])
    assert balanced_class_weights(counts, 0.0).tolist() == [1.0, 1.0, 1.0, 1.0]   # the paper's plain loss


def test_the_weighted_loss_is_the_weighted_pixel_cross_entropy():
    net = ResNet34UNet(3, [8, 8, 8, 8, 8]).eval()
    images, labels = squares(4).tensors
    weights = torch.tensor([1.0, 4.0, 2.0])
    loss, _ = SubjectSegmenter(net, class_weights=weights).compute_loss((images, labels))
    logits = net(images)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, labels, weight=weights))
    assert not torch.allclose(loss, torch.nn.functional.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match="class_weights: \\(2,\\) for 3 classes"):
        SubjectSegmenter(net, class_weights=torch.ones(2))


def test_class_pixel_counts_read_the_masks_at_the_training_size(tmp_path):
    items = []
    for k, (label, side) in enumerate([(1, 8), (2, 16), (1, 0)]):
        mask = np.zeros((64, 64), np.uint8)
        mask[:side, :side] = 255
        Image.fromarray(mask).save(tmp_path / f"m{k}.png")
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / f"i{k}.png")
        items.append(SegmentationItem(tmp_path / f"i{k}.png", tmp_path / f"m{k}.png", label))
    counts = SubjectSegmentationDataset(items, 32).class_pixel_counts(3)   # masks halved: 4x4, 8x8, none
    assert counts.tolist() == [3 * 32 * 32 - 16 - 64, 16, 64]


def test_non_finite_loss_stops_training(tmp_path):
    net = ResNet34UNet(3, [8, 8, 8, 8, 8])
    data = squares(4)
    data.tensors[0][0, 0, 0, 0] = float("nan")
    trainer = L.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)
    with pytest.raises(NonFiniteLossError, match="train_segmenter loss became nan at step 0"):
        trainer.fit(SubjectSegmenter(net), DataLoader(data, batch_size=4))


@pytest.mark.slow
def test_without_a_test_split_the_stage_names_val_as_what_it_measured(augmented_copy, in_process, capsys):
    # augment.test_count: 0, as augment would have written it: the manifest has no test rows.
    manifest = augmented_copy / "data" / "augmented" / "manifest.csv"
    with manifest.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    with manifest.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if r["split"] != "test")
    edit_params(augmented_copy / "params.yaml", **{"augment.test_count": 0, "train_segmenter.limit_train_batches": 2})

    in_process("train_segmenter", augmented_copy)
    assert "augment.test_count is 0, so the final IoU is measured on the val split" in capsys.readouterr().out
    metrics = json.loads((augmented_copy / "metrics" / "train_segmenter.json").read_text())
    assert metrics["evaluated_on"] == "val" and "test" not in metrics
    assert {"mIoU", "subject_mIoU", "pixel_accuracy", "iou"} <= set(metrics["val"])
    assert metrics["global_step"] == 2
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{augmented_copy / 'mlflow' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("subjectlab").experiment_id])
    assert "val.mIoU" in run.data.metrics and not any(k.startswith("test.") for k in run.data.metrics)
