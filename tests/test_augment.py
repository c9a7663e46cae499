"""MSP A.1 augmentation: the mask follows every transform; splits; Disen-Mix."""

from __future__ import annotations

import csv
import hashlib
import pickle
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
from torch.utils.data import DataLoader, Dataset

from lightning_modules.augmentation import (AugmentParams, SubjectAugmenter, mix_combinations, mix_subject_images,
                                            tight_crop)
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


class AugmentedSubjects(Dataset):
    """Sample i: subject i % n on scene i % m, key (i,), as a DataLoader would draw them."""

    def __init__(self, augmenter: SubjectAugmenter, subjects, scenes, length: int):
        self.augmenter, self.subjects, self.scenes, self.length = augmenter, subjects, scenes, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        image, mask = self.subjects[i % len(self.subjects)]
        canvas, placed, _ = self.augmenter(image, mask, self.scenes[i % len(self.scenes)], key=(i,))
        return canvas, placed


@pytest.fixture(scope="module")
def world():
    specs = subject_catalogue(11)[:3]
    subjects = [render_subject(s, view_for(s.class_index, k, seed=0), 96) for s in specs for k in range(2)]
    rng = np.random.default_rng(0)
    scenes = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(3)]
    return subjects, scenes


def test_sample_is_a_pure_function_of_seed_and_key(world):
    subjects, scenes = world
    params = AugmentParams(canvas_size=80, crop_probability=0.5)
    dataset = AugmentedSubjects(SubjectAugmenter(params, seed=5), subjects, scenes, 24)
    forward = [dataset[i] for i in range(24)]
    # another augmenter with the same seed, samples in a shuffled order, some of them twice
    again = AugmentedSubjects(SubjectAugmenter(params, seed=5), subjects, scenes, 24)
    order = [int(i) for i in np.random.default_rng(1).permutation(24)] + [3, 17, 3, 0]
    for i in order:
        canvas, placed = again[i]
        assert canvas.tobytes() == forward[i][0].tobytes() and placed.tobytes() == forward[i][1].tobytes(), i
    # the key and the seed both matter
    assert len({forward[i][0].tobytes() for i in range(24)}) == 24
    other = AugmentedSubjects(SubjectAugmenter(params, seed=6), subjects, scenes, 24)
    assert sum(other[i][0].tobytes() != forward[i][0].tobytes() for i in range(24)) >= 20


def test_a_0_255_mask_gives_the_bool_mask_sample(world):
    subjects, scenes = world
    augmenter = SubjectAugmenter(AugmentParams(canvas_size=64, crop_probability=0.5), seed=4)
    for key in range(6):
        image, mask = subjects[key % len(subjects)]
        from_bool = augmenter(image, mask, scenes[0], key=(key,))
        from_uint8 = augmenter(image, mask.astype(np.uint8) * 255, scenes[0], key=(key,))
        assert from_uint8[1].dtype == bool and set(np.unique(from_uint8[1].view(np.uint8))) <= {0, 1}
        assert np.array_equal(from_bool[0], from_uint8[0]) and np.array_equal(from_bool[1], from_uint8[1])
    with pytest.raises(ValueError, match="empty"):
        augmenter(image, np.zeros_like(mask), scenes[0], key=(0,))


def test_dataloader_workers_give_the_single_process_samples(world):
    subjects, scenes = world
    augmenter = SubjectAugmenter(AugmentParams(canvas_size=64, crop_probability=0.5), seed=2)
    # a spawn-started worker gets the augmenter by pickle: the copy must draw the same samples
    copy = pickle.loads(pickle.dumps(augmenter))
    image, mask = subjects[0]
    assert all(np.array_equal(a, b) for a, b in zip(augmenter(image, mask, scenes[0], key=(9,))[:2],
                                                     copy(image, mask, scenes[0], key=(9,))[:2]))
    dataset = AugmentedSubjects(augmenter, subjects, scenes, 12)
    single = list(DataLoader(dataset, batch_size=None, num_workers=0))
    parallel = list(DataLoader(dataset, batch_size=None, num_workers=2))
    assert len(single) == len(parallel) == 12
    for (c0, m0), (c2, m2) in zip(single, parallel):
        assert c0.numpy().tobytes() == c2.numpy().tobytes() and m0.numpy().tobytes() == m2.numpy().tobytes()


def test_one_transform_for_all_samples_matches_a_compose_per_sample(world):
    """The transform built once gives the pixels of albumentations' own Crop -> Resize -> Pad
    built for each sample's geometry (what the augmenter did before)."""
    subjects, scenes = world
    c = 72
    augmenter = SubjectAugmenter(AugmentParams(canvas_size=c, crop_probability=0.5), seed=3)
    for key in range(12):
        image, mask = subjects[key % len(subjects)]
        canvas, placed, draw = augmenter(image, mask, scenes[0], key=(key,))
        subject, subject_mask = tight_crop(image, mask)
        g = augmenter.geometry(draw, *subject.shape[:2])
        (x0, y0, x1, y1), (th, tw), (top, bottom, left, right) = g["crop_coords"], g["size"], g["padding"]
        reference = A.Compose([
            A.Crop(x_min=x0, y_min=y0, x_max=x1, y_max=y1),
            A.Resize(th, tw, interpolation=cv2.INTER_AREA, mask_interpolation=cv2.INTER_NEAREST),
            A.Pad(padding=(left, top, right, bottom), fill=0, fill_mask=0, border_mode=cv2.BORDER_CONSTANT),
        ])(image=subject, mask=subject_mask.astype(np.uint8))
        expected_mask = reference["mask"].astype(bool)
        expected = cv2.resize(scenes[0], (c, c), interpolation=cv2.INTER_AREA)
        expected[expected_mask] = reference["image"][expected_mask]
        assert np.array_equal(placed, expected_mask) and np.array_equal(canvas, expected), key


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
