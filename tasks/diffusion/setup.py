"""What the diffusion stages share: SynthWorld captions, seeded loaders, checkpoint keys,
settings for the science side, and the pictures they log."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any, Iterable, Sequence, TypeVar

from torch.utils.data import DataLoader, Dataset

from lightning_modules.core.resumable import shuffled_loader
from lightning_modules.diffusion.data import CaptionedImage
from tasks.core.params import Params
from tasks.core.section import Section
from tasks.core.manifest import manifest_path, manifest_rows

Settings = TypeVar("Settings")



def class_captions(params: Params, split: str = "train") -> list[CaptionedImage]:
    """Images of one split of the augment stage captioned by class and scene only
    ("a cartoon on a beach"): what a base model knows before it meets the subjects. Models
    train on "train"; "val" is what they are measured on."""
    root = params.paths.data / "augmented"
    return [CaptionedImage(root / row["image"], f"a {row['class_noun']} {row['scene_caption']}".strip(),
                           root / row["mask"] if row.get("mask") else None)
            for row in manifest_rows(params) if row["split"] == split]


def mix_in(items: Sequence[CaptionedImage], extra: Sequence[CaptionedImage], share: float) -> list[CaptionedImage]:
    """`items` and `extra` in one list where `extra` makes up `share` of it. The smaller side
    is cycled (never cut), so every picture of both serves in every epoch."""
    if not extra or share == 0:
        return list(items)
    if share == 1 or not items:
        return list(extra)
    wanted = round(share / (1 - share) * len(items))   # extra pictures beside all of items
    if wanted >= len(extra):
        return list(items) + [extra[i % len(extra)] for i in range(wanted)]
    enough = round((1 - share) / share * len(extra))
    return [items[i % len(items)] for i in range(max(enough, len(items)))] + list(extra)


def content_digest(files: Iterable[Path], root: Path) -> str:
    """sha256 over the files' names (relative to `root`), sizes and bytes, in the given order."""
    digest = hashlib.sha256()
    for path in files:
        name = Path(os.path.relpath(path, root)).as_posix()
        digest.update(f"{name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def pretraining_key(params: Params, items: Sequence[CaptionedImage], model: Path,
                    listings: Sequence[Path] = ()) -> dict[str, Any]:
    """What a pretraining stage's checkpoints are keyed by (tasks.core.trainer.checkpoint_dir):
    the data it trains on (the manifest and every training image's bytes: an augment rerun
    can change the pictures under the same manifest) and the model it starts from (a tiny zoo
    model, a few MB). A killed run then resumes only on the very same data and model."""
    root = params.paths.data / "augmented"
    weights = sorted(p for p in model.rglob("*") if p.is_file())
    # `listings`: other files the items' captions come from (a faces folder's faces.csv).
    return {"data": content_digest([manifest_path(params), *listings, *(item.path for item in items)], root),
            "model": content_digest(weights, model)}


def settings_from(settings: type[Settings], section: Section) -> Settings:
    """A science-side settings dataclass (lightning_modules) filled from the params section's
    fields of the same names: one place where a params key reaches the module."""
    return settings(**{field.name: getattr(section, field.name) for field in dataclasses.fields(settings)})


def seeded_loader(dataset: Dataset, batch_size: int, params: Params, shuffle: bool = True) -> DataLoader:
    """Shuffled by (seed, epoch) and resumable mid-epoch; a dataset with per-epoch draws (caption
    dropout) gets each epoch's number, also when a run resumes mid-epoch."""
    listeners = [dataset.set_epoch] if hasattr(dataset, "set_epoch") else []
    return shuffled_loader(dataset, min(batch_size, len(dataset)), seed=params.seed, shuffle=shuffle, drop_last=True,
                           num_workers=params.trainer.num_workers, epoch_listeners=listeners)
