"""The subjects a fine-tuning learns, read from the augment stage's manifest: shared by the
fine-tuning stages and by every method that compares generations against the real images."""

from __future__ import annotations

import json

from lightning_modules.data.subjects import SubjectImage, SubjectRecord
from tasks.core.errors import InputDataError
from tasks.core.manifest import manifest_rows
from tasks.core.params import Params


def read_subjects(params: Params) -> list[SubjectRecord]:
    """The augment stage's subjects with their training images; one without any is an error."""
    root = params.paths.data / "augmented"
    names = [n for n in json.loads((root / "classes.json").read_text()) if n != "background"]
    found: dict[str, dict] = {}
    for row in manifest_rows(params):
        entry = found.setdefault(row["subject"], {"identifier": row["identifier"], "class_noun": row["class_noun"],
                                                  "images": []})
        if row["split"] == "train":
            entry["images"].append(SubjectImage(root / row["image"], root / row["mask"]))
    subjects = []
    for name in names:
        entry = found.get(name)
        if entry is None or not entry["images"]:
            raise InputDataError(f"{root / 'manifest.csv'}: subject {name!r} has no training images")
        subjects.append(SubjectRecord(name, entry["identifier"], entry["class_noun"], tuple(entry["images"])))
    return subjects
