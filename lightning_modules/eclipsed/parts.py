"""What an eCLIPsed prompt is about: the face part its edit is localized to, and the paper's
prompt extension.

The paper chose the part by spaCy's similarity between the prompt and the segmenter's part names,
a cosine of word vectors. Here the vectors are CLIP's text embeddings, the model the directions
are trained against: each meaningful word of the prompt against each part's name, the part with
the closest word chosen ("curly hair" -> hair: the word itself is there). Parts equally close are
told apart by whole sentences: the prompt against "a photo of a person's <part>"-style sentences.
Parts whose names the CLIP cannot tell apart (the same embedding: words its tokenizer does not
know) are left out of the automatic choice. A part can also be named outright.

The extension (paper, sec. 3.2) keeps the prompt's words that carry meaning, drops the stop words,
and repeats the phrase naming the part, "a person with curly hair" -> "person curly hair curly
hair curly hair"; the paper found that CLIP scores it worse, and kept the prompt as it is.
"""

from __future__ import annotations

import re
from typing import Callable, Optional, Sequence

import torch

# The segmenter's classes that are no part of a person to edit.
NOT_PARTS = ("background",)
PART_TEMPLATES = ("a photo of a person's {}", "a person with {}", "the {} of a person")
# English function words: what spaCy's stop list would drop from such prompts.
STOP_WORDS = frozenset("a an the of with and or to in on at by for from his her their its is are be "
                       "this that photo picture image person's".split())
EMPHASIS_REPEATS = 3
TIE = 1e-4   # cosines this close are equal

TextEncoder = Callable[[Sequence[str]], torch.Tensor]   # prompts -> L2-normalised N x D embeddings


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def candidate_parts(part_names: Sequence[str]) -> list[str]:
    return [name for name in part_names if name not in NOT_PARTS]


def choose_part(prompt: str, part_names: Sequence[str], encode_text: TextEncoder,
                named: Optional[str] = None) -> str:
    """The part to localize the prompt's edit to: `named` when given (it must be one of the
    segmenter's part names), else the part whose sentences CLIP finds closest to the prompt."""
    if named is not None:
        if named not in part_names:
            raise ValueError(f"part {named!r} is not one the segmenter knows ({', '.join(part_names)})")
        return named
    parts = candidate_parts(part_names)
    if not parts:
        raise ValueError("the segmenter knows no part besides the background")
    with torch.no_grad():
        names = encode_text(parts)
        same = (names @ names.T > 1 - TIE).sum(1) > 1     # indistinguishable to this CLIP
        if not same.all():
            parts, names = [p for p, s in zip(parts, same.tolist()) if not s], names[~same]
        meaningful = [w for w in words(prompt) if w not in STOP_WORDS] or words(prompt) or [prompt]
        closest_word = (encode_text(meaningful) @ names.T).max(0).values
        prompt_embedding = encode_text([prompt])[0]
        sentences = [template.format(part) for part in parts for template in PART_TEMPLATES]
        sentence = (encode_text(sentences).view(len(parts), len(PART_TEMPLATES), -1) @ prompt_embedding).mean(1)
    best = closest_word >= closest_word.max() - TIE
    return parts[int(torch.where(best, sentence, torch.full_like(sentence, -float("inf"))).argmax())]


def part_phrase(prompt: str, part: str) -> list[str]:
    """The run of meaningful words around the part's name ("curly hair", "mouth open"); the last
    run of meaningful words when the prompt does not name the part."""
    runs: list[list[str]] = [[]]
    for word in words(prompt):
        if word in STOP_WORDS:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append(word)
    runs = [run for run in runs if run]
    naming = [run for run in runs if part in run or part.rstrip("s") in run]
    return (naming or runs or [[part]])[-1]


def extend_prompt(prompt: str, part: str, repeats: int = EMPHASIS_REPEATS) -> str:
    """The paper's extended prompt: stop words dropped, the part's phrase repeated."""
    phrase = part_phrase(prompt, part)
    kept = [w for w in words(prompt) if w not in STOP_WORDS and w not in phrase]
    return " ".join(kept + phrase * repeats)
