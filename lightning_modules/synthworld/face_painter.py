"""Drawing a SynthWorld face: one stroke gives the photo and its exact part map.

The face is drawn with the person stage's shape-id canvas (person_painter.PartCanvas) at
`supersample` times the output size, then reduced: the RGB by averaging (anti-aliased edges,
so a GAN sees smooth faces rather than staircases) and the part map by a plurality vote per
output pixel (so every label is still exactly what the pixels show, at the output size).

Frame units: x = 0 on the vertical center line (-0.5 .. 0.5), y = 0 at the top of the image,
1 at the bottom. The eyes sit at EYE_Y with their midpoint on x = 0 in every photo (FFHQ's
alignment); a yaw moves the face outline against the eyes, not the eyes.
Drawing order is the occlusion order: back hair, neck, ears, face, beard, nose, eyes, brows,
mouth, front hair, glasses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lightning_modules.synthworld.faces import HAIR_COLORS, PART, PART_CLASSES, FaceIdentity, FaceLook
from lightning_modules.synthworld.painter import Color
from lightning_modules.synthworld.person_painter import BodyFrame, Ink, PartCanvas, Point
from lightning_modules.synthworld.person_render import mix, shade

EYE_Y = 0.45
FACE_CY = 0.5
MOUTH_Y = 0.665
HEIGHT = {"oval": 0.31, "round": 0.29, "long": 0.33, "square": 0.3}   # half height of the face
# Superellipse exponent (2: ellipse, higher: squarer) and how much the jaw narrows to the chin.
OUTLINE = {"oval": (2.0, 0.22), "round": (2.0, 0.1), "long": (2.2, 0.2), "square": (3.2, 0.1)}
# Lines thinner than this many output pixels would vanish in the reduction (frames, brows, a
# closed mouth): every attribute must stay visible at the smallest size.
MIN_LINE_PIXELS = 1.25
# Ties in the part vote go to the thin parts, which have the fewest pixels to lose.
_TIE_BREAK = np.array([0, 1, 2, 3, 8, 7, 5, 6, 9, 4], np.float32)[: len(PART_CLASSES)] / 20.0


@dataclass(frozen=True)
class FaceRender:
    image: np.ndarray   # HxWx3 uint8
    parts: np.ndarray   # HxW uint8, indices of PART_CLASSES


def ink(part: str, color: Color, pattern: str = "solid", second: Color = (0, 0, 0)) -> Ink:
    return Ink(PART[part], color, pattern, second)


class FaceDrawing:
    def __init__(self, canvas: PartCanvas, who: FaceIdentity, look: FaceLook, size: int):
        self.c, self.who, self.look = canvas, who, look
        self.min_line = MIN_LINE_PIXELS / size
        turn = math.sin(math.radians(look.yaw))
        self.turn = turn
        self.fx = -0.06 * turn               # the outline moves against the (fixed) eyes
        self.rx, self.ry = who.face_width, HEIGHT[who.face_shape]
        self.skin = ink("skin", who.skin)
        base = shade(HAIR_COLORS[look.hair_color], look.hair_shade)
        self.hair = ink("hair", base)
        self.hair_dark = ink("hair", shade(base, 0.62))
        self.hair_light = ink("hair", mix(base, (255, 250, 235), 0.28))

    def line(self, value: float) -> float:
        return max(value, self.min_line)

    def draw(self) -> None:
        self.back_hair()
        self.neck()
        self.ears()
        self.c.polygon(self.outline(1.0), self.skin)
        if self.look.beard == "yes":
            self.beard()
        self.nose()
        for side in (-1, 1):
            self.eye(side)
            self.brow(side)
        self.mouth()
        self.front_hair()
        if self.look.glasses == "yes":
            self.glasses()

    # --- geometry ------------------------------------------------------------------------
    def outline(self, scale: float, n: int = 56) -> list[Point]:
        """The face outline: a superellipse whose lower half narrows towards the chin."""
        power, taper = OUTLINE[self.who.face_shape]
        points = []
        for i in range(n):
            a = 2 * math.pi * i / n
            c, s = math.cos(a), math.sin(a)
            x = math.copysign(abs(c) ** (2 / power), c) * self.rx * scale
            y = math.copysign(abs(s) ** (2 / power), s) * self.ry * scale
            if s > 0:
                x *= 1 - taper * s * s
            points.append((self.fx + x, FACE_CY + y))
        return points

    def arc(self, scale: float, start: float, stop: float, n: int = 20) -> list[Point]:
        """Points on an ellipse around the head, degrees: 180 = left, 270 = top, 360 = right."""
        return [(self.fx + self.rx * scale * math.cos(math.radians(a)),
                 FACE_CY + self.ry * scale * math.sin(math.radians(a))) for a in np.linspace(start, stop, n)]

    @property
    def top(self) -> float:
        return FACE_CY - self.ry

    # --- hair ----------------------------------------------------------------------------
    def back_hair(self) -> None:
        style, rx, fx = self.look.hair_style, self.rx, self.fx
        if style == "straight":
            self.c.ellipse((fx, FACE_CY - 0.02), rx * 1.14, self.ry * 1.1, self.hair)
            self.c.polygon([(fx - rx * 1.14, FACE_CY - 0.04), (fx + rx * 1.14, FACE_CY - 0.04),
                            (fx + rx * 1.22, 0.9), (fx - rx * 1.22, 0.9)], self.hair)
            for side in (-1, 1):   # long straight strands: the texture that says "straight"
                for offset in (0.98, 1.08, 1.17):
                    x = fx + side * rx * offset
                    self.c.limb([(x, FACE_CY - 0.03), (x + side * 0.01, 0.88)], self.line(0.008), self.hair_dark)
        elif style == "curly":
            # A mop of curls; each curl shows a dark ring and a highlight at any size.
            curls = self.arc(1.16, 140, 400, 15) + [(self.fx + s * rx * 1.12, y) for s in (-1, 1)
                                                   for y in (FACE_CY + 0.12, FACE_CY + 0.2)]
            r = 0.075
            for x, y in curls:
                self.c.ellipse((x, y), r, r, self.hair)
            for x, y in curls:
                self.c.ring((x, y), r * 0.62, r * 0.62, self.line(0.016), self.hair_dark)
                self.c.ellipse((x - r * 0.25, y - r * 0.25), r * 0.2, r * 0.2, self.hair_light)
        elif style == "ponytail":
            side = self.look.tail_side
            root = (fx + side * rx * 0.75, self.top + 0.07)
            bend = (fx + side * (rx + 0.075), FACE_CY + 0.02)
            end = (fx + side * (rx + 0.095), 0.9)
            self.c.limb([root, bend, end], 0.1, self.hair)
            for offset in (-0.022, 0.022):
                self.c.limb([(bend[0] + offset, bend[1]), (end[0] + offset, end[1] - 0.03)], self.line(0.008),
                            self.hair_dark)
            self.c.ellipse((fx + side * (rx + 0.06), self.top + 0.14), 0.045, 0.03, self.hair_dark)   # the tie

    def front_hair(self) -> None:
        style, rx, fx, top = self.look.hair_style, self.rx, self.fx, self.top
        scale, fringe, drop = {"straight": (1.1, 0.1, 0.04), "curly": (1.08, 0.08, 0.0),
                               "short": (1.05, 0.075, -0.06), "ponytail": (1.04, 0.06, -0.05)}[style]
        part = 0.035 if style == "straight" else 0.0     # a side parting: the fringe falls to one side
        cap = self.arc(scale, 180, 360) + [
            (fx + rx * scale, FACE_CY + drop), (fx + rx * 0.9, FACE_CY + drop),
            (fx + rx * 0.55, top + fringe + part), (fx, top + fringe + 0.01 + part / 2),
            (fx - rx * 0.55, top + fringe - part), (fx - rx * 0.9, FACE_CY + drop), (fx - rx * scale, FACE_CY + drop)]
        self.c.polygon(cap, self.hair)
        if style == "straight":
            for side in (-1, 1):   # locks over the temples down to the jaw
                self.c.polygon([(fx + side * rx * 0.86, FACE_CY - 0.06), (fx + side * rx * 1.1, FACE_CY - 0.06),
                                (fx + side * rx * 1.08, FACE_CY + 0.2), (fx + side * rx * 0.95, FACE_CY + 0.2)],
                               self.hair)
            self.c.limb(self.arc(scale * 0.93, 215, 300, 8), self.line(0.012), self.hair_light)
        elif style == "curly":
            for x in np.linspace(-rx * 0.85, rx * 0.85, 6):
                y = top + fringe * 0.6 + 0.02 * (abs(x) / rx) ** 2
                self.c.ellipse((fx + x, y), 0.05, 0.045, self.hair)
                self.c.ring((fx + x, y), 0.03, 0.027, self.line(0.014), self.hair_dark)
        elif style == "short":
            self.c.limb(self.arc(scale * 0.9, 220, 320, 8), self.line(0.01), self.hair_light)
        else:   # ponytail: combed back, the comb lines run to the tie
            for dx in (-0.5, 0.0, 0.5):
                self.c.limb([(fx + dx * rx, top + fringe - 0.005), (fx + dx * rx * 0.6, top - 0.01)],
                            self.line(0.008), self.hair_dark)

    # --- face ----------------------------------------------------------------------------
    def neck(self) -> None:
        fx, w = self.fx * 0.5, 0.11
        self.c.polygon([(fx - w, FACE_CY + 0.15), (fx + w, FACE_CY + 0.15), (fx + w * 1.1, 0.9), (fx + 0.46, 0.97),
                        (fx + 0.5, 1.01), (fx - 0.5, 1.01), (fx - 0.46, 0.97), (fx - w * 1.1, 0.9)],
                       ink("neck", shade(self.who.skin, 0.86)))

    def ears(self) -> None:
        for side in (-1, 1):
            x = self.fx + side * self.rx * (0.98 - 0.08 * side * self.turn)
            self.c.ellipse((x, EYE_Y + 0.05), 0.035, 0.06, ink("skin", shade(self.who.skin, 0.94)))

    def beard(self) -> None:
        cheeks = [p for p in self.outline(1.04) if p[1] > FACE_CY + 0.02]
        cheeks.sort(key=lambda p: p[0])
        rx, fx = self.rx, self.fx
        inner = [(fx + rx * 0.7, FACE_CY + 0.06), (0.3 * fx + rx * 0.35, MOUTH_Y - 0.045),
                 (0.0, MOUTH_Y - 0.05), (0.3 * fx - rx * 0.35, MOUTH_Y - 0.045), (fx - rx * 0.7, FACE_CY + 0.06)]
        color = shade(HAIR_COLORS[self.look.hair_color], 0.8 * self.look.hair_shade)
        self.c.polygon(cheeks[::-1] + inner[::-1], ink("beard", color, "dots", shade(color, 0.6)))

    def nose(self) -> None:
        tip_x = 0.035 * self.turn
        half = {"small": 0.028, "long": 0.03, "wide": 0.045}[self.who.nose]
        top = EYE_Y + (0.04 if self.who.nose == "small" else 0.02)
        tip = EYE_Y + (0.15 if self.who.nose == "long" else 0.13)
        nose = ink("nose", shade(self.who.skin, 0.84))
        self.c.polygon([(-0.012, top), (0.012, top), (tip_x + half, tip), (tip_x, tip + 0.018), (tip_x - half, tip)],
                       nose)
        for side in (-1, 1):
            self.c.ellipse((tip_x + side * half * 0.5, tip + 0.004), 0.011, 0.007,
                           ink("nose", shade(self.who.skin, 0.5)))

    def eye(self, side: int) -> None:
        size = self.who.eye_size * (1 + 0.25 * side * self.turn)   # the far eye looks narrower
        x, y = side * self.who.eye_spacing, EYE_Y
        self.c.ellipse((x, y), size, max(size * 0.55, self.min_line / 2), ink("eyes", (246, 244, 238)))
        look = 0.3 * size * self.turn
        self.c.ellipse((x + look, y), size * 0.55, size * 0.55, ink("eyes", self.who.eye_color))
        self.c.ellipse((x + look, y), size * 0.25, size * 0.25, ink("eyes", (18, 14, 14)))

    def brow(self, side: int) -> None:
        x, y, w, brow = side * self.who.eye_spacing, EYE_Y - 0.075, 0.055, self.who.brow
        rise = -0.022 if brow == "arched" else 0.0
        ends = [(x - w, y), (x, y + rise), (x + w, y)]
        inner = 0 if side > 0 else 2    # the end towards the nose
        if brow == "angled":
            ends[inner] = (ends[inner][0], y + 0.018)
        thickness = self.line(0.024 if brow == "thick" else 0.014)
        self.c.limb(ends, thickness, ink("brows", self.who.brow_color))

    def mouth(self) -> None:
        x, y, mouth = 0.012 * self.turn, MOUTH_Y, self.look.mouth
        lips = ink("mouth", mix(self.who.skin, (170, 50, 60), 0.5))
        dark = ink("mouth", (62, 20, 26))
        teeth = ink("mouth", (242, 238, 226))
        if mouth == "closed":
            self.c.ellipse((x, y), 0.07, max(0.014, self.min_line / 2), lips)
            self.c.limb([(x - 0.065, y), (x + 0.065, y)], self.line(0.007), ink("mouth", (96, 38, 44)))
        elif mouth == "open":
            self.c.ellipse((x, y + 0.012), 0.062, 0.058, lips)
            self.c.ellipse((x, y + 0.014), 0.048, 0.045, dark)
            self.c.polygon([(x - 0.03, y - 0.02), (x + 0.03, y - 0.02), (x + 0.026, y - 0.008),
                            (x - 0.026, y - 0.008)], teeth)
        else:   # smiling: a wide crescent, corners up, teeth showing
            w = 0.095
            lower = [(x + w * math.cos(a), y - 0.012 + 0.055 * math.sin(a)) for a in np.linspace(0, math.pi, 14)]
            upper = [(x - w * 0.75, y - 0.006), (x, y + 0.002), (x + w * 0.75, y - 0.006)]
            self.c.polygon(upper + lower, lips)
            inner = [(x + w * 0.78 * math.cos(a), y - 0.004 + 0.04 * math.sin(a)) for a in np.linspace(0, math.pi, 12)]
            self.c.polygon([(x - w * 0.6, y + 0.001), (x + w * 0.6, y + 0.001)] + inner, teeth)
            for side in (-1, 1):   # the raised corners
                self.c.limb([(x + side * w * 0.95, y - 0.012), (x + side * w * 1.12, y - 0.03)], self.line(0.008),
                            ink("mouth", shade(lips.color, 0.8)))

    def glasses(self) -> None:
        frame = ink("glasses", self.look.frame_color)
        size, thick = self.who.eye_size, self.line(0.024)
        # The lenses sit a little below the eyes' center, so the brows stay above the frames.
        rx, ry, y = size * 1.9, size * 1.3, EYE_Y + 0.008
        for side in (-1, 1):
            x = side * self.who.eye_spacing
            self.c.ring((x, y), rx, ry, thick, frame)
            self.c.limb([(x + side * rx, EYE_Y - 0.005), (self.fx + side * self.rx * 0.99, EYE_Y - 0.01)], thick, frame)
        inner = self.who.eye_spacing - rx
        self.c.limb([(-inner - thick, EYE_Y - 0.012), (0.0, EYE_Y - 0.02), (inner + thick, EYE_Y - 0.012)], thick,
                    frame)


def _reduce_parts(parts: np.ndarray, factor: int) -> np.ndarray:
    """Plurality vote of each factor x factor block (ties to the thinner part)."""
    size = parts.shape[0] // factor
    blocks = parts.reshape(size, factor, size, factor).transpose(0, 2, 1, 3).reshape(size, size, factor * factor)
    counts = (blocks[..., None] == np.arange(len(PART_CLASSES), dtype=np.uint8)).sum(2).astype(np.float32)
    return np.argmax(counts + _TIE_BREAK, axis=-1).astype(np.uint8)


def _lighting(look: FaceLook, size: int, foreground: np.ndarray, fx: float) -> np.ndarray:
    """A directional light across the frame and a soft falloff towards the face's sides."""
    x = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    side = look.gain * (1.0 + 0.22 * look.light * 2 * x)
    roundness = 1.0 - 0.16 * np.clip(((x - fx) / 0.3) ** 2, 0, 1)
    field = side[None, :] * (1 - foreground + foreground * roundness[None, :])
    return field[..., None]


def render_face(who: FaceIdentity, look: FaceLook, size: int, supersample: int = 4) -> FaceRender:
    """One aligned photo of `who` with `look`: anti-aliased RGB and its part map, size x size."""
    big = size * supersample
    canvas = PartCanvas(big, big, BodyFrame(cx=big / 2, top=0.0, unit=big))
    drawing = FaceDrawing(canvas, who, look, size)
    drawing.draw()
    rgb, labels, drawn = canvas.compose()
    top, bottom = (np.asarray(c, np.float32) for c in look.backdrop)
    t = np.linspace(0, 1, big, dtype=np.float32)[:, None, None]
    backdrop = (1 - t) * top + t * bottom
    photo = np.where(drawn[..., None], rgb.astype(np.float32), backdrop)
    small = photo.reshape(size, supersample, size, supersample, 3).mean((1, 3))
    foreground = drawn.reshape(size, supersample, size, supersample).mean((1, 3))
    lit = small * _lighting(look, size, foreground, drawing.fx)
    image = np.clip(lit + 0.5, 0, 255).astype(np.uint8)
    return FaceRender(image=image, parts=_reduce_parts(labels, supersample))
