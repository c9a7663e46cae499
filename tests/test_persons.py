"""SynthWorld persons: identities, outfits, exact parsing maps, surveillance images, the stage."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lightning_modules.synthworld import (
    CLOTH_CLASSES,
    PARSING_CLASSES,
    identity_catalogue,
    outfits_of,
    plan_persons,
    render_person,
    restored_face,
    shot_for,
    surveillance_view,
)
from lightning_modules.synthworld.persons import LABEL, VIEWS
from tests.conftest import make_workspace

H, W, FACTOR, FACE = 256, 128, 4, 32
NAME = re.compile(r"^(\d{4})_c(\d+)s(\d+)_(\d{6})_00\.png$")


def shot(view: str, seed: int = 0, pid: int = 1):
    return shot_for(seed, "test", pid, 1, 1, 0, (view,))


@pytest.fixture(scope="module")
def people():
    return identity_catalogue(40, seed=0)


def photograph(who, outfit, view, seed=0):
    s = shot(view, seed, who.pid)
    render = render_person(who, outfit, s, H, W)
    return render, surveillance_view(render.image, render.parsing, FACTOR, s.key)


def test_identities_are_unique_combinations_of_cues(people):
    cues = [who.cues() for who in people]
    assert len(set(cues)) == len(cues)
    # single cues are shared, so no one cue identifies a person on its own
    assert len({who.hair_color for who in people}) < len(people)
    assert identity_catalogue(10, seed=0) == people[:10]


def test_an_identity_changes_into_clearly_different_outfits(people):
    for who in people[:10]:
        outfits = outfits_of(who, 5, seed=0)
        for i, a in enumerate(outfits):
            for b in outfits[i + 1:]:
                assert a.top_color != b.top_color
                assert (a.bottom, a.bottom_color) != (b.bottom, b.bottom_color)
        assert outfits_of(who, 2, seed=0) == outfits[:2]


def test_rendering_is_deterministic(people):
    who = people[3]
    outfit = outfits_of(who, 1, seed=0)[0]
    a_render, a = photograph(who, outfit, "front")
    b_render, b = photograph(who, outfit, "front")
    assert np.array_equal(a_render.image, b_render.image) and np.array_equal(a.image, b.image)
    assert np.array_equal(a.parsing, b.parsing) and a.face_box == b.face_box
    other = identity_catalogue(4, seed=1)[3]
    c_render, c = photograph(other, outfits_of(other, 1, seed=1)[0], "front", seed=1)
    assert not np.array_equal(a_render.image, c_render.image) and not np.array_equal(a.image, c.image)


@pytest.mark.parametrize("view", VIEWS)
def test_parsing_map_is_exactly_the_painted_pixels(people, view):
    who = people[5]
    outfit = outfits_of(who, 1, seed=0)[0]
    red, blue = np.zeros((H, W, 3), np.uint8), np.zeros((H, W, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    on_red = render_person(who, outfit, shot(view), H, W, background=red)
    on_blue = render_person(who, outfit, shot(view), H, W, background=blue)
    assert np.array_equal(on_red.parsing, on_blue.parsing)
    background = on_red.parsing == 0
    # the background label is exactly where the backdrop shows through
    assert np.array_equal((on_red.image != on_blue.image).any(-1), background)
    assert 0.1 < (~background).mean() < 0.6
    assert on_red.parsing.max() < len(PARSING_CLASSES)


@pytest.mark.parametrize("view", VIEWS)
def test_clothes_change_while_hair_and_face_stay(people, view):
    for who in people[:8]:
        first, second = outfits_of(who, 2, seed=0)
        a = render_person(who, first, shot(view), H, W)
        b = render_person(who, second, shot(view), H, W)
        for part in ("hair", "face"):
            mask = a.parsing == LABEL[part]
            assert np.array_equal(mask, b.parsing == LABEL[part])
            assert np.array_equal(a.image[mask], b.image[mask])
        cloth = np.isin(a.parsing, [LABEL[c] for c in CLOTH_CLASSES if c != "shoes"])
        changed = (a.image != b.image).any(-1) | (a.parsing != b.parsing)
        assert changed[cloth].mean() > 0.5


def test_identities_differ_in_the_high_resolution_face(people):
    faces = []
    for who in people[:6]:
        render, lr = photograph(who, outfits_of(who, 1, seed=0)[0], "front")
        faces.append(restored_face(render.image, lr.face_box, FACTOR, FACE).astype(int))
    for i in range(len(faces)):
        for j in range(i + 1, len(faces)):
            assert np.abs(faces[i] - faces[j]).mean() > 5


def test_back_view_hides_the_face_front_view_shows_it(people):
    for who in people[:10]:
        outfit = outfits_of(who, 1, seed=0)[0]
        back_render, back = photograph(who, outfit, "back")
        assert not (back_render.parsing == LABEL["face"]).any() and back_render.face_box is None
        assert not (back.parsing == LABEL["face"]).any() and back.face_box is None
        for view in ("front", "left"):
            _, lr = photograph(who, outfit, view)
            assert lr.face_box is not None
            x0, y0, x1, y1 = lr.face_box
            assert 0 <= x0 < x1 <= W // FACTOR and 0 <= y0 < y1 <= H // FACTOR
            face = lr.parsing == LABEL["face"]
            inside = np.zeros_like(face)
            inside[y0:y1, x0:x1] = True
            assert face[inside].any() and not face[~inside].any()


def test_surveillance_image_is_small_and_the_teacher_face_is_clean(people):
    who = people[7]
    render, lr = photograph(who, outfits_of(who, 1, seed=0)[0], "front")
    assert render.image.shape == (H, W, 3)
    assert lr.image.shape == (H // FACTOR, W // FACTOR, 3) and lr.image.dtype == np.uint8
    assert lr.parsing.shape == (H // FACTOR, W // FACTOR)
    face = restored_face(render.image, lr.face_box, FACTOR, FACE)
    assert face.shape == (FACE, FACE, 3)
    # the degradation is more than a downscale: blur, noise and JPEG change the pixels
    plain = np.asarray(Image.fromarray(render.image).reduce(FACTOR)).astype(int)
    assert np.abs(plain - lr.image.astype(int)).mean() > 1


def test_plan_follows_the_protocols():
    plan = plan_persons(4, 3, train_outfits=2, cameras=3, prcc_images_per_camera=2, celeb_outfits=4, seed=0)
    train = [p for p in plan if p.places == (("train", "train"),)]
    assert {p.pid for p in train} == {1, 2, 3, 4} and len(train) == 4 * 2 * 3
    test = [p for p in plan if p not in train]
    assert {p.pid for p in test} == {5, 6, 7}
    for p in test:
        for protocol, role in p.places:
            if protocol.startswith("prcc"):
                expected = {"gallery": (1, 1), "query": (2, 1) if protocol == "prcc_same" else (3, 2)}[role]
                assert (p.camera, p.outfit) == expected
            else:
                assert p.camera == p.outfit
    queries = [p.pid for p in test for place in p.places if place == ("celeb_light", "query")]
    assert sorted(queries) == [5, 6, 7]
    assert {p.shot.view for p in train} == {"front", "left", "back"}


def read_rel(root: Path, folder: str) -> list[str]:
    return sorted(f"{folder}/{p.name}" for p in (root / folder).iterdir())


def test_stage_writes_the_market_style_layout(tmp_path, in_process):
    workspace = make_workspace(tmp_path / "ws", git=False)
    in_process("synthesize_persons", workspace)
    root = workspace / "data" / "persons"
    meta = yaml.safe_load((root / "dataset.yaml").read_text())
    assert meta["name"] == "synthworld-persons"
    assert meta["parsing_classes"][0] == "background" and meta["face_class"] in meta["parsing_classes"]
    assert set(meta["cloth_classes"]) <= set(meta["parsing_classes"])
    assert set(meta["protocols"]) == {"prcc_cross", "prcc_same", "celeb_light"}
    folders = ["bounding_box_train"] + [f"protocols/{p}/{s}" for p in meta["protocols"]
                                        for s in ("query", "bounding_box_test")]
    images = {folder: read_rel(root, folder) for folder in folders}
    assert sorted(p.name for p in root.iterdir()) == ["bounding_box_train", "dataset.yaml", "faces", "faces.csv",
                                                      "parsing", "protocols"]
    parsed = {}
    for folder, rels in images.items():
        for rel in rels:
            match = NAME.match(Path(rel).name)
            assert match, rel
            parsed[rel] = tuple(int(g) for g in match.groups())
    for rel in list(parsed)[::7]:
        image, labels = Image.open(root / rel), Image.open(root / "parsing" / rel)
        assert image.mode == "RGB" and labels.mode == "L" and image.size == labels.size == (32, 64)
        assert np.asarray(labels).max() < len(meta["parsing_classes"])
    assert sum(1 for _ in (root / "parsing").rglob("*.png")) == len(parsed)

    train_pids = {parsed[r][0] for r in images["bounding_box_train"]}
    test_pids = {parsed[r][0] for f in folders[1:] for r in images[f]}
    assert train_pids == set(range(1, 9)) and test_pids == set(range(9, 17))
    assert len(images["bounding_box_train"]) == 8 * 3 * 3
    cams = {f: {parsed[r][1:3] for r in images[f]} for f in folders}
    assert cams["protocols/prcc_cross/query"] == {(3, 2)} and cams["protocols/prcc_same/query"] == {(2, 1)}
    assert cams["protocols/prcc_cross/bounding_box_test"] == cams["protocols/prcc_same/bounding_box_test"] == {(1, 1)}
    assert all(c == s for c, s in cams["protocols/celeb_light/bounding_box_test"] | cams["protocols/celeb_light/query"])
    assert len(images["protocols/celeb_light/query"]) == 8
    assert len(images["protocols/celeb_light/bounding_box_test"]) == 24
    assert len(images["protocols/prcc_same/query"]) == len(images["protocols/prcc_cross/query"]) == 16
    assert len({parsed[r][3] for r in images["bounding_box_train"]}) == 72  # running frame index

    with open(root / "faces.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and set(rows[0]) == {"image", "x0", "y0", "x1", "y1"}
    for row in rows:
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        labels = np.asarray(Image.open(root / "parsing" / row["image"]))
        assert (labels[y0:y1, x0:x1] == meta["parsing_classes"].index("face")).any()
        assert Image.open(root / "faces" / row["image"]).size == (24, 24)
    assert sum(1 for _ in (root / "faces").rglob("*.png")) == len(rows) < len(parsed)

    metrics = json.loads((workspace / "metrics" / "synthesize_persons.json").read_text())
    assert metrics["ids"] == {"train": 8, "test": 8} and metrics["images"]["train"] == 72
    assert metrics["faces"] == len(rows) and 0.5 < metrics["visible_face_fraction"] < 1.0
    assert {p.name for p in (workspace / "plots" / "synthesize_persons").iterdir()} == {"identity.png", "faces.png"}
    assert not [p for p in (workspace / "data").iterdir() if p.name.startswith(".")]


def test_stage_rejects_a_render_size_the_factor_does_not_divide(tmp_path, in_process, capsys):
    workspace = make_workspace(tmp_path / "ws", git=False)
    text = (workspace / "params.yaml").read_text().replace("  degrade_factor: 2\n", "  degrade_factor: 3\n")
    (workspace / "params.yaml").write_text(text)
    with pytest.raises(SystemExit) as exit_info:
        in_process("synthesize_persons", workspace)
    assert exit_info.value.code == 2
    assert "synthesize_persons.render_height" in capsys.readouterr().err
    assert not (workspace / "data" / "persons").exists()
