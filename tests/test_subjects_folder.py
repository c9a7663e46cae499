"""A user's own subjects folder replaces SynthWorld; invalid folders get one clear line."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lightning_modules.synthworld import render_subject, subject_catalogue, view_for
from tasks.core.errors import InputDataError
from lightning_modules.data.subjects import load_subject_image, read_subjects_folder
from tests.conftest import make_workspace


def make_folder(root: Path, with_masks: bool = True) -> Path:
    """Two subjects: one with mask files, one as RGBA photos whose alpha is the mask."""
    entries = []
    for spec in subject_catalogue(2):
        entries.append({"name": f"my_{spec.class_noun}", "identifier": f"u{spec.identifier}",
                        "class_noun": spec.class_noun})
        images = root / f"my_{spec.class_noun}" / "images"
        images.mkdir(parents=True)
        for k in range(3):
            image, mask = render_subject(spec, view_for(spec.class_index, k, 0), 96)
            if spec.class_index == 0 and with_masks:
                Image.fromarray(image).save(images / f"{k}.jpg", quality=95)
                (images.parent / "masks").mkdir(exist_ok=True)
                Image.fromarray(mask.astype(np.uint8) * 255).save(images.parent / "masks" / f"{k}.png")
            else:
                rgba = np.dstack([image, mask.astype(np.uint8) * 255])
                Image.fromarray(rgba).save(images / f"{k}.png")
    (root / "subjects.yaml").write_text(yaml.safe_dump({"subjects": entries}))
    return root


def test_valid_folder_is_indexed(tmp_path):
    records = read_subjects_folder(make_folder(tmp_path / "mine"))
    assert [r.name for r in records] == ["my_cartoon", "my_dog"]
    assert records[0].prompt == "a usks cartoon"
    assert all(len(r.images) == 3 for r in records)
    image, mask = load_subject_image(records[1].images[0])  # from the alpha channel
    assert image.shape == (96, 96, 3) and 0 < mask.mean() < 1


def break_yaml(folder: Path, change) -> None:
    data = yaml.safe_load((folder / "subjects.yaml").read_text())
    change(data)
    (folder / "subjects.yaml").write_text(yaml.safe_dump(data))


@pytest.mark.parametrize("breakage, message", [
    (lambda f: (f / "subjects.yaml").unlink(), r"subjects\.yaml: missing"),
    (lambda f: break_yaml(f, lambda d: d["subjects"][1].update(identifier="usks")), r"subjects\[1\]\.identifier: 'usks' is used by two"),
    (lambda f: break_yaml(f, lambda d: d["subjects"][0].update(color="red")), r"subjects\[0\]: unknown key 'color'"),
    (lambda f: break_yaml(f, lambda d: d["subjects"][0].pop("class_noun")), r"subjects\[0\]\.class_noun: missing"),
    (lambda f: break_yaml(f, lambda d: d["subjects"][0].update(identifier="Two Words")), r"must be one lowercase token"),
    (lambda f: shutil.rmtree(f / "my_dog" / "images"), r"my_dog/images: no images for subject 'my_dog'"),
    (lambda f: (f / "my_dog" / "images" / "1.png").write_bytes(b"not a png"), r"my_dog/images/1\.png: not a readable image"),
    (lambda f: Image.new("L", (10, 10)).save(f / "my_cartoon" / "masks" / "0.png"), r"masks/0\.png: mask is 10x10 but its image is 96x96"),
])
def test_invalid_folders_name_the_file(tmp_path, breakage, message):
    folder = make_folder(tmp_path / "mine")
    breakage(folder)
    with pytest.raises(InputDataError, match=message):
        read_subjects_folder(folder)


def test_missing_folder_names_the_param(tmp_path):
    with pytest.raises(InputDataError, match=r"augment\.subjects_dir: folder not found"):
        read_subjects_folder(tmp_path / "nowhere")


@pytest.mark.slow
def test_augment_stage_uses_a_user_folder_and_rejects_a_bad_one(tmp_path, in_process, capsys):
    workspace = make_workspace(tmp_path / "ws", git=False)
    in_process("synthesize", workspace)  # for the scenes
    folder = make_folder(tmp_path / "mine")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["augment"]["subjects_dir"] = str(folder)
    (workspace / "mine.yaml").write_text(yaml.safe_dump(params))
    in_process("augment", workspace, "--params", "mine.yaml")
    with (workspace / "data" / "augmented" / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["subject"] for r in rows} == {"my_cartoon", "my_dog"}
    assert {r["prompt"] for r in rows} == {"a usks cartoon", "a uzwx dog"}

    shutil.rmtree(workspace / "data" / "augmented")
    (folder / "my_dog" / "images" / "2.png").write_bytes(b"garbage bytes")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        in_process("augment", workspace, "--params", "mine.yaml")
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {folder}/my_dog/images/2.png: not a readable image (UnidentifiedImageError)"]
    assert not (workspace / "data" / "augmented").exists()
    assert not list((workspace / "data").glob(".augmented.tmp-*"))
