"""Does a CLIP match pictures to their captions? Caption retrieval on images it did not train on.

Top-1 caption retrieval: for each image, the most similar caption among the distinct captions
of the measured set; the share of images whose best caption is their own. On training images
this would reward memorising them, so the pretraining stage hands over held-out ones.
"""

from __future__ import annotations

from typing import Optional

import torch
from transformers import CLIPModel

from lightning_modules.diffusion.data import CaptionedImages, tokenize
from lightning_modules.core.metrics import clip_image_embeddings, clip_text_embeddings


@torch.no_grad()
def caption_retrieval_top1(clip: CLIPModel, images: CaptionedImages, count: int = 256) -> Optional[float]:
    """Share of (at most `count`, evenly spread) images whose most similar caption is their
    own; None for no images."""
    if not len(images):
        return None
    training = clip.training
    clip.eval()
    try:
        picks = range(0, len(images), -(-len(images) // count))   # ceil: at most `count`
        captions = [images.items[i].caption for i in picks]
        distinct = sorted(set(captions))
        text = clip_text_embeddings(clip, tokenize(images.tokenizer, distinct))
        image = clip_image_embeddings(clip, torch.stack([images[i]["pixel_values"] for i in picks]))
        best = (image @ text.T).argmax(1)
        return float(sum(distinct[j] == c for j, c in zip(best.tolist(), captions)) / len(captions))
    finally:
        clip.train(training)
