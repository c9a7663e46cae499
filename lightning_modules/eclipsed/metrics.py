"""How good an eCLIPsed edit is, as torchmetrics `Metric`s (sums, synced across ranks).

- CLIP similarity of the edit to the prompt: `TextImageSimilarity` of the shared metrics.
- Locality (`EditLocality`): the mean pixel change outside the part's mask over the mean change
  inside it, the mask the part on the original image. 0 is an edit that stays inside the part; 1
  one that changes everything alike; above 1 one that changes the rest more than the part.
- Edit accuracy (`EditAccuracy`): SynthWorld knows every attribute, so a classifier trained on
  real faces judges each edit: the share of edits that carry the prompted attribute while every
  other attribute and the identity stay as the classifier saw them on the original. Counted over
  the faces the judge finds without the attribute before the edit (a face that has it already
  proves nothing); `already_before` says how many of the faces were left out that way; with the
  other attributes named (`others`), `kept_<name>` says which of them gave way.
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Optional, Sequence

import torch
from torchmetrics import Metric

from lightning_modules.core.metrics.generation import SUM_DTYPE

IDENTITY = "identity"
# Words of prompts that name an attribute's value in other words.
SYNONYMS = {"blonde": "blond", "grey": "gray", "smile": "smiling", "smiles": "smiling", "opened": "open",
            "bearded": "beard", "spectacles": "glasses", "eyeglasses": "glasses"}
YES, NO = "yes", "no"


def prompted_attribute(prompt: str, vocabulary: Mapping[str, Sequence[str]]) -> Optional[tuple[str, str]]:
    """(attribute, value) the prompt asks for, read against the attributes' vocabularies: a value
    word ("curly", "blond", "open"), or the name of a yes/no attribute ("glasses", "beard").
    None when the prompt names no attribute; the last named one when it names several."""
    found = None
    for word in (SYNONYMS.get(w, w) for w in re.findall(r"[a-z]+", prompt.lower())):
        for name, values in vocabulary.items():
            if set(values) == {YES, NO}:
                if word == name or word + "es" == name or word + "s" == name:
                    found = (name, YES)
            elif word in values:
                found = (name, word)
    return found


class EditLocality(Metric):
    """Mean |change| of pixels outside the part over that of pixels inside (the original's part)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("inside_change", "outside_change", "inside_pixels", "outside_pixels"):
            self.add_state(name, torch.tensor(0.0, dtype=SUM_DTYPE), dist_reduce_fx="sum")

    def update(self, original: torch.Tensor, edited: torch.Tensor, mask: torch.Tensor) -> None:
        """original, edited: B x 3 x H x W; mask: B x 1 x H x W (or B x H x W), 1 inside the part."""
        change = (edited.detach() - original.detach()).abs().mean(1).to(SUM_DTYPE)
        inside = mask.reshape(change.shape).to(SUM_DTYPE)
        self.inside_change += (change * inside).sum()
        self.outside_change += (change * (1 - inside)).sum()
        self.inside_pixels += inside.sum()
        self.outside_pixels += (1 - inside).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        nan = torch.tensor(math.nan, dtype=SUM_DTYPE)
        inside = self.inside_change / self.inside_pixels if self.inside_pixels > 0 else nan
        outside = self.outside_change / self.outside_pixels if self.outside_pixels > 0 else nan
        return {"locality": outside / inside if inside > 0 else nan, "change_inside": inside, "change_outside": outside}


class EditAccuracy(Metric):
    """The share of edits judged to carry the prompted attribute with the rest kept."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, attribute: str, value: int, others: Sequence[str] = (), **kwargs):
        super().__init__(**kwargs)
        self.attribute, self.value = attribute, value
        # the attributes whose keep rate is reported one by one (not the prompted one)
        self.kept_names = [name for name in others if name not in (attribute, IDENTITY)]
        for name in ("hits", "attribute_hits", "others_kept", "identity_kept", "already", "count", "faces",
                     *(f"kept_{name}" for name in self.kept_names)):
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, original: Mapping[str, torch.Tensor], edited: Mapping[str, torch.Tensor]) -> None:
        """The classifier's predictions (name -> B class indices) on the originals and the edits."""
        carries = edited[self.attribute] == self.value
        others = [name for name in original if name not in (self.attribute, IDENTITY)]
        kept = torch.ones_like(carries)
        for name in others:
            kept &= edited[name] == original[name]
        same_person = edited[IDENTITY] == original[IDENTITY] if IDENTITY in original else torch.ones_like(carries)
        lacking = original[self.attribute] != self.value
        self.hits += (carries & kept & same_person & lacking).sum()
        self.attribute_hits += (carries & lacking).sum()
        self.others_kept += (kept & lacking).sum()
        self.identity_kept += (same_person & lacking).sum()
        for name in self.kept_names:
            state = f"kept_{name}"
            setattr(self, state, getattr(self, state) + ((edited[name] == original[name]) & lacking).sum())
        self.already += (~lacking).sum()
        self.count += lacking.sum()
        self.faces += carries.numel()

    def compute(self) -> dict[str, torch.Tensor]:
        """Shares of the edited faces that lacked the attribute (NaN when none did)."""
        count = self.count.to(SUM_DTYPE) if self.count > 0 else torch.tensor(math.nan, dtype=SUM_DTYPE)
        return {"edit_accuracy": self.hits / count, "attribute": self.attribute_hits / count,
                "others_kept": self.others_kept / count, "identity_kept": self.identity_kept / count,
                **{f"kept_{name}": getattr(self, f"kept_{name}") / count for name in self.kept_names},
                "already_before": self.already / self.faces.clamp(min=1).to(SUM_DTYPE)}
