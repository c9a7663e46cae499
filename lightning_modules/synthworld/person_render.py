"""Drawing a SynthWorld person: body, clothes, hair and face for one shot.

Drawing order is the occlusion order. Everything that belongs to the identity (body
silhouette, hair, face) has the same geometry whatever the outfit, so changing clothes
changes only cloth pixels; the clothes are drawn on the identity's silhouette.
Body units: y = 0 at the top of the head, 1 under the soles; x = 0 on the body axis,
negative x towards the person's front in side views.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from lightning_modules.synthworld.painter import Color
from lightning_modules.synthworld.person_painter import BodyFrame, Ink, PartCanvas, Point
from lightning_modules.synthworld.persons import LABEL, Identity, Outfit, Shot, backdrop, light

# Body landmarks (y, body units) shared by everybody; identities differ in widths,
# head size and overall height.
WAIST, HIP, CROTCH, KNEE, ANKLE = 0.44, 0.51, 0.54, 0.74, 0.955
UPPER_ARM, FOREARM, ARM = 0.16, 0.14, 0.05
TOP_LABEL = {"tshirt": "upper_clothes", "shirt": "upper_clothes", "jacket": "coat", "dress": "dress"}
BOTTOM_LABEL = {"pants": "pants", "shorts": "pants", "skirt": "skirt"}
FRAME_COLOR: Color = (28, 28, 30)


def shade(color: Color, factor: float) -> Color:
    return tuple(int(min(255, max(0, c * factor))) for c in color)  # type: ignore[return-value]


def mix(a: Color, b: Color, t: float) -> Color:
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a, b))  # type: ignore[return-value]


def ink(label: str, color: Color, pattern: str = "solid", second: Color = (0, 0, 0)) -> Ink:
    return Ink(LABEL[label], color, pattern, second)


def along(a: Point, b: Point, t: float) -> Point:
    return a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])


def swing(start: Point, length: float, degrees: float) -> Point:
    """The end of a limb hanging from `start`, turned by `degrees` (positive = towards -x)."""
    a = math.radians(degrees)
    return start[0] - length * math.sin(a), start[1] + length * math.cos(a)


@dataclass(frozen=True)
class PersonRender:
    image: np.ndarray                # HxWx3 uint8: the clean high-resolution photograph
    parsing: np.ndarray              # HxW uint8 labels (PARSING_CLASSES)
    face_box: Optional[tuple[int, int, int, int]]  # x0, y0, x1, y1 half-open, or None


class PersonDrawing:
    def __init__(self, canvas: PartCanvas, who: Identity, outfit: Outfit, shot: Shot):
        self.c, self.who, self.outfit, self.shot = canvas, who, outfit, shot
        self.side = shot.view in ("left", "right")
        hh = who.head
        self.hh, self.cy = hh, hh / 2
        self.rx = hh * (0.46 if self.side else 0.4)
        self.ry = hh / 2
        self.shoulder_y = hh + 0.035
        self.neck_w = 0.17 * hh
        self.skin = ink("face", who.skin)
        top = outfit.top
        self.top = ink(TOP_LABEL[top], outfit.top_color, outfit.pattern, outfit.pattern_color)
        self.bottom = (self.top if top == "dress"
                       else ink(BOTTOM_LABEL[outfit.bottom], outfit.bottom_color))
        self.hair = ink("hair", who.hair_color)

    # --- body --------------------------------------------------------------------------
    def draw(self) -> None:
        view = self.shot.view
        if view == "back":
            self.legs(stances=(-1, 1))
            self.torso()
            self.arms(sides=(-1, 1))
            self.neck()
            self.back_of_head()
        elif self.side:
            far = 0.78  # the limbs on the far side are in the body's shadow
            self.arm(-self.shot.arm_angle, 0.0, far)
            self.side_legs()
            self.torso()
            self.arm(self.shot.arm_angle, 0.0, 1.0)
            self.neck()
            self.profile()
        else:
            if self.who.hair_style == "long":
                self.c.polygon([(-self.rx * 1.15, self.hh * 0.35), (self.rx * 1.15, self.hh * 0.35),
                                (self.rx * 1.3, self.shoulder_y + 0.07), (-self.rx * 1.3, self.shoulder_y + 0.07)],
                               self.hair)
            self.legs(stances=(-1, 1))
            self.torso()
            self.arms(sides=(-1, 1))
            self.neck()
            self.face()

    def legs(self, stances: tuple[int, ...]) -> None:
        hip_x = self.who.hip * 0.48
        for sign in stances:
            hip = (sign * hip_x, HIP)
            angle = -sign * self.shot.leg_angle  # apart, symmetric
            knee = swing(hip, KNEE - HIP, angle)
            ankle = swing(knee, ANKLE - KNEE, angle)
            self.leg(hip, knee, ankle, 1.0)
        self.pelvis(-self.who.hip, self.who.hip)

    def side_legs(self) -> None:
        hip = (0.0, HIP)
        for angle, brightness in ((-self.shot.leg_angle, 0.78), (self.shot.leg_angle, 1.0)):
            knee = swing(hip, KNEE - HIP, angle)
            ankle = swing(knee, ANKLE - KNEE, angle * 0.7)
            self.leg(hip, knee, ankle, brightness)
        self.pelvis(-self.who.hip * 0.75, self.who.hip * 0.85)

    def leg(self, hip: Point, knee: Point, ankle: Point, brightness: float) -> None:
        thigh, calf = self.who.hip * 0.85, self.who.hip * 0.6
        skin = ink("legs", shade(self.who.skin, brightness))
        self.c.limb([hip, knee], thigh, skin)
        self.c.limb([knee, ankle], calf, skin)
        cloth = Ink(self.bottom.label, shade(self.bottom.color, brightness), self.bottom.pattern, self.bottom.second)
        if self.outfit.bottom == "pants":
            self.c.limb([hip, knee], thigh + 0.01, cloth)
            self.c.limb([knee, along(knee, ankle, 0.93)], calf + 0.012, cloth)
        elif self.outfit.bottom == "shorts":
            self.c.limb([hip, along(hip, knee, 0.6)], thigh + 0.012, cloth)
        toe = -0.035 if self.side else 0.0
        self.c.ellipse((ankle[0] + toe, 0.976), 0.055 if self.side else 0.036, 0.024,
                       ink("shoes", shade(self.outfit.shoe_color, brightness)))

    def pelvis(self, x0: float, x1: float) -> None:
        if self.outfit.bottom in ("pants", "shorts"):
            self.c.polygon([(x0, WAIST), (x1, WAIST), (x1 * 1.02, CROTCH), (x0 * 1.02, CROTCH)], self.bottom)
        else:  # skirt, or the skirt of a dress: flares to the knee
            self.c.polygon([(x0, WAIST), (x1, WAIST), (x1 + 0.045, 0.71), (x0 - 0.045, 0.71)], self.bottom)

    def torso(self) -> None:
        who, ys, nw = self.who, self.shoulder_y, self.neck_w
        hem = HIP + (0.05 if self.outfit.top == "jacket" else 0.0)
        if self.side:
            front, back = who.shoulder * 0.55, who.shoulder * 0.45
            outline = [(-nw, ys - 0.005), (-front, ys + 0.04), (-front * 1.02, WAIST - 0.06), (-who.hip * 0.75, WAIST),
                       (-who.hip * 0.78, hem), (who.hip * 0.88, hem), (who.hip * 0.8, WAIST), (back, ys + 0.05),
                       (nw, ys - 0.005)]
        else:
            sw, waist = who.shoulder, (who.shoulder * 0.55 + who.hip * 0.45)
            half = [(nw * 1.2, ys - 0.005), (sw - 0.02, ys + 0.002), (sw, ys + 0.03), (waist * 0.97, WAIST - 0.04),
                    (who.hip, hem)]
            outline = [(-x, y) for x, y in half] + [(x, y) for x, y in reversed(half)]
        self.c.polygon(outline, self.top)
        if self.outfit.top == "jacket" and self.shot.view == "front":
            self.c.polygon([(-nw * 1.1, ys - 0.005), (nw * 1.1, ys - 0.005), (0.0, WAIST - 0.02)],
                           ink("upper_clothes", self.outfit.inner_color))

    def arms(self, sides: tuple[int, ...]) -> None:
        for sign in sides:
            self.arm(-sign * self.shot.arm_angle, sign * (self.who.shoulder - 0.025), 1.0)

    def arm(self, angle: float, x: float, brightness: float) -> None:
        shoulder = (x, self.shoulder_y + 0.025)
        elbow = swing(shoulder, UPPER_ARM, angle)
        wrist = swing(elbow, FOREARM, angle * (1.3 if self.side else 0.7))
        skin = ink("arms", shade(self.who.skin, brightness))
        sleeve = Ink(self.top.label, shade(self.top.color, brightness), self.top.pattern, self.top.second)
        # A sleeve relabels part of the arm without changing its outline (the outline is the identity's).
        self.c.limb([shoulder, elbow, wrist], ARM, skin)
        if self.outfit.top in ("shirt", "jacket"):
            self.c.limb([shoulder, elbow, along(elbow, wrist, 0.85)], ARM, sleeve)
        else:
            self.c.limb([shoulder, along(shoulder, elbow, 0.55)], ARM, sleeve)
        self.c.ellipse(swing(wrist, 0.015, angle), 0.021, 0.025, skin)

    def neck(self) -> None:
        nw, x = self.neck_w, (-0.01 if self.side else 0.0)
        self.c.polygon([(x - nw, self.hh * 0.75), (x + nw, self.hh * 0.75), (x + nw, self.shoulder_y + 0.01),
                        (x - nw, self.shoulder_y + 0.01)], ink("neck", self.who.skin))

    # --- head --------------------------------------------------------------------------
    def arc(self, scale: float, start: float, stop: float, n: int = 16) -> list[Point]:
        """Points on the head outline (scaled), angles in degrees: 180 = front/left, 270 = top."""
        return [(self.rx * scale * math.cos(math.radians(a)), self.cy + self.ry * scale * math.sin(math.radians(a)))
                for a in np.linspace(start, stop, n)]

    def back_of_head(self) -> None:
        style, hh, rx = self.who.hair_style, self.hh, self.rx
        # From behind every style covers the whole head, so no face label can appear.
        self.c.ellipse((0.0, self.cy), rx * 1.04, self.ry * 1.02, self.hair)
        if style == "long":
            self.c.polygon([(-rx * 1.05, self.cy), (rx * 1.05, self.cy), (rx * 1.25, self.shoulder_y + 0.1),
                            (-rx * 1.25, self.shoulder_y + 0.1)], self.hair)
        elif style == "ponytail":
            self.c.limb([(0.0, hh * 0.55), (0.0, self.shoulder_y + 0.06)], 0.35 * hh, self.hair)
        elif style == "bun":
            self.c.ellipse((0.0, hh * 0.22), 0.22 * hh, 0.2 * hh, self.hair)
        elif style == "curly":
            for x, y in self.arc(1.0, 180, 360, 7):
                self.c.ellipse((x, y), 0.17 * hh, 0.17 * hh, self.hair)

    def face(self) -> None:
        who, hh, rx = self.who, self.hh, self.rx
        for sign in (-1, 1):  # ears
            self.c.ellipse((sign * rx, hh * 0.54), 0.12 * hh, 0.16 * hh, self.skin)
        self.c.ellipse((0.0, self.cy), rx, self.ry, self.skin)
        self.front_hair()
        eye_y = hh * 0.52
        if who.extra == "beard":
            self.c.polygon(self.arc(1.03, 15, 165) + [(-rx * 0.45, hh * 0.66), (rx * 0.45, hh * 0.66)],
                           ink("face", shade(who.hair_color, 0.85)))
        for sign in (-1, 1):
            self.eye((sign * who.eye_spacing * hh, eye_y), who.eye_size * hh, sign)
        lo, hi = eye_y + {"small": 0.06, "long": 0.0, "wide": 0.05}[who.nose] * hh, eye_y + 0.19 * hh
        half = {"small": 0.05, "long": 0.05, "wide": 0.09}[who.nose] * hh
        self.c.polygon([(0.0, lo), (half, hi), (-half, hi)], ink("face", shade(who.skin, 0.8)))
        if who.extra == "mustache":
            self.c.polygon([(-0.12 * hh, 0.77 * hh), (0.12 * hh, 0.77 * hh), (0.09 * hh, 0.71 * hh),
                            (-0.09 * hh, 0.71 * hh)], ink("face", shade(who.hair_color, 0.85)))
        self.c.ellipse((0.0, 0.8 * hh), who.mouth_width * hh / 2, 0.035 * hh, ink("face", self.lips()))
        if who.extra == "glasses":
            for sign in (-1, 1):
                self.c.ring((sign * who.eye_spacing * hh, eye_y), who.eye_size * hh * 1.9, who.eye_size * hh * 1.5,
                            0.03 * hh, ink("face", FRAME_COLOR))
        elif who.extra == "freckles":
            self.freckles([(s * x * hh, y * hh) for s in (-1, 1) for x, y in ((0.16, 0.64), (0.24, 0.67), (0.2, 0.71))])

    def front_hair(self) -> None:
        style, hh, rx, cy = self.who.hair_style, self.hh, self.rx, self.cy
        scale, fore, drop = {"buzz": (1.02, 0.3, -0.05), "short": (1.08, 0.25, 0.05), "side_part": (1.08, 0.22, 0.05),
                             "long": (1.1, 0.23, 0.28), "ponytail": (1.05, 0.27, 0.0), "bun": (1.04, 0.27, 0.0),
                             "curly": (1.06, 0.24, 0.05)}[style]
        tilt = 0.08 * hh if style == "side_part" else 0.0  # the parting drops the fringe on one side
        outline = self.arc(scale, 180, 360) + [
            (rx * scale, cy + drop * hh), (rx * 0.86, cy + drop * hh), (rx * 0.6, cy - fore * hh - tilt),
            (0.0, cy - (fore + 0.04) * hh), (-rx * 0.6, cy - fore * hh + tilt), (-rx * 0.86, cy + drop * hh),
            (-rx * scale, cy + drop * hh)]
        self.c.polygon(outline, self.hair)
        if style == "bun":
            self.c.ellipse((0.0, -0.02 * hh), 0.22 * hh, 0.18 * hh, self.hair)
        elif style == "curly":
            for x, y in self.arc(1.0, 180, 360, 7):
                self.c.ellipse((x, y), 0.17 * hh, 0.17 * hh, self.hair)

    def eye(self, center: Point, size: float, toward: int) -> None:
        x, y = center
        self.c.ellipse(center, size, size * 0.6, ink("face", (245, 245, 240)))
        self.c.ellipse((x + 0.25 * size * (toward if self.side else 0), y), size * 0.6, size * 0.6,
                       ink("face", self.who.eye_color))
        hh, brow = self.hh, self.who.brow
        by, w = y - 0.11 * hh, 0.1 * hh
        inner = 0.03 * hh if brow == "angled" else 0.0  # towards the nose
        mid = -0.035 * hh if brow == "arched" else 0.0
        ends = [(x - w, by), (x, by + mid), (x + w, by)]
        if toward < 0:
            ends[2] = (ends[2][0], by + inner)
        else:
            ends[0] = (ends[0][0], by + inner)
        thickness = (0.05 if brow == "thick" else 0.028) * hh
        self.c.limb(ends, thickness, ink("face", shade(self.who.hair_color, 0.55)))

    def lips(self) -> Color:
        return mix(self.who.skin, (165, 55, 60), 0.45)

    def freckles(self, points: list[Point]) -> None:
        for point in points:
            self.c.ellipse(point, 0.022 * self.hh, 0.022 * self.hh, ink("face", shade(self.who.skin, 0.72)))

    def profile(self) -> None:
        """The head seen from the side, facing -x."""
        who, hh, rx, cy = self.who, self.hh, self.rx, self.cy
        style = who.hair_style
        if style == "long":
            self.c.polygon([(rx * 0.2, hh * 0.3), (rx * 1.1, hh * 0.45), (rx * 1.05, self.shoulder_y + 0.09),
                            (rx * 0.1, self.shoulder_y + 0.09)], self.hair)
        elif style == "ponytail":
            self.c.limb([(rx * 0.9, hh * 0.35), (rx * 1.4, hh * 0.8), (rx * 1.3, hh * 1.2)], 0.2 * hh, self.hair)
        self.c.ellipse((0.0, cy), rx, self.ry, self.skin)
        nose_len = {"small": 0.06, "long": 0.11, "wide": 0.07}[who.nose] * hh
        eye_y = hh * 0.52
        self.c.polygon([(-rx * 0.9, eye_y + 0.02 * hh), (-rx - nose_len, eye_y + 0.17 * hh),
                        (-rx * 0.88, eye_y + 0.2 * hh)], ink("face", shade(who.skin, 0.92)))
        front, back, scale = {"buzz": (215, 40, 1.02), "long": (205, 80, 1.1)}.get(style, (205, 55, 1.07))
        self.c.polygon(self.arc(scale, front, 360 + back) + [(rx * 0.3, cy + 0.12 * hh), (-rx * 0.1, cy - 0.2 * hh),
                                                            (-rx * 0.55, cy - 0.28 * hh)], self.hair)
        if style == "bun":
            self.c.ellipse((rx * 0.85, 0.2 * hh), 0.2 * hh, 0.2 * hh, self.hair)
        elif style == "curly":
            for x, y in self.arc(1.0, 220, 400, 6):
                self.c.ellipse((x, y), 0.17 * hh, 0.17 * hh, self.hair)
        self.c.ellipse((rx * 0.12, hh * 0.56), 0.11 * hh, 0.15 * hh, self.skin)  # ear
        if who.extra == "beard":
            self.c.polygon([(rx * 0.05, hh * 0.7)] + self.arc(1.03, 60, 165, 10) + [(-rx * 0.6, hh * 0.72)],
                           ink("face", shade(who.hair_color, 0.85)))
        eye_x = -rx * 0.62
        self.eye((eye_x, eye_y), who.eye_size * hh * 0.75, -1)
        if who.extra == "mustache":
            self.c.polygon([(-rx * 0.98, 0.71 * hh), (-rx * 0.6, 0.71 * hh), (-rx * 0.6, 0.76 * hh),
                            (-rx * 0.95, 0.77 * hh)], ink("face", shade(who.hair_color, 0.85)))
        self.c.polygon([(-rx * 0.97, 0.785 * hh), (-rx * 0.97 + who.mouth_width * hh * 0.55, 0.79 * hh),
                        (-rx * 0.97, 0.82 * hh)], ink("face", self.lips()))
        if who.extra == "glasses":
            self.c.ring((eye_x, eye_y), who.eye_size * hh * 1.5, who.eye_size * hh * 1.4, 0.03 * hh,
                        ink("face", FRAME_COLOR))
            self.c.limb([(eye_x + who.eye_size * hh * 1.5, eye_y), (rx * 0.1, hh * 0.5)], 0.03 * hh,
                        ink("face", FRAME_COLOR))
        elif who.extra == "freckles":
            self.freckles([(-rx * 0.5, 0.66 * hh), (-rx * 0.35, 0.7 * hh), (-rx * 0.6, 0.72 * hh)])


def person_frame(who: Identity, shot: Shot, height: int, width: int) -> BodyFrame:
    """Feet on a common ground line: taller people reach higher up the image."""
    unit = 0.9 * height * who.height * shot.scale
    ground = height * (0.955 + shot.shift[1])
    return BodyFrame(cx=width * (0.5 + shot.shift[0]), top=ground - unit, unit=unit, mirror=shot.view == "right")


def render_person(who: Identity, outfit: Outfit, shot: Shot, height: int, width: int,
                  background: Optional[np.ndarray] = None) -> PersonRender:
    """Photograph one identity in one outfit: clean image, exact parsing map, face box.

    `background` replaces the camera's backdrop (an HxWx3 array); the person's pixels and
    labels do not depend on it.
    """
    canvas = PartCanvas(height, width, person_frame(who, shot, height, width))
    PersonDrawing(canvas, who, outfit, shot).draw()
    rgb, parsing, person = canvas.compose()
    scene = backdrop(shot.style, height, width) if background is None else background
    image = light(np.where(person[..., None], rgb, scene), shot.style)
    ys, xs = np.nonzero(parsing == LABEL["face"])
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None
    return PersonRender(image=image, parsing=parsing, face_box=box)

