"""The tiny models' tokenizer: a word-level CLIP-style tokenizer over SynthWorld's language.

Real CLIP tokenizers are byte-pair encoders over the web's vocabulary; the tiny text encoder
only ever reads SynthWorld captions, so one token per word is enough and keeps the model
small. It is built with the `tokenizers` library and saved with `save_pretrained`, so it
loads through the same `from_pretrained` code as a real CLIP tokenizer.

It also carries a pool of rare tokens: words that never occur in a caption, so their
embeddings keep no meaning after pretraining. DreamBooth initialises each subject's
identifier from such a token (its "rare-token identifier").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from lightning_modules.synthworld.faces import FACE_ATTRIBUTES, caption_of
from lightning_modules.synthworld.scenes import SCENE_KINDS, Scene
from lightning_modules.synthworld.subjects import CLASS_NOUNS

BOS, EOS, UNK = "<|startoftext|>", "<|endoftext|>", "<|unk|>"
RARE_TOKENS_FILE = "rare_tokens.json"

# Words of the prompts the pipeline writes: DreamBooth's "a photo of a <id> <class>",
# SynthWorld's scene captions, Disen-Mix's region prompt, and the layout words of MSP.
PROMPT_WORDS = (
    "a an the of on in at and with photo picture image is divided into several regions left right "
    "middle top bottom center background foreground next to standing sitting walking , ."
).split()


def face_caption_words() -> list[str]:
    """Every word a SynthWorld face caption can use ("a smiling person with red ponytail hair,
    glasses and a beard"), and "closed" for prompts that name the closed mouth."""
    words = ["closed"]
    for style in FACE_ATTRIBUTES["hair_style"]:
        for color in FACE_ATTRIBUTES["hair_color"]:
            for mouth in FACE_ATTRIBUTES["mouth"]:
                caption = caption_of({"hair_style": style, "hair_color": color, "glasses": "yes", "beard": "yes",
                                      "mouth": mouth})
                words += caption.replace(",", " , ").split()
    return list(dict.fromkeys(words))


def synthworld_words() -> list[str]:
    words = list(PROMPT_WORDS) + list(CLASS_NOUNS) + list(SCENE_KINDS)
    for index, kind in enumerate(SCENE_KINDS):
        words += Scene(index, kind).caption.split()
    # After the subjects' words, so their token ids stay what they were.
    return words + face_caption_words()


def rare_token_pool(count: int) -> list[str]:
    """Letter strings that are no word: consonant triples that SynthWorld never writes.

    They avoid SynthWorld's identifier pool on purpose: identifiers are added as new tokens
    (see `add_identifier_tokens`) and must not be in the vocabulary already.
    """
    from lightning_modules.synthworld.subjects import IDENTIFIER_POOL

    consonants = "bcdfghjklmnpqrstvwxz"
    pool: list[str] = []
    for i, a in enumerate(consonants):
        for j, b in enumerate(consonants[::-1]):
            c = consonants[(i * 7 + j * 3) % len(consonants)]
            word = f"{a}{b}{c}"
            if a != b and word not in IDENTIFIER_POOL and word not in pool:
                pool.append(word)
            if len(pool) == count:
                return pool
    raise ValueError(f"cannot make {count} rare tokens")


def build_word_tokenizer(words: Iterable[str], rare_tokens: Sequence[str], max_length: int) -> PreTrainedTokenizerFast:
    """A CLIP-like tokenizer (lower-case, <|startoftext|> ... <|endoftext|>, padded with
    <|endoftext|>) whose vocabulary is `words` plus `rare_tokens`."""
    vocabulary: dict[str, int] = {}
    for token in (BOS, EOS, UNK, *words, *rare_tokens):
        vocabulary.setdefault(token.lower(), len(vocabulary))
    core = Tokenizer(models.WordLevel(vocabulary, unk_token=UNK))
    core.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", special_tokens=[(BOS, vocabulary[BOS]), (EOS, vocabulary[EOS])])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=EOS, unk_token=UNK,
                                   pad_token=EOS, model_max_length=max_length)


def save_rare_tokens(directory: Path, rare_tokens: Sequence[str]) -> None:
    (directory / RARE_TOKENS_FILE).write_text(json.dumps(list(rare_tokens)) + "\n")


def load_rare_tokens(directory: Path) -> list[str] | None:
    path = directory / RARE_TOKENS_FILE
    return json.loads(path.read_text()) if path.is_file() else None
