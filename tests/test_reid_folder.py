"""A user's own Market-1501-style re-ID folder: read as documented, or a one-line error."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from PIL import Image

from tasks.core.errors import InputDataError
from lightning_modules.data.market1501 import read_reid_folder
from tests.conftest import make_workspace, stopped

CLASSES = ["background", "hair", "face", "upper_clothes", "lower_clothes", "arms", "legs"]


def write_person(root, rel: str, face: bool = True, size=(32, 16)) -> None:
    h, w = size
    image = (np.random.default_rng(len(rel)).random((h, w, 3)) * 255).astype(np.uint8)
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / rel)
    labels = np.zeros((h, w), np.uint8)
    labels[2:6, 5:11] = 1
    if face:
        labels[6:10, 6:10] = 2
    labels[10:20, 3:13] = 3
    labels[20:30, 4:12] = 4
    (root / "parsing" / rel).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(labels).save(root / "parsing" / rel)


def market_folder(root, with_yaml: bool = True):
    for pid in (1, 2, 3):
        for cam, clothes in ((1, 1), (2, 2)):
            write_person(root, f"bounding_box_train/{pid:04d}_c{cam}s{clothes}_000001_00.png", face=cam == 1)
    write_person(root, "bounding_box_train/-1_c1s1_000009_00.png")  # junk: skipped
    for pid in (7, 8):
        write_person(root, f"query/{pid:04d}_c1s1_000001_00.png")
        write_person(root, f"bounding_box_test/{pid:04d}_c2s2_000001_00.png", face=False)
    if with_yaml:
        (root / "dataset.yaml").write_text(yaml.safe_dump({
            "name": "mine", "parsing_classes": CLASSES, "cloth_classes": ["upper_clothes", "lower_clothes"],
            "face_class": "face"}))
    return root


def test_a_market_folder_reads_as_records(tmp_path):
    folder = read_reid_folder(market_folder(tmp_path / "persons"))
    assert folder.name == "mine" and set(folder.protocols) == {"default"}
    assert len(folder.train) == 6 and folder.train_labels == {1: 0, 2: 1, 3: 2}
    record = next(r for r in folder.train if r.camid == 1)
    assert (record.pid, record.clothes) == (1, 1)
    assert record.face_box == (6, 6, 10, 10)  # from the parsing map's face class
    assert next(r for r in folder.train if r.camid == 2).face_box is None
    assert folder.cloth_classes == [3, 4]
    query, gallery = folder.protocols["default"]
    assert [r.pid for r in query] == [7, 8] and all(r.face_box is None for r in gallery)


def test_face_boxes_from_faces_csv_win(tmp_path):
    root = market_folder(tmp_path / "persons")
    (root / "faces.csv").write_text("image,x0,y0,x1,y1\nquery/0007_c1s1_000001_00.png,1,2,5,6\n")
    folder = read_reid_folder(root)
    query, _ = folder.protocols["default"]
    assert query[0].face_box == (1, 2, 5, 6) and query[1].face_box is None


@pytest.mark.parametrize("breakage, message", [
    (lambda r: (r / "dataset.yaml").unlink(), "dataset.yaml: missing"),
    (lambda r: (r / "dataset.yaml").write_text("parsing_classes: [a]\ncloth_classes: [shirt]\n"),
     "'shirt' is not one of parsing_classes"),
    (lambda r: (r / "bounding_box_train" / "person1.png").write_bytes(b"x"), "not a Market-1501 name"),
    (lambda r: write_person(r, "query/0001_c1s1_000002_00.png"), "in both training and test"),
    (lambda r: (r / "faces.csv").write_text("image,x0,y0,x1,y1\nquery/nope.png,0,0,2,2\n"), "nope.png not found"),
])
def test_bad_folders_name_the_fault(tmp_path, breakage, message):
    root = market_folder(tmp_path / "persons")
    breakage(root)
    with pytest.raises(InputDataError, match=message):
        read_reid_folder(root)


def test_a_bad_folder_stops_the_stage_with_one_line_and_exit_2(tmp_path, in_process, capsys):
    workspace = make_workspace(tmp_path / "ws", git=False)
    market_folder(workspace / "mine", with_yaml=False)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["reid"]["dataset_dir"] = "mine"
    (workspace / "mine.yaml").write_text(yaml.safe_dump(params))
    assert stopped(in_process, capsys, "train_reid_teacher", workspace, "--params", "mine.yaml") == (
        f"error: {(workspace / 'mine' / 'dataset.yaml').relative_to(workspace)}: missing; parsing maps need "
        "parsing_classes and cloth_classes")
    assert not (workspace / "data" / "models").exists() and not (workspace / "metrics").exists()
