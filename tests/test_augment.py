"""MSP A.1 augmentation: the mask follows every transform; splits; Disen-Mix."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from lightning_modules.augmentation import AugmentParams, SubjectAugmenter, mix_combinations, mix_subject_images
from lightning_modules.synthworld import render_subject, subject_catalogue, view_for
from tasks.msp.augment import assign_splits
from tasks.core.params import AugmentConfig
from tasks.core.errors import InputDataError
from tests.conftest import make_workspace


@pytest.fixture(scope="module")
def subject():
    spec = subject_catalogue(11)[1]
    return render_subject(spec, view_for(spec.class_index, 1, seed=0), 160)


def test_mask_follows_every_transform_exactly(subject):
    image, mask = subject
    augmenter = SubjectAugmenter(AugmentParams(canvas_size=96, crop_probability=0.5), seed=0)
    red = np.zeros((64, 64, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((64, 64, 3), np.uint8)
    blue[..., 2] = 255
    for key in range(20):
        on_red, m1, _ = augmenter(image, mask, red, key=(key,))
        on_blue, m2, _ = augmenter(image, mask, blue, key=(key,))
        assert np.array_equal(m1, m2) and m1.any()
        # where the mask says "subject" the pixels do not depend on the background ...
        assert np.array_equal(on_red[m1], on_blue[m1])
        # ... and everywhere else they are the background
        assert (on_red[~m1] == (255, 0, 0)).all() and (on_blue[~m1] == (0, 0, 255)).all()


def test_zoom_crop_and_translation_follow_the_paper(subject):
    image, mask = subject
    augmenter = SubjectAugmenter(AugmentParams(canvas_size=128), seed=1)
    scene = np.full((32, 32, 3), 90, np.uint8)
    crops, corners = 0, set()
    for key in range(300):
        _, placed, draw = augmenter(image, mask, scene, key=(key,))
        assert 0.4 <= draw.zoom <= 0.5
        ys, xs = np.nonzero(placed)
        if draw.crop == 1.0:
            longest = max(ys.max() - ys.min() + 1, xs.max() - xs.min() + 1)
            assert abs(longest - draw.zoom * 128) <= 2
        else:
            crops += 1
            assert 0.65 <= draw.crop <= 0.95
        corners.add((ys.min() // 16, xs.min() // 16))
    assert 15 <= crops <= 50  # probability 0.1 of 300
    assert len(corners) > 10  # translated all over the canvas


def test_split_is_seeded_and_sized():
    cfg = AugmentConfig(val_count=194, test_count=150)
    a = assign_splits(1408, cfg, seed=0)
    assert (a.count("train"), a.count("val"), a.count("test")) == (1064, 194, 150)
    assert a == assign_splits(1408, cfg, seed=0) and a != assign_splits(1408, cfg, seed=1)
    with pytest.raises(InputDataError, match="augment.val_count"):
        assign_splits(100, cfg, seed=0)


def test_disen_mix_concatenates_one_image_per_subject():
    tiles = [np.full((8, 8, 3), v, np.uint8) for v in (10, 200)]
    labels = [np.full((8, 8), i + 1, np.uint8) for i in range(2)]
    mixed = mix_subject_images(tiles, labels, ("a", "b"), ("a sks dog", "a zwx cartoon"), "a picture is divided", 16)
    assert mixed.image.shape == (16, 16, 3)
    assert (mixed.labels[:, :8] == 1).all() and (mixed.labels[:, 8:] == 2).all()
    assert mixed.prompt == "a sks dog, a zwx cartoon"
    assert mixed.disentangled_prompt == "a picture is divided, a sks dog, a zwx cartoon"
    combos = mix_combinations(list("abcd"), [2, 3], limit=100, seed=0)
    assert len(combos) == 6 + 4 and combos == mix_combinations(list("abcd"), [2, 3], limit=100, seed=0)


def digest_tree(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_same_seed_same_augmented_files(smoke_repo, tmp_path, in_process):
    workspace, _ = smoke_repo
    again = make_workspace(tmp_path / "again", git=False)
    in_process("synthesize", again)
    in_process("augment", again)
    first = digest_tree(workspace / "data" / "augmented")
    assert len(first) > 50
    assert first == digest_tree(again / "data" / "augmented")
    with (again / "data" / "augmented" / "manifest.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert all(r["prompt"] == f"a {r['identifier']} {r['class_noun']}" for r in rows)
