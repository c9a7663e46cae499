"""The tiny zoo's tokenizer and the identifier tokens (fast, no workspace)."""

from __future__ import annotations

import pytest
import torch

from lightning_modules.diffusion.identifiers import IdentifierError, add_identifier_tokens, check_class_nouns
from lightning_modules.diffusion.tiny import TinySizes, tiny_text_to_image
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words
from lightning_modules.synthworld.subjects import CLASS_NOUNS, IDENTIFIER_POOL


@pytest.fixture()
def tiny():
    rare = rare_token_pool(8)
    tokenizer = build_word_tokenizer(synthworld_words(), rare, 32)
    return tiny_text_to_image(tokenizer, TinySizes()), rare


def test_tokenizer_knows_synthworld_words_and_keeps_identifiers_out(tiny):
    components, rare = tiny
    tokenizer = components["tokenizer"]
    ids = tokenizer("a cartoon on a beach").input_ids
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.unk_token_id not in ids
    check_class_nouns(tokenizer, CLASS_NOUNS)
    assert not set(rare) & set(IDENTIFIER_POOL) and len(set(rare)) == len(rare)
    assert tokenizer.unk_token_id in tokenizer("a sks cartoon").input_ids   # identifiers are new tokens
    with pytest.raises(IdentifierError, match="'teapot' is not in the tokenizer"):
        check_class_nouns(tokenizer, ["teapot"])


def test_each_identifier_is_a_new_token_started_from_a_distinct_rare_token(tiny):
    components, rare = tiny
    tokenizer, text_encoder = components["tokenizer"], components["text_encoder"]
    before = len(tokenizer)
    tokens = add_identifier_tokens(tokenizer, text_encoder, ["sks", "zwx"], rare)
    assert len(tokenizer) == before + 2 == text_encoder.get_input_embeddings().weight.shape[0]
    table = text_encoder.get_input_embeddings().weight
    assert [t.initializer for t in tokens] == rare[:2]
    for token in tokens:
        assert tokenizer("a sks cartoon").input_ids[2] == tokens[0].token_id
        source = tokenizer.convert_tokens_to_ids(token.initializer)
        assert torch.equal(table[token.token_id], table[source])


@pytest.mark.parametrize("identifier, message", [("dog", "collides with a word"), ("beach", "collides with a word"),
                                                 ("two words", "one word")])
def test_an_identifier_that_is_a_word_is_refused(tiny, identifier, message):
    components, rare = tiny
    with pytest.raises(IdentifierError, match=message):
        add_identifier_tokens(components["tokenizer"], components["text_encoder"], [identifier], rare)


def test_a_model_path_that_does_not_exist_is_named_in_the_error():
    from tasks.core.params import validate as resolve
    from tasks.core.errors import ParamsError

    with pytest.raises(ParamsError, match=r"zoo\.text_to_image: expected tiny or the path of a local model"):
        resolve({"zoo": {"text_to_image": "models/nowhere"}})
    with pytest.raises(ParamsError, match=r"finetune\.mode"):
        resolve({"finetune": {"mode": "dreambooth"}})
