"""The tiny CLIP and SynthWorld's faces: its words, hard negative captions, the contrastive loss
with them, zero-shot attribute accuracy, and the pretrain_clip stage on faces."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from lightning_modules.diffusion.hard_negatives import flipped_captions
from lightning_modules.diffusion.pretrain import ClipPretrainer
from lightning_modules.diffusion.tiny import TinySizes, tiny_clip
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words
from lightning_modules.diffusion.zero_shot import FACE_PROMPTS, accuracies, face_zero_shot
from lightning_modules.synthworld import FACE_ATTRIBUTES, caption_of
from tasks.diffusion.setup import mix_in
from lightning_modules.diffusion.data import CaptionedImage
from tests.conftest import make_workspace, write_params

TOKENIZER = build_word_tokenizer(synthworld_words(), rare_token_pool(4), max_length=24)
COMBINATIONS = [dict(zip(FACE_ATTRIBUTES, values)) for values in itertools.product(*FACE_ATTRIBUTES.values())]


def test_every_face_caption_and_prompt_word_is_in_the_vocabulary():
    prompts = [p for _, by_value in FACE_PROMPTS.values() for p in by_value.values()]
    for text in [caption_of(c) for c in COMBINATIONS] + prompts:
        tokens = TOKENIZER(text).input_ids
        assert TOKENIZER.unk_token_id not in tokens, text
        assert len(tokens) <= TOKENIZER.model_max_length
    assert set(FACE_PROMPTS) == {"hair_style", "hair_color", "glasses", "mouth"}
    assert all(set(by_value) == set(FACE_ATTRIBUTES[name]) for name, by_value in FACE_PROMPTS.values())


def test_hard_negatives_change_exactly_one_attribute():
    values = {"hair_style": "curly", "hair_color": "red", "glasses": "no", "beard": "yes", "mouth": "smiling"}
    negatives = flipped_captions(values, FACE_ATTRIBUTES, ["glasses", "mouth"], caption_of, "0/a.png")
    assert negatives == flipped_captions(values, FACE_ATTRIBUTES, ["glasses", "mouth"], caption_of, "0/a.png")
    assert negatives[0] == "a smiling person with curly red hair, glasses and a beard"
    assert negatives[1] in ("a person with curly red hair and a beard",
                            "a person with curly red hair, a beard and the mouth open")
    assert caption_of(values) not in negatives


class EmbeddingClip(torch.nn.Module):
    """A stand-in CLIP whose text embedding is a one-hot of a token at a fixed place and whose
    image embedding is the pixels themselves: zero-shot answers are then known in advance."""

    def __init__(self, place: int, width: int):
        super().__init__()
        self.place, self.width = place, width

    def get_text_features(self, input_ids, attention_mask=None):
        return F.one_hot(input_ids[:, self.place], self.width).float()

    def get_image_features(self, pixel_values):
        return pixel_values


def test_zero_shot_picks_the_most_similar_prompt_and_scores_it():
    prompts = FACE_PROMPTS["hair_color"][1]
    colors = FACE_ATTRIBUTES["hair_color"]
    ids = TOKENIZER(prompts[colors[0]]).input_ids
    place = ids.index(TOKENIZER.convert_tokens_to_ids(colors[0]))   # "a person with <c> hair"
    clip = EmbeddingClip(place, len(TOKENIZER)).train()
    truth = ["black", "brown", "blond", "red", "gray", "red", "red", "red"]
    shown = ["black", "brown", "blond", "red", "gray", "red", "red", "gray"]   # the last image looks gray
    pixels = F.one_hot(torch.tensor(TOKENIZER.convert_tokens_to_ids(shown)), len(TOKENIZER)).float()
    vocabularies = {name: FACE_ATTRIBUTES[name] for name in FACE_ATTRIBUTES}
    attributes = {"hair_style": ["curly"] * 8, "hair_color": truth, "glasses": ["no"] * 8, "mouth": ["closed"] * 8}
    result = face_zero_shot(clip, TOKENIZER, pixels, attributes, vocabularies)
    assert result["hair_color"]["accuracy"] == pytest.approx(7 / 8)
    assert result["hair_color"]["balanced_accuracy"] == pytest.approx((4 + 3 / 4) / 5)
    assert result["hair_color"]["majority"] == pytest.approx(4 / 8)
    assert clip.training   # left as it was
    with pytest.raises(ValueError, match="hair_color"):
        face_zero_shot(clip, TOKENIZER, pixels, attributes, {**vocabularies, "hair_color": colors + ["green"]})


def test_balanced_accuracy_gives_a_constant_guess_chance():
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    scores = accuracies(torch.zeros(10, dtype=torch.long), labels, 3)
    assert scores == pytest.approx({"accuracy": 0.6, "balanced_accuracy": 1 / 3, "majority": 0.6})


def test_clip_loss_with_hard_negatives():
    clip, _ = tiny_clip(TOKENIZER, TinySizes(resolution=16, text_width=32, vision_width=32, projection_dim=16))
    module = ClipPretrainer(clip, lr=1e-3, weight_decay=0.0)
    captions = ["a person with curly red hair", "a person with short gray hair and glasses", "a dog on a beach"]
    ids = TOKENIZER(captions, padding="max_length", max_length=24, return_tensors="pt").input_ids
    batch = {"pixel_values": torch.randn(3, 3, 16, 16), "input_ids": ids}
    plain = module.compute_loss(batch)
    # The loss CLIP pretraining had before negatives existed: symmetric, same captions positives.
    logits = clip(input_ids=ids, pixel_values=batch["pixel_values"]).logits_per_image
    same = (ids[:, None] == ids[None]).all(-1).float()
    targets = same / same.sum(1, keepdim=True)
    reference = 0.5 * (torch.sum(-targets * F.log_softmax(logits, 1), 1).mean()
                       + torch.sum(-targets * F.log_softmax(logits.t(), 1), 1).mean())
    assert torch.allclose(plain, reference)
    negatives = TOKENIZER(["a person with curly red hair and glasses", "a person with short gray hair",
                           "", "", "", ""], padding="max_length", max_length=24, return_tensors="pt").input_ids
    hidden = torch.zeros(3, 2, dtype=torch.bool)
    with_none = module.compute_loss({**batch, "negative_input_ids": negatives.view(3, 2, -1), "negative_mask": hidden})
    assert torch.allclose(with_none, plain)
    shown = hidden.clone()
    shown[0, 0] = shown[0, 1] = True
    harder = module.compute_loss({**batch, "negative_input_ids": negatives.view(3, 2, -1), "negative_mask": shown})
    assert torch.isfinite(harder) and harder > plain   # more captions to lose against
    harder.backward()


def test_mix_in_gives_the_share_and_keeps_every_picture():
    subjects = [CaptionedImage(f"s{i}.png", "a dog") for i in range(10)]
    faces = [CaptionedImage(f"f{i}.png", "a person") for i in range(7)]
    for share in (0.3, 0.5, 0.6, 0.9):
        mixed = mix_in(subjects, faces, share)
        assert set(mixed) == set(subjects) | set(faces)
        assert sum(item in faces for item in mixed) / len(mixed) == pytest.approx(share, abs=0.05)
    assert mix_in(subjects, faces, 0.0) == subjects and mix_in(subjects, faces, 1.0) == faces


@pytest.fixture(scope="module")
def smoke_faces(tmp_path_factory):
    """A smoke workspace with everything pretrain_clip reads: augmented subjects, the zoo, faces."""
    return make_workspace(tmp_path_factory.mktemp("clip") / "ws", git=False)


def test_pretrain_clip_learns_faces_and_reports_zero_shot_accuracy(smoke_faces, in_process):
    for stage in ("synthesize", "augment", "zoo", "synthesize_faces", "pretrain_clip"):
        in_process(stage, smoke_faces)
    metrics = json.loads((smoke_faces / "metrics" / "pretrain_clip.json").read_text())
    faces = json.loads((smoke_faces / "metrics" / "synthesize_faces.json").read_text())
    assert metrics["training_faces"] == faces["splits"]["train"]
    zero_shot = metrics["face_zero_shot"]
    assert zero_shot["split"] == "test" and zero_shot["images"] == faces["splits"]["test"]
    for when in ("before", "after"):
        assert set(zero_shot[when]) == {"hair_style", "hair_color", "glasses", "mouth"}
        assert all(0 <= v["balanced_accuracy"] <= 1 for v in zero_shot[when].values())


def test_pretrain_clip_refuses_an_unknown_attribute(smoke_faces, in_process, capsys):
    if not (smoke_faces / "data" / "faces").is_dir():
        pytest.skip("needs the faces of the stage test")
    bad = write_params(smoke_faces, "bad.yaml", lambda p: p["pretrain_clip"].update(hard_negatives=["freckles"]))
    with pytest.raises(SystemExit) as stop:
        in_process("pretrain_clip", smoke_faces, "--params", bad)
    message = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in message
    assert "pretrain_clip.hard_negatives: 'freckles'" in message, message
