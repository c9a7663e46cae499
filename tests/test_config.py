"""params.yaml validation: one clear line naming the key, exit code 2, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from tasks.config import load_params, resolve
from tasks.errors import ParamsError
from tests.conftest import ROOT, run

RAW = yaml.safe_load((ROOT / "params.yaml").read_text())


def with_change(path: str, value) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    *parents, leaf = path.split(".")
    node = raw
    for key in parents:
        node = node[key]
    node[leaf] = value
    return raw


def test_repository_params_validate_in_both_profiles():
    default = resolve(RAW)
    assert default.profile == "default" and default.augment.canvas_size == RAW["augment"]["canvas_size"]
    smoke = resolve(with_change("profile", "smoke"))
    assert smoke.train_segmenter.max_epochs == RAW["profiles"]["smoke"]["train_segmenter"]["max_epochs"]
    # keys the overlay does not name keep the base value
    assert smoke.train_segmenter.lr == default.train_segmenter.lr
    assert smoke.synthesize.num_subjects == RAW["profiles"]["smoke"]["synthesize"]["num_subjects"]


def test_paper_split_is_the_default():
    p = resolve(RAW)
    total = p.synthesize.num_subjects * p.augment.augmentations_per_subject
    assert (total - p.augment.val_count - p.augment.test_count, p.augment.val_count, p.augment.test_count) == (
        1064, 194, 150)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("train_segmenter.lr", -1.0, "train_segmenter.lr: Input should be greater than 0"),
        ("train_segmenter.batch_size", "four", "train_segmenter.batch_size: Input should be a valid integer"),
        ("augment.zoom_range", [0.6, 0.4], "augment.zoom_range: expected [min, max]"),
        ("augment.crop_probability", 1.5, "augment.crop_probability: Input should be less than or equal to 1"),
        ("trainer.precision", "fp8", "trainer.precision: Input should be"),
        ("schedule.cron", "every day", "schedule.cron: expected a 5-field cron expression"),
        ("models.segmenter_encoder_weights", "/nonexistent/resnet34.safetensors", "file not found"),
        ("profile", "turbo", "profile: unknown profile 'turbo'"),
        ("train_reid.variant.global_stream", False, "train_reid.variant: csa needs global_stream: true"),
        ("reid_ablation.rows.deskpro.knowledge_propagation", "yes please",
         "reid_ablation.rows.deskpro.knowledge_propagation: Input should be a valid boolean"),
        ("reid.image_size", [128], "missing key reid.image_size.1"),
        ("models.reid_backbone", "resnet50", "models.reid_backbone: Input should be 'osnet_x1_0'"),
        ("models.face_restorer", "gpen.pt", "models.face_restorer: expected clean, bicubic or the path"),
        ("reid.alpha", 1.5, "reid.alpha: Input should be less than or equal to 1"),
    ],
)
def test_bad_values_name_the_key(path, value, expected):
    with pytest.raises(ParamsError) as err:
        resolve(with_change(path, value))
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_keys_are_errors():
    raw = with_change("train_segmenter.lrr", 0.1)
    with pytest.raises(ParamsError, match=r"unknown key train_segmenter\.lrr"):
        resolve(raw)
    raw = with_change("profiles.smoke.augment.canvas", 32)
    with pytest.raises(ParamsError, match=r"unknown key profiles\.smoke\.augment\.canvas"):
        resolve(raw)


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\ntrainer:\n  devices: [1\n")
    with pytest.raises(ParamsError, match=r"params.yaml: line \d+ not valid YAML"):
        load_params(bad)


def test_stage_exits_2_with_one_line_and_writes_nothing(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(with_change("synthesize.image_size", 8)))
    result = run([sys.executable, "-m", "tasks.synthesize", "--params", str(params)], tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "synthesize.image_size: Input should be greater than or equal to 48" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_cli_lists_the_stages_and_rejects_unknown_ones(capsys):
    from tasks.cli import main, stages

    assert stages() == ["augment", "class_images", "evaluate_reid", "finetune", "pretrain_base", "pretrain_clip",
                        "reid_ablation", "reid_ablation_report", "synthesize", "synthesize_persons", "train_reid",
                        "train_reid_teacher", "train_segmenter", "zoo"]
    with pytest.raises(SystemExit) as exit_info:
        main(["synthesise"])
    assert exit_info.value.code == 2
    assert "usage: subjectlab {augment,class_images,evaluate_reid," in capsys.readouterr().err
