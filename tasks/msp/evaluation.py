"""Measuring composed generations (MSP A.6, and what SynthWorld adds).

Per image of a composition with n subjects, for every subject segment j (its truth known):

    CLIP-I     cosine of CLIP's embedding of the segment's box against the subject's real images
    SAS        the same with the subject segmenter's encoder (its deepest features, averaged over
               the box): the paper's subject-aware similarity
    identity   the segmenter's dominant subject inside segment j is its truth
    missing    under `PRESENT` of segment j's pixels are judged any subject
    hybrid     another subject covers at least half as many of segment j's pixels as the truth
    complete   (per image) every segment right: identity, not missing, not hybrid

and CLIP-T, the cosine of the whole image against the global prompt (which names no identifier).
Everything is reported per subject count (n = 1, 2, 3, > 3, the paper's columns) and overall.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from lightning_modules.core.metrics.generation import (
    ImageImageSimilarity,
    TextImageSimilarity,
    clip_image_embeddings,
    clip_text_embeddings,
)
from lightning_modules.diffusion.data import tokenize
from lightning_modules.msp import Composition
from tasks.core.errors import InputDataError
from tasks.core.judges import LOCAL, Judges, as_tensor

PRESENT = 0.1          # share of a segment's pixels that must be judged a subject
HYBRID = 0.5           # another subject at this share of the truth's pixels makes a hybrid


def count_label(n: int) -> str:
    """The paper's columns n = 1, 2, 3 and > 3, as metric names MLflow accepts."""
    return f"n{n}" if n <= 3 else "n4plus"


def _box(mask: np.ndarray) -> tuple[slice, slice]:
    rows, cols = np.nonzero(mask)
    return slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)


@torch.no_grad()
def clip_embed(judges: Judges, images: Sequence[np.ndarray]) -> torch.Tensor:
    return clip_image_embeddings(judges.clip, judges.clip_processor(images=list(images), return_tensors="pt")
                                 ["pixel_values"])


@torch.no_grad()
def sas_embed(judges: Judges, images: Sequence[np.ndarray]) -> torch.Tensor:
    """The segmenter encoder's deepest features, averaged over the image (SAS)."""
    size = judges.segmenter_size
    pixels = torch.stack([F.interpolate(torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1)[None].float()
                                        / 255.0, size=(size, size), mode="bilinear", align_corners=False)[0]
                          for i in images])
    return judges.segmenter.encode(pixels)[-1].mean(dim=(2, 3))


@torch.no_grad()
def judge_segments(judges: Judges, composition: Composition, images: np.ndarray) -> list[list[dict]]:
    """Per image, per subject segment: its truth, the dominant subject, missing, hybrid."""
    names = judges.segmenter.class_names
    size = images.shape[1]
    labels = judges.segmenter(as_tensor(images, judges.segmenter_size)).argmax(1)
    if labels.shape[-1] != size:
        labels = F.interpolate(labels[:, None].float(), size=(size, size), mode="nearest")[:, 0].long()
    result = []
    for k in range(len(images)):
        per_segment = []
        for j in composition.subject_segments:
            truth = composition.segments[j].subject
            inside = labels[k][torch.from_numpy(composition.masks[j])]
            counts = torch.bincount(inside, minlength=len(names))[1:]        # subjects only
            subject_pixels = int(counts.sum())
            dominant = names[1 + int(counts.argmax())] if subject_pixels else None
            truth_pixels = int(counts[names.index(truth) - 1]) if truth in names else 0
            others = counts.clone()
            if truth in names:
                others[names.index(truth) - 1] = 0
            missing = subject_pixels < PRESENT * inside.numel()
            hybrid = truth_pixels > 0 and int(others.max()) >= HYBRID * truth_pixels
            per_segment.append({"truth": truth, "dominant": dominant, "identity": dominant == truth,
                                "missing": missing, "hybrid": hybrid})
        result.append(per_segment)
    return result


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@torch.no_grad()
def evaluate_compositions(judges: Judges, compositions: Sequence[Composition], images: dict[str, np.ndarray],
                          references: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every measure above for `images[composition name]` (S x H x W x 3 uint8 each)."""
    truths = sorted({s.subject for c in compositions for s in c.segments if s.subject})
    missing_refs = [t for t in truths if t not in references or not len(references[t])]
    if missing_refs:
        raise InputDataError(f"no reference images of subject {missing_refs[0]!r}: CLIP-I and SAS compare "
                             "against them")
    unknown = [t for t in truths if t not in judges.segmenter.class_names]
    if unknown:
        raise InputDataError(f"subject {unknown[0]!r} of a composition is not one the segmenter knows "
                             f"({', '.join(judges.segmenter.class_names[1:])})")
    ref_clip = {t: clip_embed(judges, references[t]) for t in truths}
    ref_sas = {t: sas_embed(judges, references[t]) for t in truths}

    groups: dict[str, dict[str, Any]] = defaultdict(lambda: {
        "clip_i": ImageImageSimilarity(**LOCAL), "sas": ImageImageSimilarity(**LOCAL),
        "clip_t": TextImageSimilarity(**LOCAL), "segments": [], "images": []})
    for comp in compositions:
        pictures = images[comp.name]
        label = count_label(len(comp.subject_segments))
        for key in (label, "all"):
            group = groups[key]
            text = clip_text_embeddings(judges.clip, tokenize(judges.clip_tokenizer, [comp.global_prompt]))
            group["clip_t"].update(clip_embed(judges, pictures), text.expand(len(pictures), -1))
        judged = judge_segments(judges, comp, pictures)
        for j in comp.subject_segments:
            rows, cols = _box(comp.masks[j])
            crops = [p[rows, cols] for p in pictures]
            truth = comp.segments[j].subject
            clip_crops, sas_crops = clip_embed(judges, crops), sas_embed(judges, crops)
            for key in (label, "all"):
                groups[key]["clip_i"].update(clip_crops, ref_clip[truth])
                groups[key]["sas"].update(sas_crops, ref_sas[truth])
        for per_segment in judged:
            complete = all(s["identity"] and not s["missing"] and not s["hybrid"] for s in per_segment)
            for key in (label, "all"):
                groups[key]["segments"] += per_segment
                groups[key]["images"].append(complete)

    def summary(group: dict[str, Any]) -> dict[str, float]:
        segments = group["segments"]
        return {"images": len(group["images"]), "clip_i": float(group["clip_i"].compute()),
                "clip_t": float(group["clip_t"].compute()), "sas": float(group["sas"].compute()),
                "identity_accuracy": _mean([float(s["identity"]) for s in segments]),
                "missing": _mean([float(s["missing"]) for s in segments]),
                "hybrid": _mean([float(s["hybrid"]) for s in segments]),
                "complete": _mean([float(c) for c in group["images"]])}

    order = sorted((k for k in groups if k != "all"), key=lambda k: (k == "n4plus", k))
    return {"by_count": {k: summary(groups[k]) for k in order}, **summary(groups["all"])}
