"""SynthWorld faces: aligned portraits in the spirit of FFHQ, with exact part maps and captions.

Identity lives in the traits a face keeps from photo to photo: face shape and width, skin
tone, eye color, spacing and size, nose and brows. Everything else is drawn per image and
independently of the identity and of each other: pose (yaw), lighting, expression (mouth
closed, open or smiling), hair style and color, glasses and beard. So a classifier, or a
CLIP reading the captions, can learn each attribute apart from the others, and an editing
direction for one attribute has images on both sides of it for every identity.

Every image is aligned as FFHQ aligns its crops: the eyes sit at a fixed height with their
midpoint on the vertical center line, and the face fills most of the frame.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from typing import Mapping, Sequence

from lightning_modules.synthworld.painter import Color
from lightning_modules.synthworld.persons import BROWS, EYE_COLORS, NOSES, SKIN_TONES

# Index = pixel value in the part maps. Lists, as dataset.yaml and a model's config.json hold them.
PART_CLASSES = ["background", "skin", "neck", "hair", "eyes", "brows", "nose", "mouth", "glasses", "beard"]
PART = {name: index for index, name in enumerate(PART_CLASSES)}
# The vocabulary of every per-image attribute, in the order a classifier's head indexes it.
FACE_ATTRIBUTES: dict[str, list[str]] = {
    "hair_style": ["straight", "curly", "short", "ponytail"],
    "hair_color": ["black", "brown", "blond", "red", "gray"],
    "glasses": ["no", "yes"],
    "beard": ["no", "yes"],
    "mouth": ["closed", "open", "smiling"],
}
HAIR_COLORS: dict[str, Color] = {
    "black": (30, 26, 26), "brown": (104, 64, 36), "blond": (226, 190, 112),
    "red": (178, 66, 28), "gray": (168, 168, 166),
}
FACE_SHAPES = ("oval", "round", "long", "square")
# Brow tones are the identity's: dyed hair does not change them.
BROW_TONES: tuple[Color, ...] = ((36, 28, 24), (78, 52, 34), (120, 92, 60))
# Dark frames: glasses must stay visible on every skin tone at a tiny CLIP's 32 pixels.
FRAME_COLORS: tuple[Color, ...] = ((22, 22, 24), (62, 34, 20), (30, 36, 80), (80, 20, 28))
BACKDROPS: tuple[Color, ...] = ((196, 204, 212), (150, 170, 190), (210, 196, 170), (120, 130, 120),
                                (90, 100, 120), (220, 220, 215), (170, 150, 160), (70, 80, 80),
                                (200, 180, 140), (140, 160, 140))
MIN_TRAIT_DIFFERENCES = 3


@dataclass(frozen=True)
class FaceIdentity:
    """What stays the same in every photo of one person."""

    identity: int
    face_shape: str
    face_width: float    # half width of the face, fraction of the frame
    skin: Color
    eye_color: Color
    eye_spacing: float   # half distance between the eye centers, fraction of the frame
    eye_size: float      # half width of an eye
    nose: str
    brow: str
    brow_color: Color

    def traits(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "identity")


@dataclass(frozen=True)
class FaceLook:
    """What one photo adds: the attributes of FACE_ATTRIBUTES, pose, light and backdrop."""

    hair_style: str
    hair_color: str
    glasses: str
    beard: str
    mouth: str
    yaw: float           # degrees, positive = the face turns towards the image's right
    light: float         # -1 (lit from the left) .. 1 (from the right)
    gain: float          # overall exposure
    hair_shade: float    # small per-photo change of the hair color's brightness
    frame_color: Color
    backdrop: tuple[Color, Color]   # top, bottom
    tail_side: int       # which side a ponytail hangs on: -1 left, 1 right

    def attributes(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in FACE_ATTRIBUTES}


def _pick(rng: random.Random, options: Sequence):
    return options[rng.randrange(len(options))]


def _draw_identity(rng: random.Random, identity: int) -> FaceIdentity:
    shape = _pick(rng, FACE_SHAPES)
    width = {"oval": 0.25, "round": 0.275, "long": 0.23, "square": 0.265}[shape]
    return FaceIdentity(
        identity=identity, face_shape=shape, face_width=width + rng.choice((-0.01, 0.0, 0.01)),
        skin=_pick(rng, SKIN_TONES), eye_color=_pick(rng, EYE_COLORS),
        eye_spacing=_pick(rng, (0.095, 0.105, 0.115)), eye_size=_pick(rng, (0.042, 0.05)),
        nose=_pick(rng, NOSES), brow=_pick(rng, BROWS), brow_color=_pick(rng, BROW_TONES),
    )


def face_catalogue(num_identities: int, seed: int) -> list[FaceIdentity]:
    """Identities 0..num_identities-1; any two differ in at least MIN_TRAIT_DIFFERENCES traits
    where the trait space allows it. Identity k does not depend on how many come after it."""
    chosen: list[FaceIdentity] = []
    for identity in range(num_identities):
        rng = random.Random(f"{seed}/face/{identity}")
        best, best_gap = None, -1
        for _ in range(64):
            candidate = _draw_identity(rng, identity)
            gap = min((sum(a != b for a, b in zip(candidate.traits(), other.traits())) for other in chosen),
                      default=len(candidate.traits()))
            if gap > best_gap:
                best, best_gap = candidate, gap
            if gap >= MIN_TRAIT_DIFFERENCES:
                break
        chosen.append(best)
    return chosen


def look_for(seed: int, identity: int, index: int, glasses_probability: float, beard_probability: float,
             max_yaw: float) -> FaceLook:
    """Photo `index` of `identity`: every attribute drawn on its own, from a key of its own."""
    rng = random.Random(f"{seed}/face/{identity}/{index}")
    top, bottom = rng.sample(BACKDROPS, 2)
    return FaceLook(
        hair_style=_pick(rng, FACE_ATTRIBUTES["hair_style"]),
        hair_color=_pick(rng, FACE_ATTRIBUTES["hair_color"]),
        glasses="yes" if rng.random() < glasses_probability else "no",
        beard="yes" if rng.random() < beard_probability else "no",
        mouth=_pick(rng, FACE_ATTRIBUTES["mouth"]),
        yaw=round(rng.uniform(-max_yaw, max_yaw), 1),
        light=round(rng.uniform(-1.0, 1.0), 2),
        gain=rng.uniform(0.85, 1.1),
        hair_shade=rng.uniform(0.92, 1.08),
        frame_color=_pick(rng, FRAME_COLORS),
        backdrop=(top, bottom),
        tail_side=rng.choice((-1, 1)),
    )


def _and_list(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def caption_of(attributes: Mapping[str, str]) -> str:
    """The caption a photo's attributes give, e.g. "a person with short brown hair, a beard and
    the mouth open" or "a smiling person with red ponytail hair and glasses"."""
    style, color = attributes["hair_style"], attributes["hair_color"]
    hair = f"{color} ponytail hair" if style == "ponytail" else f"{style} {color} hair"
    extras = [hair]
    if attributes["glasses"] == "yes":
        extras.append("glasses")
    if attributes["beard"] == "yes":
        extras.append("a beard")
    if attributes["mouth"] == "open":
        extras.append("the mouth open")
    who = "a smiling person" if attributes["mouth"] == "smiling" else "a person"
    return f"{who} with {_and_list(extras)}"
