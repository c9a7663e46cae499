"""Augmentation throughput: subjectlab's SubjectAugmenter against plain albumentations.

Both do MSP A.1 on the same SynthWorld subjects and scenes: zoom the subject to 0.4-0.5 of
the canvas, crop it to 0.65-0.95 with p = 0.1, translate it at random on the square canvas,
composite onto a scene. The peer is the idiomatic single albumentations Compose
(RandomCropFromBorders + LongestMaxSize + PadIfNeeded(position="random")); ours draws each
sample's parameters from its own seed (order-free determinism) and keeps the subject scale
exact under crops. Both share the steps around the augmentation (tight crop of the subject,
scene resize, `composite`), so the ratio measures only how each drives albumentations.

Timing on a shared 2-core machine: each round runs both over the same samples in
alternating blocks of `--block` samples, so load from other processes falls on both alike.
images/s is the best round of each; the ratio is the median over rounds of the paired
(same round) ratios, which is steadier than the ratio of two best rounds.
Run: python benchmarks/augment_throughput.py [--samples N] [--canvas C] [--repeats R] [--block B]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import albumentations as A
import cv2
import numpy as np

from lightning_modules.augmentation import AugmentParams, SubjectAugmenter, composite, tight_crop
from lightning_modules.synthworld import render_scene, render_subject, scene_catalogue, subject_catalogue, view_for


def plain_albumentations(canvas: int, seed: int) -> A.Compose:
    sizes = list(range(round(0.4 * canvas), round(0.5 * canvas) + 1))
    return A.Compose([
        A.RandomCropFromBorders(crop_left=0.175, crop_right=0.175, crop_top=0.175, crop_bottom=0.175, p=0.1),
        A.LongestMaxSize(max_size=sizes, interpolation=cv2.INTER_AREA, mask_interpolation=cv2.INTER_NEAREST),
        A.PadIfNeeded(canvas, canvas, position="random", border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
    ], seed=seed)


def paired_rounds(runs: dict[str, Callable[[int, int], None]], samples: int, repeats: int,
                  block: int) -> list[dict[str, float]]:
    """Seconds per round for each run over samples [0, samples), interleaved block by block."""
    names = list(runs)
    rounds = []
    for r in range(repeats):
        seconds = dict.fromkeys(names, 0.0)
        for b, lo in enumerate(range(0, samples, block)):
            hi = min(samples, lo + block)
            for name in (names if (r + b) % 2 == 0 else names[::-1]):  # neither always goes first
                start = time.perf_counter()
                runs[name](lo, hi)
                seconds[name] += time.perf_counter() - start
        rounds.append(seconds)
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--canvas", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block", type=int, default=50)
    args = parser.parse_args()

    subjects = [render_subject(s, view_for(s.class_index, k, 0), 256) for s in subject_catalogue(11) for k in range(11)]
    scenes = [render_scene(s, 256, 0) for s in scene_catalogue(100)]
    ours = SubjectAugmenter(AugmentParams(canvas_size=args.canvas), seed=0)
    peer = plain_albumentations(args.canvas, seed=0)

    def run_ours(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            image, mask = subjects[i % len(subjects)]
            ours(image, mask, scenes[i % len(scenes)], key=(i,))

    def run_peer(lo: int, hi: int) -> None:
        for i in range(lo, hi):
            image, mask = tight_crop(*subjects[i % len(subjects)])
            out = peer(image=image, mask=mask.astype(np.uint8))
            canvas = cv2.resize(scenes[i % len(scenes)], (args.canvas, args.canvas), interpolation=cv2.INTER_AREA)
            composite(canvas, out["image"], out["mask"])

    runs = {"subjectlab": run_ours, "albumentations": run_peer}
    for fn in runs.values():
        fn(0, args.samples)  # warm-up (imports, caches)
    rounds = paired_rounds(runs, args.samples, args.repeats, args.block)
    for name in runs:
        rate = args.samples / min(r[name] for r in rounds)
        print(f"{name:15s} {rate:8.1f} images/s  (canvas {args.canvas}, {args.samples} samples, best of {args.repeats})")
    ratios = [r["albumentations"] / r["subjectlab"] for r in rounds]
    print(f"ratio subjectlab / albumentations: {statistics.median(ratios):.2f}  "
          f"(median of {len(ratios)} paired rounds; range {min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
