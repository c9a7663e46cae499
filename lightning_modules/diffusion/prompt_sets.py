"""Prompt sets in the DreamBench manner: subjects x prompt templates x seeds.

A prompt set is a small YAML file:

    subjects: all                     # or a list of subjects (names or identifiers) of the model
    templates:
      - "a {identifier} {class_noun}"
      - "a {identifier} {class_noun} {scene}"
    scenes: ["on a beach", "in a city"]  # what {scene} expands to
    seeds: [0, 1]                     # one image per (prompt, seed)

Every item carries its own seed (the seed of its noise), never a position in a batch, so an
image is the same whichever device or batch draws it. A template without {identifier} draws
the class prior (the base model's prompts); items that would repeat a (prompt, seed) pair
are drawn once.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

import yaml

PLACEHOLDERS = ("identifier", "class_noun", "scene")
MAX_SEED = 2 ** 63 - 1


class PromptSetError(ValueError):
    """A prompt set that cannot be expanded; the message names the entry at fault."""


@dataclass(frozen=True)
class SubjectEntry:
    name: str
    identifier: str
    class_noun: str


@dataclass(frozen=True)
class PromptItem:
    index: int
    prompt: str
    seed: int
    template: str
    class_noun: str
    scene: Optional[str]          # None: the prompt names no scene
    subject: Optional[str]        # None: a class prompt (no identifier), no identity to judge

    @property
    def stem(self) -> str:
        """The file name of its image: readable and unique within the set."""
        who = self.subject or self.class_noun
        return f"{who}/{self.index:05d}_seed{self.seed}"


@dataclass(frozen=True)
class PromptSet:
    subjects: tuple[str, ...] | str
    templates: tuple[str, ...]
    scenes: tuple[str, ...]
    seeds: tuple[int, ...]

    def expand(self, known: Sequence[SubjectEntry]) -> list[PromptItem]:
        """The items over the subjects the model knows; an unknown subject is an error."""
        # A subject is named by its name (dog_1) or by its identifier token.
        by_key = {**{s.identifier: s for s in known}, **{s.name: s for s in known}}
        if self.subjects == "all":
            chosen = list(known)
        else:
            unknown = [key for key in self.subjects if key not in by_key]
            if unknown:
                names = ", ".join(f"{s.name} ({s.identifier})" for s in known) or "none"
                raise PromptSetError(f"subjects: {unknown[0]!r} is no fine-tuned subject or identifier "
                                     f"(known: {names})")
            chosen = list(dict.fromkeys(by_key[key] for key in self.subjects))
        if not chosen:
            raise PromptSetError("subjects: no subject to draw")
        items: list[PromptItem] = []
        seen: set[tuple[str, int]] = set()
        for subject in chosen:
            for template in self.templates:
                fields = template_fields(template)
                for scene in (self.scenes if "scene" in fields else (None,)):
                    prompt = " ".join(template.format(identifier=subject.identifier, class_noun=subject.class_noun,
                                                      scene=scene or "").split())
                    for seed in self.seeds:
                        if (prompt, seed) in seen:
                            continue
                        seen.add((prompt, seed))
                        items.append(PromptItem(len(items), prompt, seed, template, subject.class_noun, scene,
                                                subject.name if "identifier" in fields else None))
        return items


def template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


def _strings(data: Mapping, key: str, required: bool) -> tuple[str, ...]:
    value = data.get(key, [] if not required else None)
    if value is None or not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise PromptSetError(f"{key}: expected a list of non-empty strings (got {value!r})")
    if required and not value:
        raise PromptSetError(f"{key}: empty; the set would draw nothing")
    duplicates = sorted({v for v in value if value.count(v) > 1})
    if duplicates:
        raise PromptSetError(f"{key}: {duplicates[0]!r} is listed twice")
    return tuple(value)


def parse_prompt_set(data: object) -> PromptSet:
    if not isinstance(data, dict):
        raise PromptSetError("expected a mapping with subjects, templates, seeds (and scenes)")
    unknown = sorted(set(data) - {"subjects", "templates", "scenes", "seeds"})
    if unknown:
        raise PromptSetError(f"unknown key {unknown[0]!r} (expected subjects, templates, scenes, seeds)")
    subjects = data.get("subjects", "all")
    if subjects != "all":
        subjects = _strings(data, "subjects", required=True)
    templates = _strings(data, "templates", required=True)
    scenes = _strings(data, "scenes", required=False)
    for template in templates:
        try:
            fields = template_fields(template)
        except ValueError as err:
            raise PromptSetError(f"templates: {template!r}: {err}") from None
        bad = sorted(fields - set(PLACEHOLDERS))
        if bad:
            raise PromptSetError(f"templates: {template!r} has {{{bad[0]}}}; placeholders are "
                                 + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS))
        if "class_noun" not in fields:
            raise PromptSetError(f"templates: {template!r} has no {{class_noun}}: every prompt names its class")
        if "scene" in fields and not scenes:
            raise PromptSetError(f"templates: {template!r} has {{scene}} but scenes is empty")
    seeds = data.get("seeds")
    if not isinstance(seeds, list) or not seeds or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_SEED for s in seeds):
        raise PromptSetError(f"seeds: expected a non-empty list of whole numbers in [0, 2^63) (got {seeds!r})")
    duplicates = sorted({s for s in seeds if seeds.count(s) > 1})
    if duplicates:
        raise PromptSetError(f"seeds: {duplicates[0]} is listed twice; each seed draws a different image")
    return PromptSet(subjects, templates, scenes, tuple(seeds))


def load_prompt_set(path: Path) -> PromptSet:
    """The prompt set of a YAML file; errors name the file and the entry."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise PromptSetError(f"{path}: not readable ({err.strerror or err.__class__.__name__})") from None
    except yaml.YAMLError as err:
        raise PromptSetError(f"{path}: not YAML ({str(err).splitlines()[0]})") from None
    try:
        return parse_prompt_set(data)
    except PromptSetError as err:
        raise PromptSetError(f"{path}: {err}") from None
