"""Every image a stage reads from a user's folder is checked before work starts: unreadable,
empty, truncated, decompression-bomb sized, or of a mode its reader would silently change, it
is refused with the file named (subjects, masks, scenes, re-ID images, parsing maps, faces)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from lightning_modules.core.errors import InputDataError
from lightning_modules.data.images import LABELS, MASK, PHOTO, SUBJECT, check_image
from lightning_modules.data.market1501 import read_reid_folder
from lightning_modules.data.subjects import read_subjects_folder
from tests.conftest import make_workspace, run, stage_command
from tests.test_reid_folder import market_folder
from tests.test_subjects_folder import make_folder

PIXELS = (np.random.default_rng(0).random((40, 20, 3)) * 255).astype(np.uint8)


def rgba(alpha: int) -> Image.Image:
    return Image.fromarray(np.dstack([PIXELS, np.full(PIXELS.shape[:2], alpha, np.uint8)]))


def palette_with_transparency(path: Path) -> None:
    image = Image.fromarray(PIXELS).convert("P")
    image.save(path, transparency=image.getpixel((0, 0)))   # an index the image uses


def truncated(source: Image.Image, path: Path, keep: float = 0.5) -> None:
    source.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


WRITERS = {
    "rgb.png": lambda p: Image.fromarray(PIXELS).save(p),
    "rgb.jpg": lambda p: Image.fromarray(PIXELS).save(p, quality=90),
    "gray.png": lambda p: Image.fromarray(PIXELS[..., 0]).save(p),
    "palette.png": lambda p: Image.fromarray(PIXELS).convert("P").save(p),
    "opaque_rgba.png": lambda p: rgba(255).save(p),
    "transparent_rgba.png": lambda p: rgba(128).save(p),
    "transparent_la.png": lambda p: Image.fromarray(np.dstack([PIXELS[..., 0], PIXELS[..., 1]])).convert("LA").save(p),
    "transparent_palette.png": palette_with_transparency,
    "16bit.png": lambda p: Image.fromarray(PIXELS[..., 0].astype(np.uint16) * 257).save(p),
    "32bit.tif": lambda p: Image.fromarray(PIXELS[..., 0].astype(np.int32)).save(p),
    "float.tif": lambda p: Image.fromarray(PIXELS[..., 0].astype(np.float32)).save(p),
    "cmyk.jpg": lambda p: Image.fromarray(PIXELS).convert("CMYK").save(p),
    "empty.png": lambda p: p.write_bytes(b""),
    "garbage.png": lambda p: p.write_bytes(b"not an image at all"),
    "truncated.png": lambda p: truncated(Image.fromarray(PIXELS), p),
    "truncated.jpg": lambda p: truncated(Image.fromarray(PIXELS), p, keep=0.9),
    "bomb.png": lambda p: Image.new("1", (9000, 9000)).save(p),
}
ACCEPTED = {
    # the reader's conversion keeps these as they are
    "image": {"rgb.png", "rgb.jpg", "gray.png", "palette.png", "opaque_rgba.png"},
    "subject image": {"rgb.png", "rgb.jpg", "gray.png", "palette.png", "opaque_rgba.png", "transparent_rgba.png",
                      "transparent_la.png", "transparent_palette.png"},
    "mask": {"rgb.png", "rgb.jpg", "gray.png", "palette.png", "opaque_rgba.png"},
    "parsing map": {"gray.png", "palette.png", "transparent_palette.png"},
}
REASONS = {
    "transparent_rgba.png": "with transparent pixels", "transparent_la.png": "with transparent pixels",
    "transparent_palette.png": "with transparent pixels", "16bit.png": "16-bit image (I;16)",
    "32bit.tif": "32-bit integer image (I)", "float.tif": "32-bit float image (F)", "cmyk.jpg": "CMYK image",
    "empty.png": "not a readable image (empty file)", "garbage.png": "not a readable image (UnidentifiedImageError)",
    "truncated.png": "not a readable image (truncated or corrupt", "truncated.jpg": "truncated or corrupt",
    "bomb.png": "9000x9000 pixels, more than the 67,108,864",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    for name, write in WRITERS.items():
        write(folder / name)
    return {name: folder / name for name in WRITERS}


@pytest.mark.parametrize("kind", [PHOTO, SUBJECT, MASK, LABELS], ids=lambda kind: kind.name)
@pytest.mark.parametrize("name", sorted(WRITERS))
def test_each_reader_accepts_what_it_keeps_and_names_the_rest(files, kind, name):
    if name in ACCEPTED[kind.name]:
        assert check_image(files[name], kind) == Image.open(files[name]).size
        return
    with pytest.raises(InputDataError) as err:
        check_image(files[name], kind)
    message = str(err.value)
    assert message.startswith(f"{files[name]}: ") and "\n" not in message
    if name in REASONS and not (kind is LABELS and "image (" in message):
        assert REASONS[name] in message


def test_a_bomb_is_refused_from_its_header_alone(files, monkeypatch):
    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    with pytest.raises(InputDataError, match="9000x9000 pixels"):
        check_image(files["bomb.png"])


# --- subjects folders -----------------------------------------------------------------------

@pytest.mark.parametrize("breakage, message", [
    (lambda f: Image.fromarray(PIXELS[..., 0].astype(np.uint16) * 257).save(f / "my_dog" / "images" / "1.png"),
     r"my_dog/images/1\.png: 16-bit image \(I;16\), which reading it as a subject image would change"),
    (lambda f: Image.fromarray(PIXELS).convert("CMYK").save(f / "my_cartoon" / "images" / "1.jpg"),
     r"my_cartoon/images/1\.jpg: CMYK image"),
    (lambda f: rgba(0).resize((96, 96)).save(f / "my_cartoon" / "masks" / "2.png"),
     r"my_cartoon/masks/2\.png: RGBA image with transparent pixels, but reading it as a mask drops its alpha"),
    (lambda f: (f / "my_dog" / "images" / "0.png").write_bytes(b""), r"my_dog/images/0\.png: not a readable image \(empty"),
    (lambda f: truncated(Image.open(f / "my_dog" / "images" / "2.png").copy(), f / "my_dog" / "images" / "2.png"),
     r"my_dog/images/2\.png: not a readable image \(truncated or corrupt"),
])
def test_a_subjects_folder_names_the_bad_image(tmp_path, breakage, message):
    folder = make_folder(tmp_path / "mine")
    breakage(folder)
    with pytest.raises(InputDataError, match=message):
        read_subjects_folder(folder)


def test_scenes_are_checked_when_listed(tmp_path):
    from tasks.msp.augment import read_scenes

    scenes = tmp_path / "scenes"
    scenes.mkdir()
    Image.fromarray(PIXELS).save(scenes / "000.png")
    assert read_scenes(scenes)[0] == [scenes / "000.png"]
    rgba(10).save(scenes / "001.png")
    with pytest.raises(InputDataError, match=r"scenes/001\.png: RGBA image with transparent pixels"):
        read_scenes(scenes)


# --- re-ID folders --------------------------------------------------------------------------

def test_hundreds_of_empty_reid_images_stop_at_the_first(tmp_path):
    root = market_folder(tmp_path / "persons")
    for i in range(300):
        (root / "bounding_box_train" / f"{9000 + i:04d}_c1s1_000001_00.png").write_bytes(b"")
    with pytest.raises(InputDataError, match=r"bounding_box_train/9000_c1s1_000001_00\.png: not a readable image "
                                             r"\(empty file\)"):
        read_reid_folder(root)


@pytest.mark.parametrize("breakage, message", [
    (lambda r: Image.fromarray(PIXELS).convert("CMYK").save(r / "query" / "0007_c1s1_000001_00.jpg"),
     r"query/0007_c1s1_000001_00\.jpg: CMYK image"),
    (lambda r: Image.fromarray(np.zeros((32, 16), np.uint16)).save(r / "bounding_box_test" / "0008_c2s2_000001_00.png"),
     r"bounding_box_test/0008_c2s2_000001_00\.png: 16-bit image"),
    (lambda r: truncated(Image.fromarray(PIXELS), r / "bounding_box_train" / "0001_c1s1_000001_00.png"),
     r"bounding_box_train/0001_c1s1_000001_00\.png: not a readable image \(truncated"),
    (lambda r: Image.fromarray(np.zeros((32, 16, 3), np.uint8)).save(r / "parsing" / "query" / "0007_c1s1_000001_00.png"),
     r"parsing/query/0007_c1s1_000001_00\.png: RGB image \(RGB\), which reading it as a parsing map would change"),
    (lambda r: Image.fromarray(np.zeros((30, 16), np.uint8)).save(r / "parsing" / "query" / "0008_c1s1_000001_00.png"),
     r"parsing/query/0008_c1s1_000001_00\.png: parsing map is 16x30 but its image 0008_c1s1_000001_00\.png is 16x32"),
    (lambda r: (r / "faces.csv").write_text("image,x0,y0,x1,y1\nquery/0007_c1s1_000001_00.png,2,2,40,8\n"),
     r"faces\.csv: the face box \(2, 2, 40, 8\) of query/0007_c1s1_000001_00\.png is outside its 16x32 image"),
    (lambda r: (r / "faces" / "query").mkdir(parents=True) or rgba(0).save(r / "faces" / "query" / "0007_c1s1_000001_00.png"),
     r"faces/query/0007_c1s1_000001_00\.png: RGBA image with transparent pixels"),
])
def test_a_reid_folder_names_the_bad_file(tmp_path, breakage, message):
    root = market_folder(tmp_path / "persons")
    breakage(root)
    with pytest.raises(InputDataError, match=message):
        read_reid_folder(root)


def test_a_palette_parsing_map_is_read_by_index(tmp_path):
    """A palette PNG's values are its indices (LIP-style label maps), not its colors' brightness."""
    from lightning_modules.deskpro.data import PersonDataset

    root = market_folder(tmp_path / "persons")
    rel = "query/0007_c1s1_000001_00.png"
    labels = np.asarray(Image.open(root / "parsing" / rel))
    colored = Image.frombytes("P", (labels.shape[1], labels.shape[0]), labels.tobytes())
    colored.putpalette([0, 0, 0, 0, 0, 255, 1, 1, 1] + [200, 30, 30] * 253)   # face (2) drawn almost black
    colored.save(root / "parsing" / rel)
    folder = read_reid_folder(root)
    record = folder.protocols["default"][0][0]
    assert record.face_box == (6, 6, 10, 10)
    item = PersonDataset([record], (32, 16), 16, folder.cloth_classes)[0]
    assert item["cloth_mask"].sum() == ((labels == 3) | (labels == 4)).sum()


def test_thousands_of_reid_images_check_in_seconds(tmp_path):
    root = market_folder(tmp_path / "persons")
    image = Image.fromarray((np.random.default_rng(1).random((64, 32, 3)) * 255).astype(np.uint8))
    labels = Image.fromarray(np.zeros((64, 32), np.uint8))
    (root / "parsing" / "bounding_box_train").mkdir(parents=True, exist_ok=True)
    for i in range(3000):
        name = f"bounding_box_train/{100 + i // 10:04d}_c{1 + i % 3}s1_{i:06d}_00.png"
        image.save(root / name, compress_level=1)
        labels.save(root / "parsing" / name)
    start = time.perf_counter()
    folder = read_reid_folder(root)
    assert len(folder.train) > 3000
    assert time.perf_counter() - start < 15   # ~6000 files; a fraction of that on an idle machine


# --- through a stage ------------------------------------------------------------------------

def test_a_stage_refuses_empty_reid_images_before_training(tmp_path):
    workspace = make_workspace(tmp_path / "ws", git=False)
    root = market_folder(workspace / "mine")
    for i in range(300):
        (root / "bounding_box_train" / f"{9000 + i:04d}_c1s1_000001_00.png").write_bytes(b"")
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["reid"]["dataset_dir"] = "mine"
    (workspace / "mine.yaml").write_text(yaml.safe_dump(params))
    result = run([*stage_command("train_reid_teacher"), "--params", "mine.yaml"], workspace, check=False, timeout=600)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: mine/bounding_box_train/9000_c1s1_000001_00.png: not a readable image (empty file)"]
    assert not (workspace / "data").exists() and not (workspace / "metrics").exists()
    assert not (workspace / "checkpoints").exists()
