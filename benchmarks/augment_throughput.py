"""Augmentation throughput: subjectlab's SubjectAugmenter against plain albumentations.

Both do MSP A.1 on the same SynthWorld subjects and scenes: zoom the subject to 0.4-0.5 of
the canvas, crop it to 0.65-0.95 with p = 0.1, translate it at random on the square canvas,
composite onto a scene. The peer is the idiomatic single albumentations Compose
(RandomCropFromBorders + LongestMaxSize + PadIfNeeded(position="random")); ours draws each
sample's parameters from its own seed (order-free determinism) and keeps the subject scale
exact under crops. Run: python benchmarks/augment_throughput.py [--samples N] [--canvas C]
"""

from __future__ import annotations

import argparse
import time

import albumentations as A
import cv2
import numpy as np

from lightning_modules.augmentation import AugmentParams, SubjectAugmenter, tight_crop
from lightning_modules.synthworld import render_scene, render_subject, scene_catalogue, subject_catalogue, view_for


def plain_albumentations(canvas: int, seed: int) -> A.Compose:
    sizes = list(range(round(0.4 * canvas), round(0.5 * canvas) + 1))
    return A.Compose([
        A.RandomCropFromBorders(crop_left=0.175, crop_right=0.175, crop_top=0.175, crop_bottom=0.175, p=0.1),
        A.LongestMaxSize(max_size=sizes, interpolation=cv2.INTER_AREA, mask_interpolation=cv2.INTER_NEAREST),
        A.PadIfNeeded(canvas, canvas, position="random", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
    ], seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--canvas", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    subjects = [render_subject(s, view_for(s.class_index, k, 0), 256) for s in subject_catalogue(11) for k in range(11)]
    scenes = [render_scene(s, 256, 0) for s in scene_catalogue(100)]
    ours = SubjectAugmenter(AugmentParams(canvas_size=args.canvas), seed=0)
    peer = plain_albumentations(args.canvas, seed=0)

    def run_ours() -> None:
        for i in range(args.samples):
            image, mask = subjects[i % len(subjects)]
            ours(image, mask, scenes[i % len(scenes)], key=(i,))

    def run_peer() -> None:
        for i in range(args.samples):
            image, mask = tight_crop(*subjects[i % len(subjects)])
            out = peer(image=image, mask=mask.astype(np.uint8))
            canvas = cv2.resize(scenes[i % len(scenes)], (args.canvas, args.canvas), interpolation=cv2.INTER_AREA)
            placed = out["mask"].astype(bool)
            canvas[placed] = out["image"][placed]

    best = {}
    for name, fn in (("subjectlab", run_ours), ("albumentations", run_peer)):
        fn()  # warm-up (imports, caches)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        best[name] = args.samples / min(times)
        print(f"{name:15s} {best[name]:8.1f} images/s  (canvas {args.canvas}, {args.samples} samples, best of {args.repeats})")
    print(f"ratio subjectlab / albumentations: {best['subjectlab'] / best['albumentations']:.2f}")


if __name__ == "__main__":
    main()
