"""SynthWorld subjects: a procedural Subject-Dataset11.

Four classes (cartoon characters, pets, toys, still objects), subjects dealt round-robin.
Subjects of one class share their geometry exactly: for the same image index they have
the same pose, orientation, scale and therefore the same silhouette. They differ only in
appearance (colors, textures, markings), which is what personalization has to learn.
Each subject gets a rare identifier token and a class noun, as in "sks cartoon".
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lightning_modules.synthworld.painter import Affine, Color, Fill, Painter, checks, dots, stripes

CLASS_NOUNS = ("cartoon", "dog", "robot", "vase")
ORIENTATIONS = ("front", "left", "back", "right")
POSES = ("standing", "walking", "sitting")

# Letter strings that are not words: the tiny tokenizer keeps them rare, and a real
# tokenizer splits them into rarely seen pieces (DreamBooth's recipe).
IDENTIFIER_POOL = (
    "sks", "zwx", "qlv", "bxr", "vnq", "kfz", "pqj", "xjt", "wlr", "ygm", "hrz", "tdq",
    "jvk", "mzq", "fxw", "cqz", "gvj", "nxp", "dwk", "lzb", "rqx", "tvz", "hqm", "bkw",
    "zpf", "xqn", "vbk", "qmx", "kjz", "wfq", "pzv", "yxk", "jqw", "fzm", "cxv", "gzq",
    "nqb", "dzx", "lqk", "rzw", "tqj", "hxz", "bqf", "mxk", "wzj", "pkq", "yqz", "jxf",
)

# Distinct palettes, picked in order, so any two subjects of a class look clearly apart.
PALETTES: tuple[dict[str, Color], ...] = (
    {"main": (200, 40, 40), "second": (250, 210, 60), "accent": (30, 30, 120)},
    {"main": (40, 120, 200), "second": (240, 240, 240), "accent": (220, 90, 20)},
    {"main": (60, 160, 70), "second": (120, 60, 20), "accent": (250, 250, 120)},
    {"main": (150, 60, 170), "second": (250, 170, 200), "accent": (20, 140, 140)},
    {"main": (230, 140, 30), "second": (40, 40, 40), "accent": (90, 200, 250)},
    {"main": (90, 90, 90), "second": (230, 60, 130), "accent": (160, 230, 60)},
    {"main": (20, 170, 170), "second": (250, 120, 90), "accent": (70, 40, 130)},
    {"main": (180, 150, 100), "second": (60, 90, 160), "accent": (200, 30, 60)},
    {"main": (240, 220, 200), "second": (200, 60, 40), "accent": (30, 110, 40)},
    {"main": (30, 60, 110), "second": (230, 200, 40), "accent": (240, 240, 240)},
    {"main": (120, 200, 120), "second": (140, 40, 90), "accent": (250, 160, 40)},
    {"main": (250, 100, 100), "second": (60, 170, 230), "accent": (20, 20, 20)},
)
TEXTURES = ("plain", "stripes", "dots", "checks")
SKIN = (232, 190, 150)


@dataclass(frozen=True)
class SubjectSpec:
    name: str
    identifier: str
    class_noun: str
    class_index: int
    palette_index: int
    texture: str

    @property
    def palette(self) -> dict[str, Color]:
        return PALETTES[self.palette_index % len(PALETTES)]

    def fill(self, base: Color, other: Color) -> Fill:
        kind = self.texture
        if kind == "stripes":
            return stripes(base, other, angle=30.0 * (self.palette_index % 4))
        if kind == "dots":
            return dots(base, other)
        if kind == "checks":
            return checks(base, other)
        return base


@dataclass(frozen=True)
class View:
    """The geometry of one image: shared by every subject of a class at one index."""

    orientation: str
    pose: str
    scale: float
    angle: float

    @property
    def transform(self) -> Affine:
        return Affine(scale=self.scale, angle=self.angle, mirror=self.orientation == "right")


def subject_catalogue(num_subjects: int) -> list[SubjectSpec]:
    """`num_subjects` subjects dealt round-robin over the four classes (11 by default)."""
    if not 1 <= num_subjects <= len(IDENTIFIER_POOL):
        raise ValueError(f"num_subjects must be in 1..{len(IDENTIFIER_POOL)}")
    specs = []
    for index in range(num_subjects):
        k, c = divmod(index, len(CLASS_NOUNS))
        noun = CLASS_NOUNS[c]
        specs.append(
            SubjectSpec(
                name=f"{noun}_{k + 1}",
                identifier=IDENTIFIER_POOL[index],
                class_noun=noun,
                class_index=c,
                palette_index=(k * 5 + c * 3) % len(PALETTES),
                texture=TEXTURES[(k + c) % len(TEXTURES)],
            )
        )
    return specs


def view_for(class_index: int, image_index: int, seed: int) -> View:
    """Pose, orientation and scale of image `image_index`: varied, same for a whole class."""
    rng = random.Random(f"{seed}/{class_index}/{image_index}")
    return View(
        orientation=ORIENTATIONS[image_index % len(ORIENTATIONS)],
        pose=POSES[(image_index // len(ORIENTATIONS)) % len(POSES)],
        scale=rng.uniform(0.72, 1.0),
        angle=rng.uniform(-12.0, 12.0),
    )


# --- class renderers: unit coordinates, subject centered, feet near y = 0.92 ---------------


def _cartoon(p: Painter, s: SubjectSpec, v: View) -> None:
    pal = s.palette
    side = v.orientation in ("left", "right")
    half = 0.07 if side else 0.12
    hip_y = 0.62 if v.pose != "sitting" else 0.66
    legs = {
        "standing": [((0.46, hip_y), (0.45, 0.92)), ((0.54, hip_y), (0.55, 0.92))],
        "walking": [((0.47, hip_y), (0.37, 0.92)), ((0.53, hip_y), (0.63, 0.92))],
        "sitting": [((0.46, hip_y), (0.34, 0.7), (0.34, 0.9)), ((0.54, hip_y), (0.42, 0.7), (0.42, 0.9))],
    }[v.pose]
    for leg in legs:
        p.line(leg, 0.06, pal["accent"])
    p.polygon([(0.5 - half, 0.36), (0.5 + half, 0.36), (0.5 + half * 0.9, hip_y + 0.02), (0.5 - half * 0.9, hip_y + 0.02)],
              s.fill(pal["main"], pal["second"]))
    swing = {"standing": 0.0, "walking": 0.08, "sitting": -0.04}[v.pose]
    arms = [((0.5 - half, 0.39), (0.5 - half - 0.06 - swing, 0.58))]
    if not side:
        arms.append(((0.5 + half, 0.39), (0.5 + half + 0.06 + swing, 0.58)))
    else:
        arms = [((0.5, 0.39), (0.5 + 0.05 + swing, 0.58))]
    for arm in arms:
        p.line(arm, 0.045, pal["second"])
    p.ellipse(0.5, 0.25, 0.11, 0.115, SKIN)
    if v.orientation == "back":
        p.ellipse(0.5, 0.24, 0.112, 0.112, pal["accent"])  # hair seen from behind
    else:
        p.polygon([(0.39, 0.22), (0.42, 0.15), (0.5, 0.13), (0.58, 0.15), (0.61, 0.22)], pal["accent"])
        eyes = [(0.46, 0.25), (0.54, 0.25)] if v.orientation == "front" else [(0.44, 0.25)]
        for x, y in eyes:
            p.ellipse(x, y, 0.015, 0.018, (20, 20, 20))
        if v.orientation == "front":
            p.rect(0.47, 0.31, 0.53, 0.315, (150, 40, 40))  # mouth


def _dog(p: Painter, s: SubjectSpec, v: View) -> None:
    pal = s.palette
    coat = s.fill(pal["main"], pal["second"])
    if v.orientation in ("front", "back"):
        p.ellipse(0.5, 0.6, 0.15, 0.17, coat)
        for x in (0.43, 0.57):
            p.line([(x, 0.66), (x, 0.9 if v.pose != "sitting" else 0.86)], 0.06, pal["main"])
        if v.orientation == "back":
            p.line([(0.5, 0.5), (0.55, 0.38)], 0.035, pal["main"])  # tail
            p.ellipse(0.5, 0.4, 0.1, 0.095, pal["main"])
        else:
            p.ellipse(0.5, 0.4, 0.1, 0.095, pal["main"])
            for x in (0.46, 0.54):
                p.ellipse(x, 0.38, 0.014, 0.016, (20, 20, 20))
            p.ellipse(0.5, 0.45, 0.025, 0.018, (20, 20, 20))
        for x in (0.41, 0.59):
            p.ellipse(x, 0.36, 0.035, 0.06, pal["second"])  # ears
        p.rect(0.43, 0.485, 0.57, 0.505, pal["accent"])  # collar
        return
    lift = {"standing": 0.0, "walking": 0.0, "sitting": 0.08}[v.pose]
    spread = {"standing": 0.0, "walking": 0.06, "sitting": 0.0}[v.pose]
    p.ellipse(0.52, 0.58 + lift / 2, 0.22, 0.1, coat)
    p.line([(0.36, 0.64), (0.36 - spread, 0.9)], 0.05, pal["main"])
    p.line([(0.44, 0.64), (0.44 + spread, 0.9)], 0.05, pal["main"])
    if v.pose == "sitting":
        p.line([(0.66, 0.66), (0.6, 0.78), (0.7, 0.9)], 0.06, pal["main"])
    else:
        p.line([(0.62, 0.64), (0.62 - spread, 0.9)], 0.05, pal["main"])
        p.line([(0.7, 0.64), (0.7 + spread, 0.9)], 0.05, pal["main"])
    p.line([(0.73, 0.56 + lift / 2), (0.82, 0.44)], 0.03, pal["main"])  # tail
    p.ellipse(0.27, 0.45, 0.09, 0.085, pal["main"])
    p.polygon([(0.2, 0.44), (0.12, 0.47), (0.13, 0.52), (0.22, 0.52)], pal["main"])  # snout
    p.ellipse(0.3, 0.42, 0.035, 0.07, pal["second"])  # ear
    p.ellipse(0.24, 0.43, 0.013, 0.015, (20, 20, 20))
    p.line([(0.33, 0.5), (0.35, 0.56)], 0.025, pal["accent"])  # collar


def _robot(p: Painter, s: SubjectSpec, v: View) -> None:
    pal = s.palette
    side = v.orientation in ("left", "right")
    half = 0.09 if side else 0.14
    legs = {"standing": (0.0, 0.0), "walking": (-0.05, 0.05), "sitting": (0.0, -0.1)}[v.pose]
    for x, dx in ((0.44, legs[0]), (0.56, legs[1])):
        p.polygon([(x - 0.035, 0.66), (x + 0.035, 0.66), (x + 0.035 + dx, 0.92 + min(legs[1], 0) * 0.5),
                   (x - 0.035 + dx, 0.92 + min(legs[1], 0) * 0.5)], pal["second"])
    p.rect(0.5 - half, 0.38, 0.5 + half, 0.68, s.fill(pal["main"], pal["second"]))
    raise_arm = {"standing": 0.0, "walking": 0.06, "sitting": 0.12}[v.pose]
    arm_sides = (1,) if side else (-1, 1)
    for sign in arm_sides:
        x = 0.5 + sign * half
        p.line([(x, 0.42), (x + sign * 0.07, 0.55 - raise_arm)], 0.04, pal["second"])
    p.rect(0.5 - 0.09, 0.18, 0.5 + 0.09, 0.35, pal["main"])
    p.line([(0.5, 0.18), (0.5, 0.1)], 0.015, pal["second"])
    p.ellipse(0.5, 0.095, 0.02, 0.02, pal["accent"])
    if v.orientation != "back":
        eyes = [(0.46, 0.25), (0.54, 0.25)] if not side else [(0.45, 0.25)]
        for x, y in eyes:
            p.rect(x - 0.02, y - 0.015, x + 0.02, y + 0.015, pal["accent"])
        p.rect(0.45, 0.45, 0.55, 0.5, pal["accent"])  # chest panel
    else:
        p.rect(0.46, 0.42, 0.54, 0.6, pal["accent"])  # battery hatch


def _vase(p: Painter, s: SubjectSpec, v: View) -> None:
    pal = s.palette
    # Pose tilts the vase; orientation turns it, which moves the painted band around.
    profile = [(0.0, 0.14), (0.055, 0.2), (0.055, 0.3), (0.16, 0.45), (0.17, 0.62), (0.12, 0.8), (0.09, 0.9)]
    lean = {"standing": 0.0, "walking": 0.03, "sitting": -0.03}[v.pose]
    left = [(0.5 - dx + lean * (0.9 - y), y) for dx, y in profile]
    right = [(0.5 + dx + lean * (0.9 - y), y) for dx, y in reversed(profile)]
    p.polygon(left + right, s.fill(pal["main"], pal["second"]))
    band = ORIENTATIONS.index(v.orientation) * 0.03
    p.polygon([(0.36 + band, 0.5), (0.64 - band, 0.5), (0.64 - band, 0.56), (0.36 + band, 0.56)], pal["accent"])
    p.ellipse(0.5 + lean * 0.76, 0.14, 0.055, 0.015, pal["second"])  # rim


RENDERERS: dict[str, Callable[[Painter, SubjectSpec, View], None]] = {
    "cartoon": _cartoon,
    "dog": _dog,
    "robot": _robot,
    "vase": _vase,
}


def render_subject(spec: SubjectSpec, view: View, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 HxWx3 on white, bool HxW mask) of one subject in one view."""
    painter = Painter(size, view.transform)
    RENDERERS[spec.class_noun](painter, spec, view)
    return painter.image(), painter.mask
