"""Does a CLIP read face attributes? Zero-shot classification of held-out faces by prompts.

CLIP's zero-shot recipe: one prompt per class, each image gets the class whose prompt
embedding is most similar to the image embedding; accuracy against the true attribute.
The prompts say an attribute the way SynthWorld's face captions do, without the other
attributes, so the text encoder must have learnt the attribute's words apart from the rest.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from transformers import CLIPModel, PreTrainedTokenizerBase

from lightning_modules.core.metrics import clip_image_embeddings, clip_text_embeddings
from lightning_modules.diffusion.data import tokenize

# Task -> (attribute of the faces folder, one prompt per value of its vocabulary). A closed
# mouth and no glasses are what captions leave unsaid: their prompt is the bare "a person".
FACE_PROMPTS: dict[str, tuple[str, dict[str, str]]] = {
    # the attribute eCLIPsed's final row edits ("a person with curly hair")
    "hair_style": ("hair_style", {s: f"a person with {s} hair" for s in ("straight", "curly", "short", "ponytail")}),
    "hair_color": ("hair_color", {c: f"a person with {c} hair" for c in ("black", "brown", "blond", "red", "gray")}),
    "glasses": ("glasses", {"no": "a person", "yes": "a person with glasses"}),
    "mouth": ("mouth", {"closed": "a person", "open": "a person with the mouth open", "smiling": "a smiling person"}),
}


@torch.no_grad()
def zero_shot_predictions(clip: CLIPModel, tokenizer: PreTrainedTokenizerBase, pixel_values: torch.Tensor,
                          prompts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """For each image (CLIP-preprocessed pixels), the index of its most similar prompt."""
    training = clip.training
    clip.eval()
    try:
        text = clip_text_embeddings(clip, tokenize(tokenizer, prompts))
        image = torch.cat([clip_image_embeddings(clip, pixel_values[i:i + batch_size])
                           for i in range(0, len(pixel_values), batch_size)])
        return (image @ text.T).argmax(1)
    finally:
        clip.train(training)


def accuracies(predicted: torch.Tensor, labels: torch.Tensor, classes: int) -> dict[str, float]:
    """Plain accuracy, balanced accuracy (mean recall over the classes present: a constant
    guess scores 1 / classes whatever the shares) and the majority class's share (what a
    constant guess can reach in plain accuracy)."""
    present = [c for c in range(classes) if (labels == c).any()]
    recall = [float((predicted[labels == c] == c).float().mean()) for c in present]
    return {"accuracy": float((predicted == labels).float().mean()),
            "balanced_accuracy": sum(recall) / len(recall),
            "majority": float(torch.bincount(labels, minlength=classes).max()) / len(labels)}


def face_zero_shot(clip: CLIPModel, tokenizer: PreTrainedTokenizerBase, pixel_values: torch.Tensor,
                   attributes: Mapping[str, Sequence[str]], vocabularies: Mapping[str, Sequence[str]]
                   ) -> dict[str, dict[str, float]]:
    """Zero-shot accuracies per task of FACE_PROMPTS: `attributes[name][i]` is image i's value of
    attribute `name`, one of `vocabularies[name]` (the faces folder's)."""
    if not len(pixel_values):
        raise ValueError("no faces to measure")
    results = {}
    for task, (name, by_value) in FACE_PROMPTS.items():
        vocabulary = list(vocabularies[name])
        missing = set(vocabulary) - set(by_value)
        if missing:
            raise ValueError(f"{name}: no zero-shot prompt for {sorted(missing)}")
        labels = torch.tensor([vocabulary.index(value) for value in attributes[name]])
        predicted = zero_shot_predictions(clip, tokenizer, pixel_values, [by_value[v] for v in vocabulary])
        results[task] = accuracies(predicted, labels, len(vocabulary))
    return results
