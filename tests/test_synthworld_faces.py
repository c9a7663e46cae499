"""SynthWorld faces: deterministic, aligned, and every part map, attribute and caption agree."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml
from PIL import Image

from lightning_modules.synthworld import FACE_ATTRIBUTES, PART_CLASSES, caption_of, face_catalogue, look_for, render_face
from lightning_modules.synthworld.faces import PART
from tests.conftest import make_workspace, write_params

GLASSES, BEARD = 0.35, 0.3


def looks(identities: int, per_identity: int, seed: int = 0):
    for who in face_catalogue(identities, seed):
        for index in range(per_identity):
            yield who, look_for(seed, who.identity, index, GLASSES, BEARD, 20.0)


@pytest.fixture(scope="module")
def renders():
    """60 faces at 32 px (the smoke size, where thin parts are most at risk) and at 64 px."""
    return {size: [(look, render_face(who, look, size)) for who, look in looks(10, 6)] for size in (32, 64)}


def test_contract_vocabularies():
    assert PART_CLASSES == ["background", "skin", "neck", "hair", "eyes", "brows", "nose", "mouth", "glasses", "beard"]
    assert FACE_ATTRIBUTES == {"hair_style": ["straight", "curly", "short", "ponytail"],
                               "hair_color": ["black", "brown", "blond", "red", "gray"],
                               "glasses": ["no", "yes"], "beard": ["no", "yes"],
                               "mouth": ["closed", "open", "smiling"]}


def test_rendering_is_deterministic_and_seeded():
    (who, look), = list(looks(1, 1))
    a, b = render_face(who, look, 32), render_face(who, look, 32)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.parts, b.parts)
    assert a.image.shape == (32, 32, 3) and a.image.dtype == np.uint8 and a.parts.shape == (32, 32)
    assert face_catalogue(5, 0)[:3] == face_catalogue(3, 0)     # identity k ignores later ones
    assert face_catalogue(5, 0) != face_catalogue(5, 1)
    assert [look for _, look in looks(3, 4)] == [look for _, look in looks(3, 4)]


def test_identities_keep_their_traits_and_differ():
    catalogue = face_catalogue(100, 0)
    assert len({who.traits() for who in catalogue}) == 100


def test_attributes_are_drawn_per_image_and_independently():
    drawn = [look for _, look in looks(100, 10)]
    per_identity = [drawn[i:i + 10] for i in range(0, len(drawn), 10)]
    assert np.mean([len({look.hair_color for look in group}) for group in per_identity]) > 3
    glasses = np.array([look.glasses == "yes" for look in drawn])
    beard = np.array([look.beard == "yes" for look in drawn])
    smiling = np.array([look.mouth == "smiling" for look in drawn])
    assert abs(glasses.mean() - GLASSES) < 0.05 and abs(beard.mean() - BEARD) < 0.05
    for a, b in ((glasses, beard), (glasses, smiling), (beard, smiling)):
        assert abs(a[b].mean() - a[~b].mean()) < 0.08     # no attribute tells another


@pytest.mark.parametrize("size", [32, 64])
def test_part_maps_agree_with_the_attributes(renders, size):
    for look, render in renders[size]:
        counts = np.bincount(render.parts.ravel(), minlength=len(PART_CLASSES))
        assert (counts[PART["glasses"]] > 0) == (look.glasses == "yes"), look
        assert (counts[PART["beard"]] > 0) == (look.beard == "yes"), look
        for part in ("skin", "neck", "hair", "eyes", "brows", "nose", "mouth", "background"):
            assert counts[PART[part]] > 0, (part, look)
        assert render.parts.max() < len(PART_CLASSES)


def test_attributes_are_visible_in_the_pixels(renders):
    by = {}
    for look, render in renders[64]:
        mouth = render.image[render.parts == PART["mouth"]].mean(-1)
        hair = render.image[render.parts == PART["hair"]].astype(np.float32)
        by.setdefault(("mouth", look.mouth), []).append((mouth.min(), mouth.max(), len(mouth)))
        by.setdefault(("hair", look.hair_style), []).append(hair.mean(-1).std() / max(hair.mean(), 1.0))
    # An open mouth is dark inside, a smile shows teeth, a closed mouth is a thin line.
    assert all(low < 90 for low, _, _ in by["mouth", "open"])
    assert all(high > 170 for _, high, _ in by["mouth", "smiling"])
    assert np.mean([n for *_, n in by["mouth", "closed"]]) < 0.6 * np.mean([n for *_, n in by["mouth", "open"]])
    # Curls are textured: their brightness varies more than straight or short hair does.
    assert np.mean(by["hair", "curly"]) > 1.3 * np.mean(by["hair", "short"])


def test_eyes_are_aligned_in_every_image(renders):
    for size in (32, 64):
        centers = []
        for _, render in renders[size]:
            ys, xs = np.nonzero(render.parts == PART["eyes"])
            left, right = xs < size / 2, xs >= size / 2
            centers.append((ys.mean(), (xs[left].mean() + xs[right].mean()) / 2 + 0.5))
        ys, xs = np.array(centers).T
        assert ys.max() - ys.min() <= 1.0 and abs(ys.mean() + 0.5 - 0.45 * size) <= 1.0
        assert np.abs(xs - size / 2).max() <= 1.0


def test_captions_say_the_attributes():
    assert caption_of({"hair_style": "curly", "hair_color": "blond", "glasses": "no", "beard": "no",
                       "mouth": "closed"}) == "a person with curly blond hair"
    assert caption_of({"hair_style": "straight", "hair_color": "black", "glasses": "yes", "beard": "no",
                       "mouth": "closed"}) == "a person with straight black hair and glasses"
    assert caption_of({"hair_style": "short", "hair_color": "brown", "glasses": "no", "beard": "yes",
                       "mouth": "open"}) == "a person with short brown hair, a beard and the mouth open"
    assert caption_of({"hair_style": "ponytail", "hair_color": "red", "glasses": "no", "beard": "no",
                       "mouth": "smiling"}) == "a smiling person with red ponytail hair"
    for _, look in looks(20, 5):
        caption = caption_of(look.attributes())
        words = set(caption.replace(",", "").split())
        assert look.hair_color in words and look.hair_style in words
        assert ("glasses" in words) == (look.glasses == "yes")
        assert ("beard" in words) == (look.beard == "yes")
        assert ("the mouth open" in caption) == (look.mouth == "open")
        assert caption.startswith("a smiling person") == (look.mouth == "smiling")


@pytest.fixture()
def tiny_workspace(tmp_path):
    workspace = make_workspace(tmp_path / "ws", git=False)

    def tiny(params):
        params["synthesize_faces"].update(num_identities=4, images_per_identity=5, image_size=16,
                                          val_per_identity=1, test_per_identity=2)

    return workspace, write_params(workspace, "tiny.yaml", tiny)


def test_the_stage_writes_the_layout(tiny_workspace, in_process):
    workspace, params_file = tiny_workspace
    in_process("synthesize_faces", workspace, "--params", params_file)
    out = workspace / "data" / "faces"
    dataset = yaml.safe_load((out / "dataset.yaml").read_text())
    assert dataset["part_classes"] == PART_CLASSES and dataset["attributes"] == FACE_ATTRIBUTES
    assert (dataset["identities"], dataset["images_per_identity"], dataset["image_size"]) == (4, 5, 16)
    with open(out / "faces.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["image", "parts", "identity", "index", "split", "caption", "hair_style", "hair_color",
                             "glasses", "beard", "mouth", "yaw", "light"]
    assert len(rows) == 20 and rows[0]["image"] == "images/0000_00.png" and rows[-1]["parts"] == "parts/0003_04.png"
    assert [row["split"] for row in rows[:5]] == ["train", "train", "val", "test", "test"]
    for row in rows:
        image, parts = np.asarray(Image.open(out / row["image"])), np.asarray(Image.open(out / row["parts"]))
        assert image.shape == (16, 16, 3) and parts.shape == (16, 16) and parts.max() < len(PART_CLASSES)
        assert row["caption"] == caption_of(row) and row[("glasses")] in ("no", "yes")
    metrics = json.loads((workspace / "metrics" / "synthesize_faces.json").read_text())
    assert metrics["images"] == 20 and metrics["splits"] == {"train": 8, "val": 4, "test": 8}
    assert set(metrics["attribute_shares"]) == set(FACE_ATTRIBUTES)
    assert abs(sum(metrics["attribute_shares"]["mouth"].values()) - 1) < 1e-3
    assert {p.name for p in (workspace / "plots" / "synthesize_faces").iterdir()} == {"faces.png", "identities.png"}


def test_bad_params_are_refused_in_one_line(tiny_workspace, in_process, capsys):
    workspace, _ = tiny_workspace

    def no_training_images(params):
        params["synthesize_faces"].update(images_per_identity=2, val_per_identity=1, test_per_identity=1)

    bad = write_params(workspace, "bad.yaml", no_training_images)
    with pytest.raises(SystemExit) as stop:
        in_process("synthesize_faces", workspace, "--params", bad)
    assert stop.value.code == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "synthesize_faces.images_per_identity" in message, message
    assert not (workspace / "data" / "faces").exists()
