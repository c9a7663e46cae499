"""Hard negative captions for CLIP pretraining: the true caption with one attribute changed.

NegCLIP (Yuksekgonul et al., "When and why vision-language models behave like bags-of-words",
ICLR 2023) adds such captions to the contrastive batch, so a model can no longer match a
picture by its most visible words alone. Here the attribute changed is one of a face's
(glasses, mouth, ...), and the caption is rewritten by the same template that wrote the true one.
"""

from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence


def flipped_captions(values: Mapping[str, str], vocabularies: Mapping[str, Sequence[str]], flip: Sequence[str],
                     caption: Callable[[Mapping[str, str]], str], key: str) -> tuple[str, ...]:
    """One negative per attribute in `flip`: `caption` of `values` with that attribute set to
    another value of its vocabulary (drawn from `key` where there are several)."""
    rng = random.Random(key)
    negatives = []
    for name in flip:
        others = [value for value in vocabularies[name] if value != values[name]]
        negatives.append(caption({**values, name: rng.choice(others)}))
    return tuple(negatives)
