"""How a row's directions edit faces: CLIP similarity to the prompt, locality and edit accuracy on a
fixed set of evaluation seeds (and CLIP similarity on the training seed of single-seed rows), and
the edit strips for `dvc plots` and MLflow."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lightning_modules.core.metrics import TextImageSimilarity
from lightning_modules.core.visual import enlarge, image_grid
from lightning_modules.eclipsed.clip import ClipEmbedder
from lightning_modules.eclipsed.directions import PartMask
from lightning_modules.eclipsed.editing import edit_strip, render, seed_codes, to_uint8
from lightning_modules.eclipsed.metrics import EditAccuracy, EditLocality, prompted_attribute
from lightning_modules.judges.faces import FaceAttributeClassifier

CHUNK = 16          # evaluation images per forward pass
STRIP_SCALE = 2     # pixels per generator pixel in the strips


def _number(value: torch.Tensor) -> Optional[float]:
    value = float(value)
    return None if value != value else round(value, 5)


@torch.no_grad()
def clip_similarity(generator, clip: ClipEmbedder, text: torch.Tensor, ws: torch.Tensor,
                    edits: Sequence = ()) -> Optional[float]:
    metric = TextImageSimilarity(sync_on_compute=False)
    for start in range(0, ws.shape[0], CHUNK):
        images = clip.images(render(generator, ws[start:start + CHUNK], edits))
        metric.update(images, text.expand(images.shape[0], -1))
    return _number(metric.compute())


@torch.no_grad()
def evaluate_direction(generator, clip: ClipEmbedder, mask: PartMask, classifier: Optional[FaceAttributeClassifier],
                       direction: torch.Tensor, prompt: str, seeds: Sequence[int], alpha: float,
                       truncation: float, train_seed: Optional[int]) -> dict:
    """One direction at one alpha: CLIP similarity (edits; with a `train_seed`, also the unedited
    faces and that seed's edit, for reference), locality (pixels; the part as the segmenter sees it
    on the original) and edit accuracy."""
    text = clip.texts([prompt])
    ws = seed_codes(generator, seeds, truncation)
    edit = [(direction, alpha)]
    locality = EditLocality(sync_on_compute=False)
    wanted = prompted_attribute(prompt, classifier.attributes) if classifier is not None else None
    accuracy = EditAccuracy(wanted[0], classifier.attributes[wanted[0]].index(wanted[1]), list(classifier.attributes),
                            sync_on_compute=False) if wanted else None
    for start in range(0, ws.shape[0], CHUNK):
        chunk = ws[start:start + CHUNK]
        original, edited = render(generator, chunk), render(generator, chunk, edit)
        locality.update(original, edited, mask(original))
        if accuracy is not None:
            accuracy.update(classifier.predict((original + 1) / 2), classifier.predict((edited + 1) / 2))
    result = {"clip_similarity": clip_similarity(generator, clip, text, ws, edit)}
    if train_seed is not None:
        result["clip_similarity_unedited"] = clip_similarity(generator, clip, text, ws)
        result["clip_similarity_train_seed"] = clip_similarity(
            generator, clip, text, seed_codes(generator, [train_seed], truncation), edit)
    result.update({**{k: _number(v) for k, v in locality.compute().items()},
                   "prompted_attribute": "=".join(wanted) if wanted else None})
    if accuracy is not None:
        result.update({k: _number(v) for k, v in accuracy.compute().items()})
    else:
        result["edit_accuracy"] = None
    return result


# What the alpha curve keeps of each evaluation: the edit's strength against what it breaks.
CURVE_KEYS = ("clip_similarity", "locality", "edit_accuracy", "attribute", "others_kept", "identity_kept")


def alpha_curve(generator, clip: ClipEmbedder, mask: PartMask, classifier: Optional[FaceAttributeClassifier],
                directions: Sequence[torch.Tensor], prompt: str, seeds: Sequence[int], alphas: Sequence[float],
                truncation: float) -> list[dict]:
    """The row's figures at each alpha (the mean over its directions), on the evaluation faces:
    where the prompted attribute appears as alpha grows, and where the other attributes and the
    identity give way. Edit accuracy at a single alpha cannot say which of the two failed."""
    curve = []
    for alpha in alphas:
        summary = summarize([evaluate_direction(generator, clip, mask, classifier, d, prompt, seeds, alpha, truncation,
                                                train_seed=None) for d in directions])
        curve.append({"alpha": alpha, **{key: summary.get(key) for key in CURVE_KEYS}})
    return curve


def write_alpha_curve(curve: list[dict], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["alpha", *CURVE_KEYS])
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in point.items()} for point in curve)


def alpha_curve_figure(curve: list[dict], title: str) -> Figure:
    """Edit accuracy and its three parts, and locality, against alpha (for MLflow; `dvc plots`
    draws the CSV)."""
    figure = Figure(figsize=(5, 3.2), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    alphas = [point["alpha"] for point in curve]
    for key in CURVE_KEYS[1:]:
        values = [point[key] for point in curve]
        if any(v is not None for v in values):
            axes.plot(alphas, [float("nan") if v is None else v for v in values], marker="o", label=key)
    axes.set_xlabel("alpha")
    axes.set_ylim(-0.02, max(1.02, max((p["locality"] or 0) for p in curve) + 0.05))
    axes.set_title(title, fontsize=9)
    axes.legend(fontsize=7)
    figure.tight_layout()
    return figure


def summarize(per_direction: list[dict]) -> dict:
    """The row's figures: the mean over its directions (K = 1: the direction's own)."""
    summary = {}
    for key in per_direction[0]:
        values = [d[key] for d in per_direction]
        numbers = [v for v in values if isinstance(v, (int, float))]
        summary[key] = round(sum(numbers) / len(numbers), 5) if numbers and len(numbers) == len(values) else values[0]
    return summary


@torch.no_grad()
def strip_picture(generator, directions: Sequence[torch.Tensor], seeds: Sequence[int], alphas: Sequence[float],
                  truncation: float, base: Sequence = ()) -> np.ndarray:
    """Rows: seeds (one block per direction); columns: alphas. After `base` edits when given."""
    ws = seed_codes(generator, seeds, truncation)
    tiles = [tile for direction in directions
             for row in edit_strip(generator, ws, direction, alphas, base) for tile in row]
    return enlarge(image_grid(tiles, columns=len(alphas)), STRIP_SCALE)


@torch.no_grad()
def sequential_picture(generator, edits: Sequence[tuple[torch.Tensor, float]], seeds: Sequence[int],
                       truncation: float) -> np.ndarray:
    """Rows: seeds; columns: the original, then each edit added to the ones before it."""
    ws = seed_codes(generator, seeds, truncation)
    columns = [to_uint8(render(generator, ws, edits[:n])) for n in range(len(edits) + 1)]
    tiles = [columns[c][r] for r in range(len(seeds)) for c in range(len(columns))]
    return enlarge(image_grid(tiles, columns=len(columns)), STRIP_SCALE)
