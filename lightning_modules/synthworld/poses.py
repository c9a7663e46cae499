"""SynthWorld's pose images: the skeleton of every figure-like subject in OpenPose's convention.

ControlNet-OpenPose (MSP 3, "ours with ControlNet") is conditioned on a pose image as an
OpenPose detector draws it: 18 COCO keypoints on black, 17 limbs, each limb and keypoint in its
own fixed colour (limbs at 60 % brightness, joints full). SynthWorld knows its figures' geometry,
so it draws the skeleton exactly instead of detecting it. Cartoons and robots are figures; dogs
and vases have no human skeleton and leave the pose image black, as a detector would.

Keypoints follow the renderers of subjects.py in unit coordinates and go through the same view
transform, so a pose image lies exactly on its render. A side view draws the near side only:
facing left (unit coordinates, before a mirror) shows the figure's left side.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import yaml
from PIL import Image, ImageDraw

from lightning_modules.synthworld.scenes import Scene, render_scene
from lightning_modules.synthworld.subjects import SubjectSpec, View, render_subject, view_for

FIGURE_CLASSES = ("cartoon", "robot")

# COCO-18 keypoints, OpenPose's order.
KEYPOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist", "r_hip",
             "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
# OpenPose's limbs (pairs of keypoint indices) in its drawing order; limb k and keypoint k share colour k.
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
         (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
           (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
           (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))
LIMB_BRIGHTNESS = 0.6

Point = tuple[float, float]


def _mid(a: Point, b: Point) -> Point:
    return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)


def _sides(view: View, image_left: dict[str, Point], image_right: dict[str, Point]) -> dict[str, Point]:
    """Name the limbs on the picture's left and right by the figure's sides: facing the viewer
    its right is the picture's left, seen from behind the other way round."""
    left_is = "l" if view.orientation == "back" else "r"
    right_is = "r" if left_is == "l" else "l"
    named = {f"{left_is}_{k}": p for k, p in image_left.items()}
    named.update({f"{right_is}_{k}": p for k, p in image_right.items()})
    return named


def _limb(start: Point, end: Point, middle: Optional[Point] = None) -> tuple[Point, Point, Point]:
    """(start, joint, end): the joint given (a bent knee) or half-way."""
    return start, middle or _mid(start, end), end


def _cartoon(view: View) -> dict[str, Point]:
    side = view.orientation in ("left", "right")
    half = 0.07 if side else 0.12
    hip_y = 0.62 if view.pose != "sitting" else 0.66
    legs = {
        "standing": [_limb((0.46, hip_y), (0.45, 0.92)), _limb((0.54, hip_y), (0.55, 0.92))],
        "walking": [_limb((0.47, hip_y), (0.37, 0.92)), _limb((0.53, hip_y), (0.63, 0.92))],
        "sitting": [_limb((0.46, hip_y), (0.34, 0.9), (0.34, 0.7)), _limb((0.54, hip_y), (0.42, 0.9), (0.42, 0.7))],
    }[view.pose]
    swing = {"standing": 0.0, "walking": 0.08, "sitting": -0.04}[view.pose]
    points: dict[str, Point] = {"neck": (0.5, 0.36)}
    if side:
        # Facing left: the near (left) arm hangs from the body's middle; both legs show.
        arm = _limb((0.5, 0.39), (0.55 + swing, 0.58))
        points.update({"l_shoulder": arm[0], "l_elbow": arm[1], "l_wrist": arm[2], "nose": (0.4, 0.27),
                       "l_eye": (0.44, 0.25), "l_ear": (0.53, 0.25)})
        points.update({f"{s}_{j}": p for s, leg in zip("lr", legs) for j, p in zip(("hip", "knee", "ankle"), leg)})
        return points
    arms = [_limb((0.5 - half, 0.39), (0.5 - half - 0.06 - swing, 0.58)),
            _limb((0.5 + half, 0.39), (0.5 + half + 0.06 + swing, 0.58))]
    image_left, image_right = ({"shoulder": arm[0], "elbow": arm[1], "wrist": arm[2], "hip": leg[0], "knee": leg[1],
                                "ankle": leg[2], "ear": ear}
                               for arm, leg, ear in zip(arms, legs, ((0.39, 0.25), (0.61, 0.25))))
    if view.orientation == "front":
        image_left["eye"], image_right["eye"] = (0.46, 0.25), (0.54, 0.25)
        points["nose"] = (0.5, 0.28)
    points.update(_sides(view, image_left, image_right))
    return points


def _robot(view: View) -> dict[str, Point]:
    side = view.orientation in ("left", "right")
    half = 0.09 if side else 0.14
    legs = {"standing": (0.0, 0.0), "walking": (-0.05, 0.05), "sitting": (0.0, -0.1)}[view.pose]
    foot_y = 0.92 + min(legs[1], 0) * 0.5
    leg_points = [_limb((x, 0.66), (x + dx, foot_y)) for x, dx in ((0.44, legs[0]), (0.56, legs[1]))]
    raise_arm = {"standing": 0.0, "walking": 0.06, "sitting": 0.12}[view.pose]
    arms = [_limb((0.5 + sign * half, 0.42), (0.5 + sign * (half + 0.07), 0.55 - raise_arm)) for sign in (-1, 1)]
    points: dict[str, Point] = {"neck": (0.5, 0.37)}
    if side:
        near = arms[1]
        points.update({"l_shoulder": near[0], "l_elbow": near[1], "l_wrist": near[2], "nose": (0.42, 0.28),
                       "l_eye": (0.45, 0.25), "l_ear": (0.55, 0.26)})
        points.update({f"{s}_{j}": p for s, leg in zip("lr", leg_points) for j, p in zip(("hip", "knee", "ankle"), leg)})
        return points
    parts = []
    for arm, leg, ear in zip(arms, leg_points, ((0.41, 0.26), (0.59, 0.26))):
        parts.append({"shoulder": arm[0], "elbow": arm[1], "wrist": arm[2], "hip": leg[0], "knee": leg[1],
                      "ankle": leg[2], "ear": ear})
    if view.orientation == "front":
        parts[0]["eye"], parts[1]["eye"] = (0.46, 0.25), (0.54, 0.25)
        points["nose"] = (0.5, 0.29)
    points.update(_sides(view, parts[0], parts[1]))
    return points


_SKELETONS = {"cartoon": _cartoon, "robot": _robot}


def is_figure(spec: SubjectSpec) -> bool:
    return spec.class_noun in _SKELETONS


def keypoints(spec: SubjectSpec, view: View) -> dict[str, Point]:
    """The figure's visible keypoints in unit image coordinates (after the view's transform);
    none for a subject that is not a figure."""
    if not is_figure(spec):
        return {}
    return {name: view.transform(p) for name, p in _SKELETONS[spec.class_noun](view).items()}


def draw_pose(points: dict[str, Point], size: int, canvas: Optional[np.ndarray] = None) -> np.ndarray:
    """Limbs then joints of one skeleton on a size x size canvas (black, or `canvas`)."""
    image = Image.fromarray(canvas) if canvas is not None else Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    width = max(1, round(size / 96))
    pixel = {k: (x * size, y * size) for k, (x, y) in points.items()}
    for k, (a, b) in enumerate(LIMBS):
        if KEYPOINTS[a] in pixel and KEYPOINTS[b] in pixel:
            colour = tuple(round(LIMB_BRIGHTNESS * c) for c in COLOURS[k])
            draw.line([pixel[KEYPOINTS[a]], pixel[KEYPOINTS[b]]], fill=colour, width=width)
    radius = max(0.5, size / 128)
    for k, name in enumerate(KEYPOINTS):
        if name in pixel:
            x, y = pixel[name]
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=COLOURS[k])
    return np.asarray(image)


def render_pose(spec: SubjectSpec, view: View, size: int) -> np.ndarray:
    """The subject's pose image (H x W x 3 uint8), aligned with render_subject(spec, view, size)."""
    return draw_pose(keypoints(spec, view), size)


def write_pose_pairs(folder: Path, subjects: Sequence[SubjectSpec], scenes: Sequence[Scene], count: int, size: int,
                     seed: int) -> int:
    """ControlNet's training pairs: `count` pictures of one or two figures in a scene, each at a
    random place and scale, with the pose image, the figures' mask and a class caption ("a cartoon
    and a robot on a beach"). Returns the number written (none when no subject is a figure)."""
    figures = [s for s in subjects if is_figure(s)]
    folder.mkdir(parents=True, exist_ok=True)
    backgrounds: dict[int, np.ndarray] = {}
    entries = []
    for k in range(count if figures else 0):
        rng = random.Random(f"{seed}/pose-pair/{k}")
        chosen = [rng.choice(figures) for _ in range(rng.choice((1, 1, 2)))]
        scene = rng.choice(list(scenes))
        if scene.index not in backgrounds:
            backgrounds[scene.index] = render_scene(scene, size, seed)
        image, pose, mask = place_figures(chosen, backgrounds[scene.index].copy(), seed, rng)
        for kind, array in (("image", image), ("pose", pose), ("mask", mask.astype(np.uint8) * 255)):
            Image.fromarray(array).save(folder / f"{k:05d}_{kind}.png")
        entries.append({"image": f"{k:05d}_image.png", "pose": f"{k:05d}_pose.png", "mask": f"{k:05d}_mask.png",
                        "caption": f"{' and '.join(f'a {s.class_noun}' for s in chosen)} {scene.caption}"})
    (folder / "pairs.yaml").write_text(yaml.safe_dump({"size": size, "pairs": entries}, sort_keys=False))
    return len(entries)


def place_figures(chosen: Sequence[SubjectSpec], image: np.ndarray, seed: int, rng: random.Random
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The figures painted on `image` (a scene) side by side, one column each, each scaled to
    45-100 % of the height and shifted at random within its column: (picture, pose image, mask)."""
    size = image.shape[0]
    pose = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), bool)
    column = size // len(chosen)
    for j, spec in enumerate(chosen):
        side = max(8, round(size * rng.uniform(0.45, 1.0)))
        view = view_for(spec.class_index, rng.randrange(64), seed)
        render, silhouette = render_subject(spec, view, side)
        skeleton = render_pose(spec, view, side)
        # The render is square and the figure narrow: let its centre move within the column.
        centre = j * column + column / 2 + rng.uniform(-0.25, 0.25) * column
        left = int(round(min(max(centre - side / 2, -side / 4), size - 3 * side / 4)))
        top = size - side - rng.randrange(0, max(1, (size - side) // 2 + 1))
        _paste(image, render, silhouette, left, top)
        _paste(pose, skeleton, skeleton.any(-1), left, top)
        _paste_mask(mask, silhouette, left, top)
    return image, pose, mask


def _window(size: int, side: int, left: int, top: int) -> tuple[slice, slice, slice, slice]:
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + side, size), min(top + side, size)
    return slice(y0, y1), slice(x0, x1), slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)


def _paste(target: np.ndarray, source: np.ndarray, where: np.ndarray, left: int, top: int) -> None:
    ty, tx, sy, sx = _window(target.shape[0], source.shape[0], left, top)
    region = target[ty, tx]
    region[where[sy, sx]] = source[sy, sx][where[sy, sx]]


def _paste_mask(target: np.ndarray, source: np.ndarray, left: int, top: int) -> None:
    ty, tx, sy, sx = _window(target.shape[0], source.shape[0], left, top)
    target[ty, tx] |= source[sy, sx]
