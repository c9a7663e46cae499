"""SynthWorld's MSP compositions: layouts drawn from the subjects' own masks, so the truth of
every segment is known.

A composition of n subjects places n distinct subjects side by side (n <= 3: columns; n >= 4: a
grid), each segment the silhouette of one real render of that subject, the rest of the canvas the
background segment. It comes with one local prompt per segment ("a <id> <class>", the scene's
caption for the background), a global prompt naming the classes and the scene, the scene render
as the scaffolding image, and the truth (colour -> subject). The format is lightning_modules/msp/
layout.py's; a user's own compositions follow it too.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml
from PIL import Image

from lightning_modules.synthworld.scenes import Scene, render_scene
from lightning_modules.synthworld.subjects import SubjectSpec, render_subject, view_for

# Segment colours: clearly apart, none white (the background).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45")
BACKGROUND = "#ffffff"
MAX_SUBJECTS = len(PALETTE)


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


def cells(n: int, size: int) -> list[tuple[int, int, int, int]]:
    """(left, top, width, height) of n subject cells on a size x size canvas."""
    columns = n if n <= 3 else math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    width, height = size // columns, size // rows
    return [((k % columns) * width, (k // columns) * height, width, height) for k in range(n)]


def silhouette(spec: SubjectSpec, view_index: int, width: int, height: int, seed: int) -> np.ndarray:
    """The subject's mask fitted to a cell: rendered at the cell's height (at most twice its width),
    its central columns kept (a subject is narrower than tall)."""
    side = min(height, 2 * width)
    _, mask = render_subject(spec, view_for(spec.class_index, view_index, seed), side)
    fitted = np.zeros((height, width), bool)
    if side <= width:
        left = (width - side) // 2
        fitted[height - side:, left:left + side] = mask
    else:
        left = (side - width) // 2
        fitted[height - side:, :] = mask[:, left:left + width]
    return fitted


def global_prompt(subjects: Sequence[SubjectSpec], scene: Scene) -> str:
    return f"{' and '.join(f'a {s.class_noun}' for s in subjects)} {scene.caption}"


def write_composition(folder: Path, name: str, subjects: Sequence[SubjectSpec], scene: Scene, size: int,
                      seed: int, rng: random.Random) -> dict:
    layout = np.full((size, size, 3), 255, np.uint8)
    segments, truth = {}, {}
    for spec, colour, (left, top, width, height) in zip(subjects, PALETTE, cells(len(subjects), size)):
        mask = silhouette(spec, rng.randrange(11), width, height, seed)
        layout[top:top + height, left:left + width][mask] = _rgb(colour)
        segments[colour] = f"a {spec.identifier} {spec.class_noun}"
        truth[colour] = spec.name
    segments = {c: p for c, p in segments.items() if (layout == _rgb(c)).all(-1).any()}
    segments[BACKGROUND] = scene.caption
    Image.fromarray(layout).save(folder / f"{name}_layout.png")
    Image.fromarray(render_scene(scene, size, seed)).save(folder / f"{name}_scaffolding.png")
    spec = {"layout": f"{name}_layout.png", "global_prompt": global_prompt(subjects, scene), "segments": segments,
            "scaffolding": f"{name}_scaffolding.png", "subjects": {c: truth[c] for c in segments if c in truth}}
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec


def write_compositions(folder: Path, subjects: Sequence[SubjectSpec], scenes: Sequence[Scene], counts: Sequence[int],
                       per_count: int, size: int, seed: int) -> list[str]:
    """`per_count` compositions of each subject count, named n<count>_<k>; returns the names.
    A count above the number of subjects (or of segment colours) is skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for n in counts:
        if n > min(len(subjects), MAX_SUBJECTS):
            continue
        for k in range(per_count):
            rng = random.Random(f"{seed}/composition/{n}/{k}")
            chosen = rng.sample(list(subjects), n)
            name = f"n{n}_{k}"
            write_composition(folder, name, chosen, rng.choice(list(scenes)), size, seed, rng)
            names.append(name)
    return names
