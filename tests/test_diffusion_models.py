"""The tiny zoo's tokenizer, the identifier tokens, and the diffusion modules' losses and
measurements on tiny models (fast, no workspace)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_modules.core.losses import NonFiniteLossError
from lightning_modules.diffusion.data import CaptionedImage, CaptionedImages, tokenize
from lightning_modules.diffusion.finetune import FinetuneSettings, SubjectFinetuner
from lightning_modules.diffusion.identifiers import IdentifierError, add_identifier_tokens, check_class_nouns
from lightning_modules.diffusion.pretrain import ClipPretrainer, TextToImagePretrainer, VaePretrainer
from lightning_modules.diffusion.retrieval import caption_retrieval_top1
from lightning_modules.diffusion.specificity import LanguageDrift
from lightning_modules.diffusion.tiny import TinySizes, tiny_clip, tiny_text_to_image
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

    import copy

    import yaml

    from tests.conftest import ROOT

    complete = yaml.safe_load((ROOT / "params.yaml").read_text())  # a params file is validated whole
    bad_path, bad_mode = copy.deepcopy(complete), copy.deepcopy(complete)
    bad_path["zoo"]["text_to_image"] = "models/nowhere"
    bad_mode["finetune"]["mode"] = "dreambooth"
    with pytest.raises(ParamsError, match=r"zoo\.text_to_image: expected tiny or the path of a local model"):
        resolve(bad_path)
    with pytest.raises(ParamsError, match=r"finetune\.mode"):
        resolve(bad_mode)


@pytest.fixture()
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine their threads
    wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_language_drift_sees_only_the_identifier_prompt_move_when_only_its_row_trains(tiny, one_thread):
    components, rare = tiny
    add_identifier_tokens(components["tokenizer"], components["text_encoder"], ["sks"], rare)
    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    drift = LanguageDrift(components, ["a sks cartoon"], ["a cartoon", "on a beach"], pixels, seed=0)
    unchanged = drift.measure()
    assert unchanged["identifier_shift"] == unchanged["largest_other_shift"] == 0.0
    assert unchanged["specificity"] is None   # nothing moved: no ratio (JSON has no infinity)
    table = components["text_encoder"].get_input_embeddings().weight
    with torch.no_grad():   # what textual inversion does: move the identifier's row only
        row = components["tokenizer"].convert_tokens_to_ids("sks")
        table[row] += torch.randn(table.shape[1], generator=torch.Generator().manual_seed(0))
    moved = drift.measure()
    assert moved["identifier_shift"] > 0 and moved["prompts"]["a sks cartoon"] > 0
    assert moved["prompts"]["a cartoon"] == moved["prompts"]["on a beach"] == moved["largest_other_shift"] == 0.0


def dreambooth_batch(tokenizer, prior: bool) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1,
             "input_ids": tokenize(tokenizer, ["a sks cartoon"] * 2)}
    if prior:
        batch["class_pixel_values"] = torch.rand(2, 3, 32, 32, generator=generator) * 2 - 1
        batch["class_input_ids"] = tokenize(tokenizer, ["a cartoon"] * 2)
    return batch


# training_step outside a Trainer: its self.log calls have nowhere to go
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_finetuner_loss_is_instance_plus_lambda_prior_and_training_step_optimises_it(tiny, one_thread):
    components, rare = tiny
    tokens = add_identifier_tokens(components["tokenizer"], components["text_encoder"], ["sks"], rare)
    settings = FinetuneSettings(mode="lora", prior_preservation_weight=0.5, lr=1e-4, text_encoder_lr=1e-4,
                                embedding_lr=1e-3, weight_decay=0.0, train_identifier_embeddings=True)
    module = SubjectFinetuner(components["unet"], components["vae"], components["text_encoder"],
                              components["scheduler"], settings, identifier_ids=[t.token_id for t in tokens])
    batch = dreambooth_batch(components["tokenizer"], prior=True)
    loss, instance_loss, prior_loss = module.compute_loss(batch)
    torch.testing.assert_close(loss, instance_loss + 0.5 * prior_loss)
    torch.manual_seed(1)
    computed = module.compute_loss(batch).loss
    torch.manual_seed(1)   # the same noise and timesteps: training_step adds only the check and logging
    assert torch.equal(module.training_step(batch, 0), computed)
    alone = module.compute_loss(dreambooth_batch(components["tokenizer"], prior=False))
    assert alone.prior_loss is None and torch.equal(alone.loss, alone.instance_loss)
    module.settings = replace(settings, prior_preservation_weight=1e39)   # finite, but the sum overflows
    with pytest.raises(NonFiniteLossError, match="fine-tuning loss became inf"):
        module.training_step(batch, 0)


def test_subject_weight_weighs_the_instances_subject_pixels_and_leaves_the_prior_alone(tiny, one_thread):
    components, rare = tiny
    tokens = add_identifier_tokens(components["tokenizer"], components["text_encoder"], ["sks"], rare)
    settings = FinetuneSettings(mode="lora", prior_preservation_weight=1.0, lr=1e-4, text_encoder_lr=1e-4,
                                embedding_lr=1e-3, weight_decay=0.0, subject_loss_weight=9.0)
    module = SubjectFinetuner(components["unet"], components["vae"], components["text_encoder"],
                              components["scheduler"], settings, identifier_ids=[t.token_id for t in tokens])
    batch = dreambooth_batch(components["tokenizer"], prior=True)

    def losses(masks=None, weight=9.0):
        module.settings = replace(settings, subject_loss_weight=weight)
        torch.manual_seed(1)
        with torch.no_grad():
            return module.compute_loss(batch if masks is None else {**batch, "subject_mask": masks})

    plain = losses(weight=0.0)
    # no subject in the masks: the weights are all one, the loss the plain one
    empty = losses(torch.zeros(2, 1, 32, 32))
    torch.testing.assert_close(empty.loss, plain.loss)
    # a subject: the instance term changes, the prior term (class images carry no mask) does not
    masks = torch.zeros(2, 1, 32, 32)
    masks[:, :, 8:24, 12:20] = 1.0
    weighted = losses(masks)
    assert not torch.allclose(weighted.instance_loss, plain.instance_loss)
    torch.testing.assert_close(weighted.prior_loss, plain.prior_loss)
    # a batch without masks (the stage hands none when the weight is 0) trains unweighted
    torch.testing.assert_close(losses().loss, plain.loss)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_each_pretrainer_trains_on_its_own_compute_loss(tiny, one_thread):
    components, _ = tiny
    pixels = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    batch = {"pixel_values": pixels, "input_ids": tokenize(components["tokenizer"], ["a dog", "a dog on a beach"])}
    clip, _ = tiny_clip(components["tokenizer"], TinySizes())
    # built one at a time, in the stage's order: the text-to-image one freezes the shared VAE
    modules = [lambda: VaePretrainer(components["vae"], lr=1e-3, kl_weight=1e-3),
               lambda: TextToImagePretrainer(components["unet"], components["vae"], components["text_encoder"],
                                             components["scheduler"], lr=1e-4, weight_decay=0.0),
               lambda: ClipPretrainer(clip, lr=1e-4, weight_decay=0.0)]
    for build in modules:
        module = build()
        torch.manual_seed(1)
        computed = module.compute_loss(batch)
        computed = computed[0] if isinstance(computed, tuple) else computed
        torch.manual_seed(1)
        assert torch.equal(module.training_step(batch, 0), computed), type(module).__name__
        assert torch.isfinite(computed) and computed.requires_grad


def test_caption_retrieval_measures_the_images_it_is_handed(tiny, tmp_path, one_thread):
    components, _ = tiny
    clip, processor = tiny_clip(components["tokenizer"], TinySizes())
    rng = np.random.default_rng(0)
    items = []
    for i, caption in enumerate(["a dog on a beach", "a cartoon in a forest", "a dog on a beach"]):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        items.append(CaptionedImage(tmp_path / f"{i}.png", caption))
    images = CaptionedImages(items, components["tokenizer"], 32, image_processor=processor)
    clip.train()
    score = caption_retrieval_top1(clip, images)
    assert score in (0.0, 1 / 3, 2 / 3, 1.0) and clip.training   # a share of 3 images; train mode kept
    assert caption_retrieval_top1(clip, CaptionedImages([], components["tokenizer"], 32)) is None
