"""Does an image embedding tell subjects apart? What the DINO metric relies on, measured on
real images of known subjects (never generated ones).

Two plain functions over the cosine matrix of a set of images and their subject names:
- top-1 subject retrieval: for each image, is the most similar *other* image of its subject?
- the cosine gap: mean cosine of same-subject pairs minus that of different-subject pairs
  (DreamBooth's DINO score is such a mean cosine, so the gap is how far it can separate a
  faithful subject from another one).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from transformers import ViTModel

from lightning_modules.diffusion.dino import cls_token


@torch.no_grad()
def cls_embeddings(backbone: ViTModel, pixel_values: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    """L2-normalised [CLS] embeddings (N x D) in eval mode; the backbone's mode is kept."""
    training = backbone.training
    backbone.eval()
    try:
        device = next(backbone.parameters()).device
        chunks = [cls_token(backbone, pixel_values[i:i + batch_size].to(device)).float().cpu()
                  for i in range(0, len(pixel_values), batch_size)]
    finally:
        backbone.train(training)
    return F.normalize(torch.cat(chunks), dim=-1)


def subject_retrieval(embeddings: torch.Tensor, subjects: Sequence[str]) -> dict[str, Optional[float]]:
    """top1 (over images whose subject has another image), mean same- and different-subject
    cosines and their gap; None where no such pair exists."""
    names = sorted(set(subjects))
    labels = torch.tensor([names.index(s) for s in subjects])
    similarity = embeddings @ embeddings.T
    other = ~torch.eye(len(labels), dtype=torch.bool)
    same = (labels[:, None] == labels[None, :]) & other
    different = labels[:, None] != labels[None, :]
    queries = same.any(1)
    nearest = similarity.masked_fill(~other, float("-inf")).argmax(1)
    top1 = (labels[nearest] == labels)[queries].float().mean().item() if queries.any() else None
    same_cosine = similarity[same].mean().item() if same.any() else None
    different_cosine = similarity[different].mean().item() if different.any() else None
    gap = None if same_cosine is None or different_cosine is None else same_cosine - different_cosine
    return {"top1": top1, "same_subject_cosine": same_cosine, "different_subject_cosine": different_cosine,
            "cosine_gap": gap}
