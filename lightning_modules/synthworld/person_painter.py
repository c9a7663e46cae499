"""A shape-id rasterizer: one stroke gives a person's colors and its exact parsing map.

Every shape is drawn, without anti-aliasing, as its own id into a single 8-bit id image,
later shapes covering earlier ones. The RGB render and the parsing map are then two
look-ups of that one id image, so a label is exactly the set of pixels its color occupies.

Geometry is in body units: x is 0 on the person's axis, y is 0 at the top of the head and
1 under the soles; `BodyFrame` maps them to pixels (and mirrors right-facing views).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from lightning_modules.synthworld.painter import Color, checks, dots, stripes

Point = tuple[float, float]
PATTERNS = ("solid", "stripes", "checks", "dots")
# Pattern periods as a fraction of the canvas height: coarse enough to survive (as
# texture, not as lines) a 4x surveillance downscale.
_PERIODS = {"stripes": 0.04, "checks": 0.035, "dots": 0.035}
_MAX_SHAPES = 255


@dataclass(frozen=True)
class BodyFrame:
    """Body units -> pixels: `unit` pixels per body height, axis at `cx`, head top at `top`."""

    cx: float
    top: float
    unit: float
    mirror: bool = False

    def __call__(self, point: Point) -> Point:
        x, y = point
        return self.cx + (-x if self.mirror else x) * self.unit, self.top + y * self.unit

    def length(self, value: float) -> float:
        return value * self.unit


@lru_cache(maxsize=32)
def pattern_mask(kind: str, height: int, width: int) -> np.ndarray:
    """Where a patterned garment shows its second color (False everywhere for solid)."""
    if kind == "solid":
        return np.zeros((height, width), bool)
    size = max(height, width)
    period = _PERIODS[kind]
    # The shared texture makers paint two colors; black/white turns them into a mask.
    make = {"stripes": lambda a, b: stripes(a, b, period, angle=90.0),
            "checks": lambda a, b: checks(a, b, period),
            "dots": lambda a, b: dots(a, b, period)}[kind]
    texture = make((0, 0, 0), (255, 255, 255))(size)
    mask = texture[:height, :width, 0] > 0
    mask.flags.writeable = False
    return mask


@dataclass(frozen=True)
class Ink:
    """What a shape is: its parsing label and its color (optionally a two-color pattern)."""

    label: int
    color: Color
    pattern: str = "solid"
    second: Color = (0, 0, 0)


class PartCanvas:
    """Collects shapes as ids; `compose` turns them into (RGB, parsing labels, person mask)."""

    def __init__(self, height: int, width: int, frame: BodyFrame):
        self.height, self.width, self.frame = height, width, frame
        self.ids = Image.new("L", (width, height), 0)
        self._draw = ImageDraw.Draw(self.ids)
        self._inks: list[Ink] = []

    def _id(self, ink: Ink) -> int:
        if len(self._inks) == _MAX_SHAPES:
            raise RuntimeError("a person needs more shapes than an 8-bit id image holds")
        self._inks.append(ink)
        return len(self._inks)

    def polygon(self, points: Sequence[Point], ink: Ink) -> None:
        self._draw.polygon([self.frame(p) for p in points], fill=self._id(ink))

    def ellipse(self, center: Point, rx: float, ry: float, ink: Ink) -> None:
        x, y = self.frame(center)
        w, h = self.frame.length(rx), self.frame.length(ry)
        self._draw.ellipse((x - w, y - h, x + w, y + h), fill=self._id(ink))

    def ring(self, center: Point, rx: float, ry: float, thickness: float, ink: Ink) -> None:
        x, y = self.frame(center)
        w, h = self.frame.length(rx), self.frame.length(ry)
        px = max(1, round(self.frame.length(thickness)))
        self._draw.ellipse((x - w, y - h, x + w, y + h), outline=self._id(ink), width=px)

    def limb(self, points: Sequence[Point], thickness: float, ink: Ink) -> None:
        """A poly-line of constant thickness with round joints and ends (an arm, a leg)."""
        pixels = [self.frame(p) for p in points]
        px = max(1, round(self.frame.length(thickness)))
        shape = self._id(ink)
        self._draw.line(pixels, fill=shape, width=px)
        r = px / 2
        for x, y in pixels:
            self._draw.ellipse((x - r, y - r, x + r, y + r), fill=shape)

    def compose(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids = np.asarray(self.ids)
        inks = [Ink(0, (0, 0, 0))] + self._inks
        labels = np.array([ink.label for ink in inks], np.uint8)[ids]
        rgb = np.array([ink.color for ink in inks], np.uint8)[ids]
        patterned: dict[tuple[str, Color], list[int]] = {}
        for shape, ink in enumerate(inks):
            if ink.pattern != "solid":
                patterned.setdefault((ink.pattern, ink.second), []).append(shape)
        for (pattern, second), shapes in patterned.items():
            region = np.isin(ids, shapes) & pattern_mask(pattern, self.height, self.width)
            rgb[region] = second
        return rgb, labels, ids > 0
