"""Which photographs SynthWorld persons holds: a training split and three test protocols.

Train and test identities are disjoint, as in every re-ID benchmark. The test identities
are evaluated under the protocols of DeSKPro's tables:

- PRCC (Yang et al.): cameras A and B see a person in the same clothes, camera C in
  other clothes. The gallery is camera A; the same-clothes query is camera B, the
  cross-clothes query camera C.
- Celeb-reID-light: every image of a person shows different clothes (a different
  occasion, hence a different camera id); one image per person is the query.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lightning_modules.synthworld.persons import VIEWS, Shot, shot_for

PROTOCOLS = {
    "prcc_cross": "PRCC cross-clothes: query = camera C (outfit 2), gallery = camera A (outfit 1)",
    "prcc_same": "PRCC same-clothes: query = camera B (outfit 1), gallery = camera A (outfit 1)",
    "celeb_light": "Celeb-reID-light: each image of a person in different clothes (camera = outfit); "
                   "one query per person, the rest is the gallery",
}
TRAIN = "train"
PRCC_CAMERAS = {"A": 1, "B": 2, "C": 3}
# PRCC's cameras A and B mostly see people from the front or side; C from anywhere.
PRCC_VIEW_WEIGHTS = {"A": (0.6, 0.2, 0.0, 0.2), "B": (0.3, 0.35, 0.0, 0.35), "C": (0.25, 0.25, 0.25, 0.25)}
# Celebrity photographs are mostly taken from the front.
CELEB_VIEW_WEIGHTS = (0.55, 0.15, 0.15, 0.15)


@dataclass(frozen=True)
class PlannedImage:
    pid: int
    outfit: int                         # 1-based
    camera: int                         # 1-based
    shot: Shot
    places: tuple[tuple[str, str], ...]  # (protocol or "train", role: train | query | gallery)


def train_images(pids: range, outfits: int, cameras: int, seed: int) -> list[PlannedImage]:
    """One image per identity, outfit and camera; camera k always sees the same view."""
    return [
        PlannedImage(pid, outfit, camera,
                     shot_for(seed, TRAIN, pid, outfit, camera, 0, views=(VIEWS[(camera - 1) % len(VIEWS)],)),
                     ((TRAIN, "train"),))
        for pid in pids for outfit in range(1, outfits + 1) for camera in range(1, cameras + 1)
    ]


def prcc_images(pids: range, per_camera: int, seed: int) -> list[PlannedImage]:
    places = {"A": (("prcc_cross", "gallery"), ("prcc_same", "gallery")),
              "B": (("prcc_same", "query"),), "C": (("prcc_cross", "query"),)}
    images = []
    for pid in pids:
        for name, camera in PRCC_CAMERAS.items():
            outfit = 2 if name == "C" else 1
            for index in range(per_camera):
                shot = shot_for(seed, "prcc", pid, outfit, camera, index, VIEWS, PRCC_VIEW_WEIGHTS[name])
                images.append(PlannedImage(pid, outfit, camera, shot, places[name]))
    return images


def celeb_light_images(pids: range, outfits: int, seed: int) -> list[PlannedImage]:
    images = []
    for pid in pids:
        query = random.Random(f"{seed}/celeb_light/query/{pid}").randrange(outfits) + 1
        for outfit in range(1, outfits + 1):
            shot = shot_for(seed, "celeb_light", pid, outfit, outfit, 0, VIEWS, CELEB_VIEW_WEIGHTS)
            role = "query" if outfit == query else "gallery"
            images.append(PlannedImage(pid, outfit, outfit, shot, (("celeb_light", role),)))
    return images


def plan_persons(num_train_ids: int, num_test_ids: int, train_outfits: int, cameras: int,
                 prcc_images_per_camera: int, celeb_outfits: int, seed: int) -> list[PlannedImage]:
    """Every image of the dataset: train ids 1..num_train_ids, then the test ids."""
    train = range(1, num_train_ids + 1)
    test = range(num_train_ids + 1, num_train_ids + num_test_ids + 1)
    return (train_images(train, train_outfits, cameras, seed)
            + prcc_images(test, prcc_images_per_camera, seed)
            + celeb_light_images(test, celeb_outfits, seed))


def outfits_needed(image_plan: list[PlannedImage]) -> dict[int, int]:
    """pid -> how many outfits its images use."""
    needed: dict[int, int] = {}
    for image in image_plan:
        needed[image.pid] = max(needed.get(image.pid, 0), image.outfit)
    return needed
