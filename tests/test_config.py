"""params.yaml: composed from conf/ with a profile; validation gives one clear line naming the key,
exit code 2, nothing written."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tasks.core.params import load_params, validate as resolve
from tasks.core.profiles import compose, profile_names
from tasks.core.errors import ParamsError
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


def composed(tmp_path: Path, *overrides: str) -> dict:
    out = tmp_path / "composed.yaml"
    compose(list(overrides), root=ROOT, output=out)
    return yaml.safe_load(out.read_text())


def test_committed_params_yaml_is_conf_composed_with_the_default_profile(tmp_path):
    # params.yaml is what DVC reads: it must never drift from conf/ (run `subjectlab params`)
    out = tmp_path / "params.yaml"
    compose([], root=ROOT, output=out)
    assert out.read_text() == (ROOT / "params.yaml").read_text()


def test_every_profile_composes_and_validates(tmp_path):
    assert {"default", "smoke"} <= set(profile_names(ROOT))
    for name in profile_names(ROOT):
        params = compose([f"profile={name}"], root=ROOT, output=tmp_path / f"{name}.yaml")
        assert params.profile == name


def test_a_profile_overlays_the_base_and_an_override_wins_over_both(tmp_path):
    base = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    smoke_overlay = yaml.safe_load((ROOT / "conf" / "profile" / "smoke.yaml").read_text())
    smoke = composed(tmp_path, "profile=smoke")
    assert smoke["finetune"]["max_steps"] == smoke_overlay["finetune"]["max_steps"] != base["finetune"]["max_steps"]
    assert smoke["finetune"]["lr"] == base["finetune"]["lr"]   # keys the overlay leaves alone keep the base value
    # one way to change a knob, whatever profile is active: an override on top
    assert composed(tmp_path, "profile=smoke", "finetune.max_steps=3")["finetune"]["max_steps"] == 3
    assert composed(tmp_path, "finetune.max_steps=3")["finetune"]["max_steps"] == 3


def test_the_full_profile_runs_every_table_row_and_the_demo_a_subset_of_the_same_rows(tmp_path):
    base = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())
    full = composed(tmp_path, "profile=full")
    demo = composed(tmp_path, "profile=default")
    for table in ("reid_ablation", "personalization"):
        assert full[table]["table"] == list(full[table]["rows"]) == list(base[table]["rows"])
        assert demo[table]["rows"] == full[table]["rows"]   # every row stays defined
        assert set(demo[table]["table"]) <= set(demo[table]["rows"])
    assert demo["reid_ablation"]["table"] == ["baseline", "deskpro"]
    assert {k: v for k, v in full.items() if k != "profile"} == {k: v for k, v in base.items()
                                                               if k not in ("defaults", "profile")}


def test_an_unknown_profile_or_key_stops_composition_and_writes_nothing(tmp_path):
    out = tmp_path / "params.yaml"
    with pytest.raises(ParamsError, match="profile"):
        compose(["profile=turbo"], root=ROOT, output=out)
    with pytest.raises(ParamsError, match=r"finetune\.max_step"):
        compose(["finetune.max_step=3"], root=ROOT, output=out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_a_typo_in_a_profile_file_is_named(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    with (tmp_path / "conf" / "profile" / "smoke.yaml").open("a") as f:
        f.write("zoo:\n  resolutoin: 64\n")
    with pytest.raises(ParamsError, match=r"unknown key zoo\.resolutoin"):
        compose(["profile=smoke"], root=tmp_path)
    assert not (tmp_path / "params.yaml").exists()


def test_subjectlab_params_composes_and_refuses_bad_overrides_in_one_line(tmp_path):
    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    ok = run([sys.executable, "-m", "tasks.core.cli", "params", "-S", "profile=smoke", "-S", "seed=7"], tmp_path)
    assert "profile smoke" in ok.stdout
    assert yaml.safe_load((tmp_path / "params.yaml").read_text())["seed"] == 7
    before = (tmp_path / "params.yaml").read_text()
    bad = run([sys.executable, "-m", "tasks.core.cli", "params", "-S", "finetune.lr=.inf"], tmp_path, check=False)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "finetune.lr" in bad.stderr
    assert (tmp_path / "params.yaml").read_text() == before


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
        ("finetune.lr", float("inf"), "finetune.lr: Input should be a finite number"),
        ("pretrain_base.lr", float("nan"), "pretrain_base.lr: Input should be a finite number"),
        ("finetune.prior_preservation_weight", float("inf"), "finetune.prior_preservation_weight: Input should be a finite"),
        ("reid.temperature", float("inf"), "reid.temperature: Input should be a finite number"),
        ("augment.zoom_range", [0.4, float("nan")], "augment.zoom_range.1: Input should be a finite number"),
        ("train_reid.variant.global_stream", False, "train_reid.variant: csa needs global_stream: true"),
        ("reid_ablation.rows.deskpro.knowledge_propagation", "yes please",
         "reid_ablation.rows.deskpro.knowledge_propagation: Input should be a valid boolean"),
        ("reid.image_size", [128], "missing key reid.image_size.1"),
        ("models.reid_backbone", "resnet50", "models.reid_backbone: Input should be 'osnet_x1_0'"),
        ("models.face_restorer", "gpen.pt", "models.face_restorer: expected clean, bicubic or the path"),
        ("reid.alpha", 1.5, "reid.alpha: Input should be less than or equal to 1"),
        ("reid_ablation.table", ["baseline", "nope"], "reid_ablation.table: 'nope' is not a key of rows (rows: baseline,"),
        ("personalization.table", ["lora", "lora"], "personalization.table: lora listed more than once"),
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


def test_malformed_yaml_names_the_file_and_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\ntrainer:\n  devices: [1\n")
    with pytest.raises(ParamsError, match=r"params.yaml: line \d+ not valid YAML"):
        load_params(bad)


def test_stage_exits_2_with_one_line_and_writes_nothing(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(with_change("synthesize.image_size", 8)))
    result = run([sys.executable, "-m", "tasks.synthworld.synthesize", "--params", str(params)], tmp_path, check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "synthesize.image_size: Input should be greater than or equal to 48" in lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_cli_lists_the_stages_and_rejects_unknown_ones(capsys):
    from tasks.core.cli import main, stages

    assert stages() == ["augment", "class_images", "eclipsed", "eclipsed_report", "evaluate_base", "evaluate_reid", "finetune", "msp", "msp_baseline",
                        "msp_controlnet", "msp_report", "personalization", "personalization_report", "pretrain_base", "pretrain_clip", "pretrain_dino", "reid_ablation",
                        "reid_ablation_report", "synthesize", "synthesize_faces", "synthesize_persons", "train_classifier", "train_controlnet",
                        "train_face_attributes", "train_face_parts", "train_reid", "train_reid_teacher", "train_segmenter",
                        "train_stylegan", "zoo"]
    with pytest.raises(SystemExit) as exit_info:
        main(["synthesise"])
    assert exit_info.value.code == 2
    assert "usage: subjectlab {params,augment,class_images,eclipsed,eclipsed_report,evaluate_base,evaluate_reid," in capsys.readouterr().err
