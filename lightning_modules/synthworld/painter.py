"""A tiny rasterizer that paints an RGB image and its exact mask in the same stroke.

Every shape is a polygon or a poly-line in unit coordinates ([0, 1] x [0, 1]) that goes
through one affine map (pose scale and tilt) before it is drawn, and is drawn without
anti-aliasing, so the mask is exactly the set of pixels the subject colored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw

Color = tuple[int, int, int]
# A fill is a flat color or a function (size) -> HxWx3 uint8 texture (stripes, dots...).
Fill = Union[Color, Callable[[int], np.ndarray]]
Point = tuple[float, float]


@dataclass(frozen=True)
class Affine:
    """Scale about the image center, rotate by `angle` degrees, then shift."""

    scale: float = 1.0
    angle: float = 0.0
    shift: Point = (0.0, 0.0)
    mirror: bool = False

    def __call__(self, point: Point) -> Point:
        x, y = point
        if self.mirror:
            x = 1.0 - x
        x, y = x - 0.5, y - 0.5
        c, s = math.cos(math.radians(self.angle)), math.sin(math.radians(self.angle))
        x, y = self.scale * (c * x - s * y), self.scale * (s * x + c * y)
        return x + 0.5 + self.shift[0], y + 0.5 + self.shift[1]


def ellipse_points(cx: float, cy: float, rx: float, ry: float, n: int = 48) -> list[Point]:
    return [
        (cx + rx * math.cos(2 * math.pi * i / n), cy + ry * math.sin(2 * math.pi * i / n))
        for i in range(n)
    ]


def rect_points(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


class Painter:
    def __init__(self, size: int, transform: Affine = Affine()):
        self.size = size
        self.transform = transform
        self.rgb = np.zeros((size, size, 3), np.uint8)
        self.mask = np.zeros((size, size), bool)

    def _pixels(self, points: Sequence[Point]) -> list[Point]:
        return [(x * self.size, y * self.size) for x, y in map(self.transform, points)]

    def _rasterize(self, draw: Callable[[ImageDraw.ImageDraw], None]) -> np.ndarray:
        layer = Image.new("L", (self.size, self.size), 0)
        draw(ImageDraw.Draw(layer))
        return np.asarray(layer) > 0

    def _paint(self, region: np.ndarray, fill: Fill) -> None:
        if callable(fill):
            self.rgb[region] = fill(self.size)[region]
        else:
            self.rgb[region] = fill
        self.mask |= region

    def polygon(self, points: Sequence[Point], fill: Fill) -> None:
        pixels = self._pixels(points)
        self._paint(self._rasterize(lambda d: d.polygon(pixels, fill=255)), fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Fill) -> None:
        self.polygon(ellipse_points(cx, cy, rx, ry), fill)

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: Fill) -> None:
        self.polygon(rect_points(x0, y0, x1, y1), fill)

    def line(self, points: Sequence[Point], width: float, fill: Fill) -> None:
        pixels = self._pixels(points)
        px_width = max(1, round(width * self.size * self.transform.scale))
        radius = px_width / 2

        def draw(d: ImageDraw.ImageDraw) -> None:
            d.line(pixels, fill=255, width=px_width)
            for x, y in pixels:  # round joints and caps, like a limb
                d.ellipse((x - radius, y - radius, x + radius, y + radius), fill=255)

        self._paint(self._rasterize(draw), fill)

    def image(self, background: Color = (255, 255, 255)) -> np.ndarray:
        """The RGB render on a flat background (what a photo of the subject would be)."""
        out = np.empty_like(self.rgb)
        out[:] = background
        out[self.mask] = self.rgb[self.mask]
        return out


# Textures: appearance that differs between subjects of one class while shapes stay equal.
def stripes(a: Color, b: Color, period: float = 0.06, angle: float = 0.0) -> Callable[[int], np.ndarray]:
    def texture(size: int) -> np.ndarray:
        y, x = np.mgrid[0:size, 0:size] / size
        phase = x * math.cos(math.radians(angle)) + y * math.sin(math.radians(angle))
        pick = (np.floor(phase / period) % 2).astype(bool)
        return np.where(pick[..., None], np.array(b, np.uint8), np.array(a, np.uint8))

    return texture


def dots(a: Color, b: Color, period: float = 0.08) -> Callable[[int], np.ndarray]:
    def texture(size: int) -> np.ndarray:
        y, x = np.mgrid[0:size, 0:size] / size
        fx, fy = (x % period) / period - 0.5, (y % period) / period - 0.5
        pick = fx**2 + fy**2 < 0.09
        return np.where(pick[..., None], np.array(b, np.uint8), np.array(a, np.uint8))

    return texture


def checks(a: Color, b: Color, period: float = 0.07) -> Callable[[int], np.ndarray]:
    def texture(size: int) -> np.ndarray:
        y, x = np.mgrid[0:size, 0:size] / size
        pick = ((np.floor(x / period) + np.floor(y / period)) % 2).astype(bool)
        return np.where(pick[..., None], np.array(b, np.uint8), np.array(a, np.uint8))

    return texture
