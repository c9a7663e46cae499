"""SynthWorld background scenes: procedural places with a caption each ("on a beach")."""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from lightning_modules.synthworld.painter import Painter, ellipse_points, rect_points

SCENE_KINDS = ("beach", "forest", "city", "mountains", "room", "field", "snow", "night")


@dataclass(frozen=True)
class Scene:
    index: int
    kind: str

    @property
    def caption(self) -> str:
        return {"room": "in a room", "night": "at night", "city": "in a city",
                "forest": "in a forest"}.get(self.kind, f"on a {self.kind}" if self.kind != "mountains"
                                                  else "in the mountains")


def _gradient(size: int, top: tuple[int, int, int], bottom: tuple[int, int, int]) -> np.ndarray:
    t = np.linspace(0.0, 1.0, size)[:, None, None]
    rows = (1 - t) * np.array(top, float) + t * np.array(bottom, float)
    return np.broadcast_to(rows, (size, size, 3)).astype(np.uint8).copy()


def _jitter(rng: random.Random, color: tuple[int, int, int], amount: int = 25) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in color)  # type: ignore[return-value]


def render_scene(scene: Scene, size: int, seed: int) -> np.ndarray:
    """An RGB uint8 scene; the same (scene, seed) always gives the same pixels."""
    rng = random.Random(f"{seed}/scene/{scene.index}")
    horizon = rng.uniform(0.45, 0.65)
    sky_top, sky_bottom, ground = {
        "beach": ((90, 160, 230), (180, 220, 250), (230, 210, 150)),
        "forest": ((120, 170, 210), (190, 220, 230), (50, 110, 50)),
        "city": ((140, 160, 190), (200, 200, 210), (110, 110, 115)),
        "mountains": ((70, 120, 200), (170, 200, 240), (90, 130, 80)),
        "room": ((200, 185, 160), (225, 210, 185), (140, 95, 60)),
        "field": ((100, 170, 240), (200, 230, 250), (120, 180, 60)),
        "snow": ((170, 190, 215), (225, 230, 240), (245, 245, 250)),
        "night": ((10, 15, 45), (40, 50, 90), (30, 40, 35)),
    }[scene.kind]
    sky = _gradient(size, _jitter(rng, sky_top), _jitter(rng, sky_bottom))
    p = Painter(size)
    p.rgb[:] = sky
    p.rect(0.0, horizon, 1.0, 1.0, _jitter(rng, ground))
    if scene.kind == "beach":
        p.rect(0.0, horizon, 1.0, horizon + 0.08, _jitter(rng, (40, 110, 190)))
        p.ellipse(rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.25), 0.06, 0.06, (250, 230, 120))
    elif scene.kind == "forest":
        for _ in range(rng.randint(4, 9)):
            x, h = rng.uniform(0.0, 1.0), rng.uniform(0.2, 0.4)
            p.rect(x - 0.015, horizon - 0.05, x + 0.015, horizon + 0.05, (90, 60, 30))
            p.polygon([(x - 0.07, horizon), (x + 0.07, horizon), (x, horizon - h)], _jitter(rng, (30, 90, 40)))
    elif scene.kind == "city":
        x = 0.0
        while x < 1.0:
            w, h = rng.uniform(0.08, 0.2), rng.uniform(0.15, 0.45)
            p.polygon(rect_points(x, horizon - h, x + w, horizon), _jitter(rng, (120, 120, 135), 40))
            for wy in np.arange(horizon - h + 0.03, horizon - 0.02, 0.05):
                p.rect(x + 0.02, wy, x + w - 0.02, wy + 0.015, (240, 230, 150))
            x += w + rng.uniform(0.0, 0.04)
    elif scene.kind in ("mountains", "snow"):
        for _ in range(rng.randint(2, 4)):
            x, w, h = rng.uniform(0.0, 1.0), rng.uniform(0.2, 0.4), rng.uniform(0.15, 0.35)
            p.polygon([(x - w, horizon), (x + w, horizon), (x, horizon - h)], _jitter(rng, (110, 110, 125)))
            p.polygon([(x - w * 0.25, horizon - h * 0.75), (x + w * 0.25, horizon - h * 0.75), (x, horizon - h)],
                      (250, 250, 250))
    elif scene.kind == "room":
        p.rect(rng.uniform(0.1, 0.5), 0.15, rng.uniform(0.6, 0.9), 0.4, _jitter(rng, (150, 200, 230)))
        p.rect(0.0, horizon - 0.01, 1.0, horizon + 0.01, (90, 60, 40))
    elif scene.kind == "field":
        for _ in range(rng.randint(10, 25)):
            p.polygon(ellipse_points(rng.uniform(0, 1), rng.uniform(horizon + 0.05, 1.0), 0.012, 0.012, 8),
                      _jitter(rng, (230, 80, 80), 60))
    elif scene.kind == "night":
        for _ in range(rng.randint(15, 40)):
            x, y = rng.uniform(0, 1), rng.uniform(0, horizon - 0.05)
            p.rect(x, y, x + 0.006, y + 0.006, (250, 250, 220))
        p.ellipse(rng.uniform(0.1, 0.9), rng.uniform(0.08, 0.2), 0.05, 0.05, (240, 240, 210))
    return p.rgb


def scene_catalogue(num_scenes: int) -> list[Scene]:
    return [Scene(index=i, kind=SCENE_KINDS[i % len(SCENE_KINDS)]) for i in range(num_scenes)]
