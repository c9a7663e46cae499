"""Measuring generated images: CLIP-I, CLIP-T, DINO and SynthWorld's exact judges.

    CLIP-I, DINO   mean cosine over (generated, real reference) pairs of a subject (DreamBooth)
    CLIP-T         mean cosine between an image and its prompt with the identifier left out
                   ("a dog on a beach"): CLIP has never seen the identifier token
    identity       share of "a <id> <class>" images whose dominant subject, by the segmenter, is <id>
    prompt         share of images the classifier assigns to the prompted class / scene

The judges are the models the pipeline trained on real renders (never on generated images):
the subject segmenter (train_segmenter), the class / scene classifier (train_classifier),
the CLIP and DINO of the zoo (pretrained by pretrain_clip / pretrain_dino, or real ones).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lightning_modules.core.metrics.generation import (
    IdentityAccuracy,
    ImageImageSimilarity,
    PromptAccuracy,
    TextImageSimilarity,
    clip_image_embeddings,
    clip_text_embeddings,
    dino_cls_embeddings,
    dominant_subject,
)
from lightning_modules.diffusion.prompt_sets import PromptItem
from lightning_modules.diffusion.data import tokenize
from tasks.core.errors import InputDataError
from tasks.core.judges import BATCH, LOCAL, Judges, as_tensor


def _batches(images: np.ndarray) -> list[np.ndarray]:
    return [images[i:i + BATCH] for i in range(0, len(images), BATCH)]


@torch.no_grad()
def image_embeddings(judges: Judges, images: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(CLIP, DINO) embeddings of uint8 N x H x W x 3 images, through each model's processor."""
    clip, dino = [], []
    for batch in _batches(images):
        pictures = list(batch)
        clip.append(clip_image_embeddings(judges.clip, judges.clip_processor(images=pictures, return_tensors="pt")
                                          ["pixel_values"]))
        dino.append(dino_cls_embeddings(judges.dino, judges.dino_processor(images=pictures, return_tensors="pt")
                                        ["pixel_values"]))
    return torch.cat(clip), torch.cat(dino)


def identifier_free_prompt(item: PromptItem) -> str:
    """The prompt CLIP-T reads: the template without the identifier."""
    return " ".join(item.template.format(identifier="", class_noun=item.class_noun, scene=item.scene or "").split())


@torch.no_grad()
def evaluate(judges: Judges, items: Sequence[PromptItem], images: np.ndarray,
             references: dict[str, np.ndarray]) -> dict[str, Any]:
    """Every metric of the generated `images` (one per item); `references` holds each
    subject's real images."""
    subjects = sorted({item.subject for item in items if item.subject})
    missing = [s for s in subjects if s not in references or not len(references[s])]
    if missing:
        raise InputDataError(f"no reference images of subject {missing[0]!r}: CLIP-I and DINO compare against them")
    names = judges.segmenter.class_names
    unknown = [s for s in subjects if s not in names]
    if unknown:
        raise InputDataError(f"subject {unknown[0]!r} is not one the segmenter knows ({', '.join(names[1:])})")
    clip_emb, dino_emb = image_embeddings(judges, images)

    clip_t = TextImageSimilarity(**LOCAL)
    texts = clip_text_embeddings(judges.clip, tokenize(judges.clip_tokenizer, [identifier_free_prompt(i) for i in items]))
    clip_t.update(clip_emb, texts)

    result: dict[str, Any] = {"images": len(items), "clip_t": float(clip_t.compute())}
    if subjects:
        identity = IdentityAccuracy(len(names) - 1, names[1:], **LOCAL)
        per_subject: dict[str, dict[str, float]] = {}
        clip_i_all, dino_all = ImageImageSimilarity(**LOCAL), ImageImageSimilarity(**LOCAL)
        logits = torch.cat([judges.segmenter(as_tensor(b, judges.segmenter_size)) for b in _batches(images)])
        predicted = dominant_subject(logits)
        for subject in subjects:
            rows = [k for k, item in enumerate(items) if item.subject == subject]
            ref_clip, ref_dino = image_embeddings(judges, references[subject])
            clip_i, dino = ImageImageSimilarity(**LOCAL), ImageImageSimilarity(**LOCAL)
            clip_i.update(clip_emb[rows], ref_clip)
            dino.update(dino_emb[rows], ref_dino)
            clip_i_all.update(clip_emb[rows], ref_clip)
            dino_all.update(dino_emb[rows], ref_dino)
            per_subject[subject] = {"clip_i": float(clip_i.compute()), "dino": float(dino.compute())}
            # dominant_subject counts subjects from 0; the segmenter's class 0 is the background
            identity.update(predicted[rows], torch.full((len(rows),), names.index(subject) - 1))
        accuracy = identity.compute()
        for subject in subjects:
            per_subject[subject]["identity_accuracy"] = float(accuracy["per_subject"][subject])
        result.update(clip_i=float(clip_i_all.compute()), dino=float(dino_all.compute()),
                      identity_accuracy=float(accuracy["overall"]), subjects=per_subject)
    result["prompt_accuracy"] = prompt_accuracy(judges, items, images)
    return result


@torch.no_grad()
def prompt_accuracy(judges: Judges, items: Sequence[PromptItem], images: np.ndarray) -> dict[str, float]:
    classes, scenes = judges.classifier.class_names, judges.classifier.scene_names
    for item in items:
        if item.class_noun not in classes:
            raise InputDataError(f"class {item.class_noun!r} of prompt {item.prompt!r} is not one the classifier "
                                 f"knows ({', '.join(classes)})")
        if item.scene and item.scene not in scenes:
            raise InputDataError(f"scene {item.scene!r} of prompt {item.prompt!r} is not one the classifier "
                                 f"knows ({', '.join(scenes)})")
    metric = PromptAccuracy(**LOCAL)
    for start in range(0, len(items), BATCH):
        batch = items[start:start + BATCH]
        class_logits, scene_logits = judges.classifier.classify(as_tensor(images[start:start + BATCH],
                                                                          images.shape[1]))
        metric.update(class_logits, scene_logits, torch.tensor([classes.index(i.class_noun) for i in batch]),
                      torch.tensor([scenes.index(i.scene) if i.scene else -1 for i in batch]))
    return {k: float(v) for k, v in metric.compute().items()}
