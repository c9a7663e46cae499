"""SynthWorld's MSP compositions: layouts drawn from the subjects' own masks, so the truth of
every segment is known.

A composition of n subjects places n distinct subjects side by side (n <= 3: columns; n >= 4: a
grid), each segment the silhouette of one real render of that subject, the rest of the canvas the
background segment. It comes with one local prompt per segment ("a <id> <class>", the scene's
caption for the background), a global prompt naming the classes and the scene, the scene render
as the scaffolding image, and the truth (colour -> subject). The format is lightning_modules/msp/
layout.py's; a user's own compositions follow it too.

ControlNet's rows read a twin of every composition (the same layout, prompts and scaffolding)
that adds the pose image: the skeletons of its figures exactly on their silhouettes (poses.py).
A layout file refuses a pose image when ControlNet is off, so the twins live in their own folder.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml
from PIL import Image

from lightning_modules.synthworld.poses import render_pose
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


def fit_to_cell(render: np.ndarray, width: int, height: int) -> np.ndarray:
    """A square render of side min(height, 2 x width) fitted to a cell: standing on the cell's floor,
    its central columns kept (a subject is narrower than tall)."""
    side = render.shape[0]
    fitted = np.zeros((height, width, *render.shape[2:]), render.dtype)
    if side <= width:
        left = (width - side) // 2
        fitted[height - side:, left:left + side] = render
    else:
        left = (side - width) // 2
        fitted[height - side:, :] = render[:, left:left + width]
    return fitted


def silhouette(spec: SubjectSpec, view_index: int, width: int, height: int, seed: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """The subject's mask and pose image (black for a subject that is not a figure), fitted to a cell."""
    side = min(height, 2 * width)
    view = view_for(spec.class_index, view_index, seed)
    _, mask = render_subject(spec, view, side)
    return fit_to_cell(mask, width, height), fit_to_cell(render_pose(spec, view, side), width, height)


def global_prompt(subjects: Sequence[SubjectSpec], scene: Scene) -> str:
    return f"{' and '.join(f'a {s.class_noun}' for s in subjects)} {scene.caption}"


def write_composition(folder: Path, name: str, subjects: Sequence[SubjectSpec], scene: Scene, size: int,
                      seed: int, rng: random.Random, pose_folder: Optional[Path] = None) -> dict:
    layout = np.full((size, size, 3), 255, np.uint8)
    pose = np.zeros((size, size, 3), np.uint8)
    segments, truth = {}, {}
    for spec, colour, (left, top, width, height) in zip(subjects, PALETTE, cells(len(subjects), size)):
        mask, skeleton = silhouette(spec, rng.randrange(11), width, height, seed)
        layout[top:top + height, left:left + width][mask] = _rgb(colour)
        drawn = skeleton.any(-1)
        pose[top:top + height, left:left + width][drawn] = skeleton[drawn]
        segments[colour] = f"a {spec.identifier} {spec.class_noun}"
        truth[colour] = spec.name
    segments = {c: p for c, p in segments.items() if (layout == _rgb(c)).all(-1).any()}
    segments[BACKGROUND] = scene.caption
    pictures = {"layout": layout, "scaffolding": render_scene(scene, size, seed)}
    spec = {"layout": f"{name}_layout.png", "global_prompt": global_prompt(subjects, scene), "segments": segments,
            "scaffolding": f"{name}_scaffolding.png", "subjects": {c: truth[c] for c in segments if c in truth}}
    for kind, picture in pictures.items():
        Image.fromarray(picture).save(folder / f"{name}_{kind}.png")
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    if pose_folder is not None:
        for kind, picture in {**pictures, "pose": pose}.items():
            Image.fromarray(picture).save(pose_folder / f"{name}_{kind}.png")
        (pose_folder / f"{name}.yaml").write_text(yaml.safe_dump({**spec, "pose": f"{name}_pose.png"}, sort_keys=False))
    return spec


def write_compositions(folder: Path, subjects: Sequence[SubjectSpec], scenes: Sequence[Scene], counts: Sequence[int],
                       per_count: int, size: int, seed: int, pose_folder: Optional[Path] = None) -> list[str]:
    """`per_count` compositions of each subject count, named n<count>_<k>, and their twins with a
    pose image in `pose_folder`; returns the names. A count above the number of subjects (or of
    segment colours) is skipped."""
    folder.mkdir(parents=True, exist_ok=True)
    if pose_folder is not None:
        pose_folder.mkdir(parents=True, exist_ok=True)
    names = []
    for n in counts:
        if n > min(len(subjects), MAX_SUBJECTS):
            continue
        for k in range(per_count):
            rng = random.Random(f"{seed}/composition/{n}/{k}")
            chosen = rng.sample(list(subjects), n)
            name = f"n{n}_{k}"
            write_composition(folder, name, chosen, rng.choice(list(scenes)), size, seed, rng, pose_folder)
            names.append(name)
    return names
