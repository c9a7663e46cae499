"""SynthWorld persons: a procedural cloth-changing person re-ID world (DeSKPro's data).

Identity lives where DeSKPro looks for it: the face (eye color and spacing, brows, nose,
mouth, facial hair, glasses, freckles), which only a high-resolution view shows, plus
hair, skin tone and body shape, which survive a surveillance camera. Clothes are the
distractor: every identity draws its outfits from one shared palette of garment types,
colors and patterns, and its own outfits differ clearly from each other.

A `Shot` is one photograph: a camera (backdrop and lighting), a view (front, left, back,
right) and small pose, scale and position jitter, all drawn from a key string, so that
an image depends on (seed, pid, outfit, camera, index) and never on rendering order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Sequence

import numpy as np

from lightning_modules.synthworld.painter import Color
from lightning_modules.synthworld.person_painter import PATTERNS

# Index = pixel value in the parsing maps (LIP-style parts, as a human parser predicts).
PARSING_CLASSES = ("background", "hair", "face", "neck", "upper_clothes", "coat", "dress", "pants",
                   "skirt", "arms", "legs", "shoes")
# DeSKPro's set C: the cloth-related categories that the attention should ignore.
CLOTH_CLASSES = ("upper_clothes", "coat", "dress", "pants", "skirt", "shoes")
FACE_CLASS = "face"
LABEL = {name: index for index, name in enumerate(PARSING_CLASSES)}

VIEWS = ("front", "left", "back", "right")

SKIN_TONES: tuple[Color, ...] = ((250, 220, 195), (238, 193, 160), (222, 170, 128), (194, 132, 90),
                                 (156, 98, 62), (105, 66, 44))
HAIR_COLORS: tuple[Color, ...] = ((24, 20, 20), (66, 42, 28), (118, 74, 40), (150, 62, 30),
                                  (222, 188, 104), (168, 166, 160), (236, 232, 222))
HAIR_STYLES = ("buzz", "short", "side_part", "long", "ponytail", "bun", "curly")
EYE_COLORS: tuple[Color, ...] = ((88, 54, 30), (36, 28, 24), (128, 108, 48), (58, 128, 70),
                                 (60, 108, 190), (118, 128, 140))
BROWS = ("straight", "arched", "thick", "angled")
NOSES = ("small", "long", "wide")
FACE_EXTRAS = ("none", "beard", "mustache", "glasses", "freckles")

# One palette for everybody's clothes: a color says nothing about who wears it.
GARMENT_COLORS: tuple[Color, ...] = (
    (200, 40, 40), (30, 45, 100), (100, 160, 220), (40, 130, 60), (110, 120, 50), (235, 200, 50),
    (230, 120, 30), (120, 60, 150), (235, 140, 170), (236, 236, 236), (35, 35, 38), (128, 128, 128),
    (200, 180, 140), (20, 140, 140), (110, 70, 40),
)
TOPS = ("tshirt", "shirt", "jacket", "dress")
BOTTOMS = ("pants", "shorts", "skirt")


@dataclass(frozen=True)
class Identity:
    pid: int
    skin: Color
    hair_style: str
    hair_color: Color
    eye_color: Color
    eye_spacing: float   # half distance between the eyes, in head heights
    eye_size: float
    brow: str
    nose: str
    mouth_width: float   # in head heights
    extra: str
    height: float        # fraction of the tallest person
    shoulder: float      # shoulder half-width, body units
    hip: float           # hip half-width, body units
    head: float          # head height, body units

    def cues(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "pid")


@dataclass(frozen=True)
class Outfit:
    top: str
    bottom: str          # "none" under a dress
    top_color: Color
    pattern: str
    pattern_color: Color
    inner_color: Color   # the shirt seen under an open jacket
    bottom_color: Color
    shoe_color: Color


@dataclass(frozen=True)
class CameraStyle:
    """What one camera adds: its backdrop and its light."""

    wall: Color
    floor: Color
    horizon: float       # floor line, fraction of image height
    panels: tuple[tuple[float, float, Color], ...]  # (x0, x1, color) doors, windows, pillars
    gain: float
    tint: tuple[float, float, float]
    falloff: float       # light change from top to bottom of the image


@dataclass(frozen=True)
class Shot:
    camera: int
    style: CameraStyle
    view: str
    scale: float
    shift: tuple[float, float]   # fraction of image width, height
    arm_angle: float             # degrees: outward (front/back) or forward swing (side)
    leg_angle: float             # degrees: stance (front/back) or stride (side)
    key: str                     # seeds the per-image degradation


def _pick(rng: random.Random, options: Sequence):
    return options[rng.randrange(len(options))]


def _draw_identity(rng: random.Random, pid: int) -> Identity:
    return Identity(
        pid=pid,
        skin=_pick(rng, SKIN_TONES),
        hair_style=_pick(rng, HAIR_STYLES),
        hair_color=_pick(rng, HAIR_COLORS),
        eye_color=_pick(rng, EYE_COLORS),
        eye_spacing=_pick(rng, (0.17, 0.2, 0.23)),
        eye_size=_pick(rng, (0.07, 0.09)),
        brow=_pick(rng, BROWS),
        nose=_pick(rng, NOSES),
        mouth_width=_pick(rng, (0.12, 0.17, 0.22)),
        extra=_pick(rng, FACE_EXTRAS),
        height=_pick(rng, (0.84, 0.88, 0.92, 0.96, 1.0)),
        shoulder=_pick(rng, (0.1, 0.115, 0.13, 0.145)),
        hip=_pick(rng, (0.085, 0.095, 0.105, 0.115)),
        head=_pick(rng, (0.145, 0.155, 0.165)),
    )


MIN_CUE_DIFFERENCES = 4


def identity_catalogue(num_ids: int, seed: int) -> list[Identity]:
    """Identities with pids 1..num_ids; any two differ in at least MIN_CUE_DIFFERENCES cues.

    Single cues repeat (there are only so many hair colors), combinations never do. Pid k
    does not depend on how many identities come after it.
    """
    chosen: list[Identity] = []
    for pid in range(1, num_ids + 1):
        rng = random.Random(f"{seed}/identity/{pid}")
        best, best_gap = None, -1
        for _ in range(64):
            candidate = _draw_identity(rng, pid)
            gap = min((sum(a != b for a, b in zip(candidate.cues(), other.cues())) for other in chosen),
                      default=len(candidate.cues()))
            if gap > best_gap:
                best, best_gap = candidate, gap
            if gap >= MIN_CUE_DIFFERENCES:
                break
        if best_gap == 0:
            raise RuntimeError(f"could not draw a new identity for pid {pid}")
        chosen.append(best)
    return chosen


def _draw_outfit(rng: random.Random) -> Outfit:
    top = _pick(rng, TOPS)
    colors = rng.sample(range(len(GARMENT_COLORS)), 5)
    top_color, second, inner, bottom_color, shoes = (GARMENT_COLORS[i] for i in colors)
    return Outfit(
        top=top,
        bottom="none" if top == "dress" else _pick(rng, BOTTOMS),
        top_color=top_color,
        pattern=_pick(rng, PATTERNS),
        pattern_color=second,
        inner_color=inner,
        bottom_color=top_color if top == "dress" else bottom_color,
        shoe_color=_pick(rng, (shoes, (35, 35, 38), (236, 236, 236), (110, 70, 40))),
    )


def _clearly_different(a: Outfit, b: Outfit) -> bool:
    return a.top_color != b.top_color and (a.bottom != b.bottom or a.bottom_color != b.bottom_color)


def outfits_of(identity: Identity, count: int, seed: int) -> list[Outfit]:
    """The identity's first `count` outfits (outfit k is the same for any count >= k)."""
    rng = random.Random(f"{seed}/outfits/{identity.pid}")
    outfits: list[Outfit] = []
    while len(outfits) < count:
        for _ in range(200):
            candidate = _draw_outfit(rng)
            if all(_clearly_different(candidate, seen) for seen in outfits):
                break
        else:  # more outfits than top colors: settle for any new combination
            while candidate in outfits:
                candidate = _draw_outfit(rng)
        outfits.append(candidate)
    return outfits


def _jitter(rng: random.Random, color: Color, amount: int) -> Color:
    return tuple(min(255, max(0, c + rng.randint(-amount, amount))) for c in color)  # type: ignore[return-value]


@lru_cache(maxsize=256)
def camera_style(camera: int, seed: int) -> CameraStyle:
    rng = random.Random(f"{seed}/camera/{camera}")
    wall = _pick(rng, ((170, 170, 165), (190, 180, 150), (120, 140, 150), (200, 200, 205), (150, 120, 100),
                       (90, 100, 95)))
    floor = _pick(rng, ((110, 110, 110), (150, 130, 100), (80, 85, 90), (170, 165, 155), (95, 120, 80)))
    panels = []
    for _ in range(rng.randint(1, 3)):
        x0 = rng.uniform(-0.1, 0.9)
        panels.append((x0, x0 + rng.uniform(0.1, 0.35), _jitter(rng, wall, 60)))
    return CameraStyle(
        wall=_jitter(rng, wall, 15), floor=_jitter(rng, floor, 15), horizon=rng.uniform(0.55, 0.75),
        panels=tuple(panels), gain=rng.uniform(0.72, 1.12),
        tint=tuple(rng.uniform(0.9, 1.1) for _ in range(3)),  # type: ignore[arg-type]
        falloff=rng.uniform(-0.25, 0.2),
    )


def shot_for(seed: int, namespace: str, pid: int, outfit: int, camera: int, index: int,
             views: Sequence[str], weights: Sequence[float] | None = None) -> Shot:
    """One photograph of (pid, outfit) by `camera`; the view is drawn from `views`."""
    key = f"{seed}/{namespace}/{pid}/{outfit}/{camera}/{index}"
    rng = random.Random(key)
    view = rng.choices(list(views), weights=weights)[0]
    side = view in ("left", "right")
    return Shot(
        camera=camera, style=camera_style(camera, seed), view=view,
        scale=rng.uniform(0.9, 1.0),
        shift=(rng.uniform(-0.06, 0.06), rng.uniform(-0.02, 0.02)),
        arm_angle=rng.uniform(-28.0, 28.0) if side else rng.uniform(4.0, 16.0),
        leg_angle=rng.uniform(-22.0, 22.0) if side else rng.uniform(0.0, 6.0),
        key=key,
    )


@lru_cache(maxsize=64)
def backdrop(style: CameraStyle, height: int, width: int) -> np.ndarray:
    """The camera's empty scene: a wall with panels above a floor (read-only, shared)."""
    image = np.empty((height, width, 3), np.uint8)
    horizon = round(style.horizon * height)
    image[:horizon] = style.wall
    for x0, x1, color in style.panels:
        image[round(0.08 * height):horizon, max(0, round(x0 * width)):max(0, round(x1 * width))] = color
    image[horizon:] = style.floor
    image[horizon:horizon + max(1, height // 128)] = tuple(c // 2 for c in style.floor)  # skirting board
    image.flags.writeable = False
    return image


@lru_cache(maxsize=64)
def _illumination(style: CameraStyle, height: int) -> np.ndarray:
    ramp = 1.0 + style.falloff * np.linspace(-0.5, 0.5, height, dtype=np.float32)
    gain = style.gain * ramp[:, None, None] * np.asarray(style.tint, np.float32)
    gain.flags.writeable = False
    return gain


def light(image: np.ndarray, style: CameraStyle) -> np.ndarray:
    """The camera's illumination: gain, color cast and a top-to-bottom falloff."""
    return np.clip(image * _illumination(style, image.shape[0]) + 0.5, 0, 255).astype(np.uint8)
