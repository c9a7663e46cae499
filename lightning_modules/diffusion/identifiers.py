"""Subject identifiers as new tokens of the tokenizer (MSP 2(i), DreamBooth).

Every subject gets its own token, so a prompt "a sks cartoon" names exactly one subject,
and the token's embedding row is initialised from a rarely occurring token so it starts
with a weak prior (DreamBooth's rare-token identifier). New tokens are also what Textual
Inversion and Custom Diffusion learn, and what diffusers' `load_textual_inversion` loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import CLIPTextModel, PreTrainedTokenizerBase


class IdentifierError(ValueError):
    """An identifier or class noun the tokenizer cannot take."""


@dataclass(frozen=True)
class IdentifierToken:
    identifier: str
    token_id: int
    initializer: str   # the rare token whose embedding it started from


def known_word_id(tokenizer: PreTrainedTokenizerBase, word: str) -> int | None:
    """The id of `word` as a whole word of the vocabulary (CLIP's BPE marks word ends with </w>)."""
    vocabulary = tokenizer.get_vocab()
    for form in (word, f"{word}</w>"):
        if form in vocabulary:
            return vocabulary[form]
    return None


def single_token_id(tokenizer: PreTrainedTokenizerBase, word: str) -> int | None:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    return ids[0] if len(ids) == 1 and ids[0] != tokenizer.unk_token_id else None


def check_class_nouns(tokenizer: PreTrainedTokenizerBase, class_nouns: Sequence[str]) -> None:
    for noun in class_nouns:
        ids = tokenizer(noun, add_special_tokens=False).input_ids
        if not ids or tokenizer.unk_token_id in ids:
            raise IdentifierError(f"class noun {noun!r} is not in the tokenizer's vocabulary "
                                  "(for the tiny model add it to zoo.extra_words)")


def add_identifier_tokens(tokenizer: PreTrainedTokenizerBase, text_encoder: CLIPTextModel,
                          identifiers: Sequence[str], rare_tokens: Sequence[str]) -> list[IdentifierToken]:
    """Add one token per identifier and copy a distinct rare token's embedding into its row."""
    if len(set(identifiers)) != len(identifiers):
        raise IdentifierError(f"identifiers must be distinct, got {list(identifiers)}")
    for identifier in identifiers:
        if not identifier or any(c.isspace() for c in identifier):
            raise IdentifierError(f"identifier {identifier!r} must be one word")
        existing = known_word_id(tokenizer, identifier)
        if existing is not None:
            raise IdentifierError(f"identifier {identifier!r} collides with a word the tokenizer already "
                                  f"has (token id {existing}); pick a letter string that is no word")
    initializers = [t for t in rare_tokens if t not in identifiers]
    initializer_ids = []
    for token in initializers[:len(identifiers)]:
        token_id = single_token_id(tokenizer, token)
        if token_id is None:
            raise IdentifierError(f"rare token {token!r} is not a single token of the tokenizer")
        initializer_ids.append(token_id)
    if len(initializer_ids) < len(identifiers):
        raise IdentifierError(f"{len(identifiers)} identifiers need as many rare tokens to start from, "
                              f"got {len(initializer_ids)}")
    tokenizer.add_tokens(list(identifiers))
    text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    table = text_encoder.get_input_embeddings().weight
    added = []
    with torch.no_grad():
        for identifier, token, source in zip(identifiers, initializers, initializer_ids):
            token_id = tokenizer.convert_tokens_to_ids(identifier)
            table[token_id] = table[source]
            added.append(IdentifierToken(identifier, token_id, token))
    return added
