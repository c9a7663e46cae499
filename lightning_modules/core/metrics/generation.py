"""Metrics of generated images, as torchmetrics `Metric`s: their sums sync across DDP ranks.

Each metric takes embeddings or logits, never a model, so that one metric serves a tiny CLIP
and a real ViT-L/14 alike; the small helpers below turn models into embeddings.

- CLIP-I and DINO (DreamBooth, sec. 4.1): the mean cosine similarity over all pairs of a
  generated image and a real reference image of the same subject (`ImageImageSimilarity`).
- CLIP-T (DreamBooth; the CLIPScore of Hessel et al. without its scaling): the mean cosine
  between an image's embedding and its prompt's (`TextImageSimilarity`). torchmetrics'
  `CLIPScore` reports 100 x max(that mean, 0).
- Identity accuracy (SynthWorld's exact judge): the share of "a <id> <class>" generations in
  which the subject segmenter finds subject <id> most (`IdentityAccuracy`, `dominant_subject`).
- Prompt accuracy (GenEval-style detector checks): the share of generations a classifier
  trained on real renders assigns to the prompted class and scene (`PromptAccuracy`).

Every state is a sum (of similarities, of hits, of counts) reduced with "sum": a mean over the
union of what all ranks saw, whatever the split of items between them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional, Sequence

import torch
import torch.nn.functional as F
from torchmetrics import Metric

if TYPE_CHECKING:  # transformers is imported by the callers that have such models, not here
    from transformers import CLIPModel, ViTModel

# Sums of many cosines: float64 keeps a mean over millions of pairs exact to float32 precision.
SUM_DTYPE = torch.float64


def _pooled(output) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected feature.
    return output if torch.is_tensor(output) else output.pooler_output


def clip_text_embeddings(clip: "CLIPModel", input_ids: torch.Tensor,
                         attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """L2-normalised projected text features (N x D) of tokenized prompts."""
    return F.normalize(_pooled(clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)), dim=-1)


def clip_image_embeddings(clip: "CLIPModel", pixel_values: torch.Tensor) -> torch.Tensor:
    """L2-normalised projected image features (N x D) of CLIP-preprocessed pixels."""
    return F.normalize(_pooled(clip.get_image_features(pixel_values=pixel_values)), dim=-1)


def dino_cls_embeddings(vit: "ViTModel", pixel_values: torch.Tensor) -> torch.Tensor:
    """The [CLS] token of the last layer (N x D), the feature DreamBooth's DINO metric compares."""
    return vit(pixel_values=pixel_values).last_hidden_state[:, 0]


def _embeddings(value: torch.Tensor, name: str) -> torch.Tensor:
    if value.ndim != 2:
        raise ValueError(f"{name}: expected N x D embeddings, got shape {tuple(value.shape)}")
    return F.normalize(value.detach().to(SUM_DTYPE), dim=-1)


class _MeanCosine(Metric):
    """A mean of cosine similarities, kept as their sum and how many were summed."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("similarity_sum", torch.tensor(0.0, dtype=SUM_DTYPE), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def compute(self) -> torch.Tensor:
        return self.similarity_sum / self.count if self.count > 0 else torch.tensor(math.nan, dtype=SUM_DTYPE)


class ImageImageSimilarity(_MeanCosine):
    """CLIP-I or DINO: the mean cosine similarity over every (generated, reference) pair given to
    `update`. Call it once per subject with that subject's generations and its real images."""

    def update(self, generated: torch.Tensor, references: torch.Tensor) -> None:
        """generated: N x D embeddings; references: M x D embeddings of the same subject."""
        generated, references = _embeddings(generated, "generated"), _embeddings(references, "references")
        if generated.shape[1] != references.shape[1]:
            raise ValueError(f"embedding sizes differ: generated {generated.shape[1]}, "
                             f"references {references.shape[1]}")
        # sum over all pairs of g.r = (sum of g) . (sum of r): no N x M matrix is needed
        self.similarity_sum += generated.sum(0) @ references.sum(0)
        self.count += generated.shape[0] * references.shape[0]


class TextImageSimilarity(_MeanCosine):
    """CLIP-T: the mean cosine between each image's embedding and its own prompt's embedding."""

    def update(self, image_embeddings: torch.Tensor, text_embeddings: torch.Tensor) -> None:
        """Row i of each (N x D) belongs to image i and the prompt it was generated from."""
        images = _embeddings(image_embeddings, "image_embeddings")
        texts = _embeddings(text_embeddings, "text_embeddings")
        if images.shape != texts.shape:
            raise ValueError(f"one prompt embedding per image: got {tuple(images.shape)} and {tuple(texts.shape)}")
        self.similarity_sum += (images * texts).sum()
        self.count += images.shape[0]


def dominant_subject(segmenter_logits: torch.Tensor) -> torch.Tensor:
    """The subject a segmenter sees most in each image: N x C x H x W logits (class 0 is the
    background, class k the subject k - 1) -> N subject indices, -1 where no pixel is a subject
    (which no target matches, so it counts as wrong). Ties go to the lower index."""
    if segmenter_logits.ndim != 4 or segmenter_logits.shape[1] < 2:
        raise ValueError(f"expected N x C x H x W logits with C >= 2, got shape {tuple(segmenter_logits.shape)}")
    labels = segmenter_logits.argmax(1).flatten(1)                               # N x HW
    # pixels per class, by scatter: a one-hot N x HW x C would hold 8 bytes per pixel and class
    counts = torch.zeros(labels.shape[0], segmenter_logits.shape[1], dtype=torch.long, device=labels.device)
    counts = counts.scatter_add_(1, labels, torch.ones_like(labels))[:, 1:]      # N x subjects
    return torch.where(counts.sum(1) > 0, counts.argmax(1), torch.full_like(counts[:, 0], -1))


class IdentityAccuracy(Metric):
    """The share of "a <id> <class>" generations whose dominant subject is <id>: overall and per
    subject (NaN for a subject no generation was prompted with)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, num_subjects: int, subject_names: Optional[Sequence[str]] = None, **kwargs):
        super().__init__(**kwargs)
        names = list(subject_names) if subject_names is not None else [str(i) for i in range(num_subjects)]
        if len(names) != num_subjects:
            raise ValueError(f"{num_subjects} subjects but {len(names)} subject names")
        self.num_subjects, self.subject_names = num_subjects, names
        self.add_state("correct", torch.zeros(num_subjects, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(num_subjects, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: torch.Tensor, target: torch.Tensor) -> None:
        """predicted: N subject indices (-1 = none, e.g. from `dominant_subject`); target: the N
        prompted subjects' indices."""
        predicted, target = predicted.reshape(-1).long(), target.reshape(-1).long()
        if predicted.shape != target.shape:
            raise ValueError(f"{predicted.numel()} predictions for {target.numel()} targets")
        if target.numel() and (target.min() < 0 or target.max() >= self.num_subjects):
            raise ValueError(f"target subject indices must be in [0, {self.num_subjects}), got {target.tolist()}")
        self.total += torch.bincount(target, minlength=self.num_subjects)
        self.correct += torch.bincount(target[predicted == target], minlength=self.num_subjects)

    def compute(self) -> dict:
        correct, total = self.correct.to(SUM_DTYPE), self.total.to(SUM_DTYPE)
        per_subject = torch.where(total > 0, correct / total.clamp(min=1), torch.full_like(total, math.nan))
        overall = correct.sum() / total.sum() if total.sum() > 0 else torch.tensor(math.nan, dtype=SUM_DTYPE)
        return {"overall": overall, "per_subject": dict(zip(self.subject_names, per_subject.unbind()))}


class PromptAccuracy(Metric):
    """The share of generations whose class and scene a classifier finds as prompted.

    `scene` counts only the prompts that name a scene (scene target -1 = none named); `both` is
    the share of all generations that pass every check their prompt implies (the class, and the
    scene where one is named), GenEval's per-image pass."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("class_correct", "scene_correct", "scene_total", "both_correct", "total"):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, class_logits: torch.Tensor, scene_logits: torch.Tensor, class_target: torch.Tensor,
               scene_target: torch.Tensor) -> None:
        class_target, scene_target = class_target.reshape(-1).long(), scene_target.reshape(-1).long()
        n = class_logits.shape[0]
        if not (scene_logits.shape[0] == class_target.numel() == scene_target.numel() == n):
            raise ValueError("class logits, scene logits and both targets must have one row per generation")
        class_hit = class_logits.argmax(1) == class_target
        named = scene_target >= 0
        scene_hit = (scene_logits.argmax(1) == scene_target) & named
        self.class_correct += class_hit.sum()
        self.scene_correct += scene_hit.sum()
        self.scene_total += named.sum()
        self.both_correct += (class_hit & (scene_hit | ~named)).sum()
        self.total += n

    def compute(self) -> dict[str, torch.Tensor]:
        def share(hits: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
            return hits.to(SUM_DTYPE) / count if count > 0 else torch.tensor(math.nan, dtype=SUM_DTYPE)

        return {"class": share(self.class_correct, self.total), "scene": share(self.scene_correct, self.scene_total),
                "both": share(self.both_correct, self.total)}
