"""The generation metrics (lightning_modules/core/metrics/generation.py) against independent
computations: hand-built embeddings with known cosines, plain double loops, torchmetrics'
CLIPScore on a tiny CLIP, and a real 2-process gloo group for the rank sync."""

from __future__ import annotations

import math
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torchmetrics.utilities.data import dim_zero_sum

from lightning_modules.core.metrics import (
    IdentityAccuracy,
    ImageImageSimilarity,
    PromptAccuracy,
    TextImageSimilarity,
    clip_image_embeddings,
    clip_text_embeddings,
    dino_cls_embeddings,
    dominant_subject,
)


def numpy_mean_pair_cosine(groups: list[tuple[np.ndarray, np.ndarray]]) -> float:
    """Mean cosine over every (generated, reference) pair of every group, one pair at a time."""
    total, pairs = 0.0, 0
    for generated, references in groups:
        for g in generated:
            for r in references:
                total += float(g @ r / (np.linalg.norm(g) * np.linalg.norm(r)))
                pairs += 1
    return total / pairs


# --- CLIP-I / DINO ---------------------------------------------------------------------------

def test_image_image_similarity_of_known_cosines():
    metric = ImageImageSimilarity()
    # pairs: (e1, e1) = 1, (e1, e1 + e2) = 1/sqrt2, (e2, e1) = 0, (e2, e1 + e2) = 1/sqrt2;
    # lengths do not matter (3 e1 is e1)
    metric.update(torch.tensor([[3.0, 0.0], [0.0, 1.0]]), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
    assert metric.compute().item() == pytest.approx((1 + math.sqrt(2)) / 4, abs=1e-12)
    identical, opposite = ImageImageSimilarity(), ImageImageSimilarity()
    identical.update(torch.ones(3, 5), torch.ones(2, 5))
    opposite.update(torch.ones(1, 5), -torch.ones(4, 5))
    assert identical.compute().item() == pytest.approx(1.0) and opposite.compute().item() == pytest.approx(-1.0)
    with pytest.warns(UserWarning, match="before the ``update`` method"):
        assert math.isnan(ImageImageSimilarity().compute().item())   # nothing seen: no mean


def test_image_image_similarity_is_the_mean_over_all_pairs_of_all_subjects():
    g = torch.Generator().manual_seed(0)
    groups = [(torch.randn(n, 16, generator=g), torch.randn(m, 16, generator=g)) for n, m in ((5, 3), (2, 7), (4, 1))]
    metric = ImageImageSimilarity()
    for generated, references in groups:
        metric.update(generated, references)
    expected = numpy_mean_pair_cosine([(a.numpy().astype(np.float64), b.numpy().astype(np.float64)) for a, b in groups])
    assert metric.compute().item() == pytest.approx(expected, abs=1e-6)


def test_image_image_similarity_in_batches_equals_one_batch():
    g = torch.Generator().manual_seed(1)
    generated, references = torch.randn(9, 8, generator=g), torch.randn(4, 8, generator=g)
    whole, batched = ImageImageSimilarity(), ImageImageSimilarity()
    whole.update(generated, references)
    for chunk in generated.split(2):
        batched.update(chunk, references)
    assert batched.compute().item() == pytest.approx(whole.compute().item(), abs=1e-12)


def test_image_image_similarity_refuses_mismatched_embeddings():
    with pytest.raises(ValueError, match="embedding sizes differ"):
        ImageImageSimilarity().update(torch.ones(2, 4), torch.ones(2, 5))
    with pytest.raises(ValueError, match="expected N x D"):
        ImageImageSimilarity().update(torch.ones(4), torch.ones(2, 4))


# --- CLIP-T --------------------------------------------------------------------------------

def test_text_image_similarity_of_known_cosines():
    metric = TextImageSimilarity()
    images = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    texts = torch.tensor([[5.0, 0.0], [1.0, 0.0], [1.0, 0.0]])   # cosines 1, 0, 1/sqrt2
    metric.update(images, texts)
    assert metric.compute().item() == pytest.approx((1 + 0 + 1 / math.sqrt(2)) / 3, abs=1e-12)
    with pytest.raises(ValueError, match="one prompt embedding per image"):
        metric.update(torch.ones(2, 2), torch.ones(3, 2))


def test_text_image_similarity_matches_a_loop_in_batches_or_not():
    g = torch.Generator().manual_seed(2)
    images, texts = torch.randn(11, 12, generator=g), torch.randn(11, 12, generator=g)
    expected = np.mean([float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
                        for a, b in zip(images.double().numpy(), texts.double().numpy())])
    whole, batched = TextImageSimilarity(), TextImageSimilarity()
    whole.update(images, texts)
    for a, b in zip(images.split(3), texts.split(3)):
        batched.update(a, b)
    assert whole.compute().item() == pytest.approx(expected, abs=1e-6)
    assert batched.compute().item() == pytest.approx(whole.compute().item(), abs=1e-12)


# --- identity accuracy ---------------------------------------------------------------------

def segmenter_logits(label_maps: list[list[list[int]]], classes: int) -> torch.Tensor:
    """Logits whose per-pixel argmax is the given label map."""
    labels = torch.tensor(label_maps)
    return torch.nn.functional.one_hot(labels, classes).permute(0, 3, 1, 2).float() * 5.0


def test_dominant_subject_counts_subject_pixels_and_ignores_the_background():
    logits = segmenter_logits([
        [[0, 0, 0], [0, 1, 0], [0, 0, 0]],    # mostly background, one pixel of subject 0 (class 1)
        [[2, 2, 1], [1, 0, 0], [3, 3, 3]],    # class 3 has 3 pixels, class 1 and 2 have 2
        [[0, 0, 0], [0, 0, 0], [0, 0, 0]],    # no subject at all
        [[1, 2, 0], [0, 0, 0], [0, 0, 0]],    # a tie: the lower subject index
    ], classes=4)
    assert dominant_subject(logits).tolist() == [0, 2, -1, 0]
    with pytest.raises(ValueError, match="N x C x H x W"):
        dominant_subject(torch.zeros(2, 1, 4, 4))


def test_identity_accuracy_per_subject_and_overall():
    metric = IdentityAccuracy(3, ["sks dog", "zwx robot", "qrt vase"])
    # subject 0: 2 of 3 right; subject 1: 1 of 2 (-1 = no subject found is wrong); subject 2: never prompted
    metric.update(torch.tensor([0, 0, 1]), torch.tensor([0, 0, 0]))
    metric.update(torch.tensor([1, -1]), torch.tensor([1, 1]))
    result = metric.compute()
    assert result["overall"].item() == pytest.approx(3 / 5)
    per_subject = {k: v.item() for k, v in result["per_subject"].items()}
    assert per_subject["sks dog"] == pytest.approx(2 / 3) and per_subject["zwx robot"] == pytest.approx(0.5)
    assert math.isnan(per_subject["qrt vase"])
    with pytest.raises(ValueError, match=r"target subject indices must be in \[0, 3\)"):
        metric.update(torch.tensor([0]), torch.tensor([3]))


def test_identity_accuracy_from_segmenter_logits_end_to_end():
    logits = segmenter_logits([[[1, 1], [0, 0]], [[2, 0], [0, 0]], [[0, 0], [0, 0]]], classes=3)
    metric = IdentityAccuracy(2)
    metric.update(dominant_subject(logits), torch.tensor([0, 0, 1]))
    assert metric.compute()["overall"].item() == pytest.approx(1 / 3)


# --- prompt accuracy -----------------------------------------------------------------------

def test_prompt_accuracy_skips_scenes_no_prompt_named():
    class_logits = torch.tensor([[9.0, 0.0], [0.0, 9.0], [9.0, 0.0], [9.0, 0.0]])      # predicts 0, 1, 0, 0
    scene_logits = torch.tensor([[0.0, 9.0, 0.0], [9.0, 0.0, 0.0], [0.0, 0.0, 9.0], [9.0, 0.0, 0.0]])  # 1, 0, 2, 0
    class_target = torch.tensor([0, 0, 0, 0])    # right, wrong, right, right
    scene_target = torch.tensor([1, 0, 0, -1])   # right, right, wrong, none named
    metric = PromptAccuracy()
    metric.update(class_logits[:2], scene_logits[:2], class_target[:2], scene_target[:2])
    metric.update(class_logits[2:], scene_logits[2:], class_target[2:], scene_target[2:])
    result = {k: v.item() for k, v in metric.compute().items()}
    # both: #0 passes, #1 fails its class, #2 fails its scene, #3 passes its only check (the class)
    assert result == pytest.approx({"class": 3 / 4, "scene": 2 / 3, "both": 2 / 4})
    only_classes = PromptAccuracy()
    only_classes.update(class_logits, scene_logits, class_target, torch.full((4,), -1))
    assert math.isnan(only_classes.compute()["scene"].item())


# --- sync across ranks ---------------------------------------------------------------------

def shards(seed: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [{"generated": torch.randn(n, 6, generator=g), "references": torch.randn(4, 6, generator=g),
             "texts": torch.randn(n, 6, generator=g), "predicted": torch.randint(-1, 3, (n,), generator=g),
             "target": torch.randint(0, 3, (n,), generator=g), "class_logits": torch.randn(n, 4, generator=g),
             "scene_logits": torch.randn(n, 5, generator=g), "class_target": torch.randint(0, 4, (n,), generator=g),
             "scene_target": torch.randint(-1, 5, (n,), generator=g)} for n in (5, 3)]


def fresh_metrics() -> dict:
    return {"clip_i": ImageImageSimilarity(), "clip_t": TextImageSimilarity(), "identity": IdentityAccuracy(3),
            "prompt": PromptAccuracy()}


def feed(metrics: dict, shard: dict) -> None:
    metrics["clip_i"].update(shard["generated"], shard["references"])
    metrics["clip_t"].update(shard["generated"], shard["texts"])
    metrics["identity"].update(shard["predicted"], shard["target"])
    metrics["prompt"].update(shard["class_logits"], shard["scene_logits"], shard["class_target"], shard["scene_target"])


def results(metrics: dict) -> dict[str, float]:
    identity, prompt = metrics["identity"].compute(), metrics["prompt"].compute()
    return {"clip_i": metrics["clip_i"].compute().item(), "clip_t": metrics["clip_t"].compute().item(),
            "identity": identity["overall"].item(),
            **{f"identity.{k}": v.item() for k, v in identity["per_subject"].items()},
            **{f"prompt.{k}": v.item() for k, v in prompt.items()}}


def single_process_results() -> dict[str, float]:
    metrics = fresh_metrics()
    for shard in shards():
        feed(metrics, shard)
    return results(metrics)


def test_states_merge_by_sum_as_ranks_would():
    """What torchmetrics' sync does with dist_reduce_fx="sum": each rank's states summed."""
    per_rank = [fresh_metrics(), fresh_metrics()]
    for metrics, shard in zip(per_rank, shards()):
        feed(metrics, shard)
    for name, metric in per_rank[0].items():
        assert set(metric._reductions.values()) == {dim_zero_sum}, name   # every state: dist_reduce_fx="sum"
        metric.merge_state(per_rank[1][name])
    assert results(per_rank[0]) == pytest.approx(single_process_results(), nan_ok=True)


def _rank_main(rank: int, port: int, queue) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        metrics = fresh_metrics()
        feed(metrics, shards()[rank])
        queue.put((rank, results(metrics)))   # compute() gathers and sums the states of both ranks
    finally:
        torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow   # two fresh interpreters importing torch
def test_two_gloo_ranks_compute_what_one_process_computes():
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(_rank_main, args=(free_port(), queue), nprocs=2, join=True, start_method="spawn")
    got = dict(queue.get() for _ in range(2))
    expected = single_process_results()
    assert got[0] == pytest.approx(expected, nan_ok=True) and got[1] == pytest.approx(expected, nan_ok=True)


# --- the embedding helpers and CLIP-T against torchmetrics' CLIPScore ----------------------

@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    """A tiny CLIP (zoo's builder, SynthWorld's word tokenizer) saved as a local model directory."""
    from lightning_modules.diffusion.tiny import TinySizes, tiny_clip
    from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words

    torch.manual_seed(0)
    tokenizer = build_word_tokenizer(synthworld_words(), rare_token_pool(8), max_length=16)
    model, processor = tiny_clip(tokenizer, TinySizes(resolution=32, text_width=32, text_layers=1, vision_width=32,
                                                      vision_layers=1, projection_dim=32))
    directory = tmp_path_factory.mktemp("clip") / "tiny-clip"
    for part in (model, processor, tokenizer):
        part.save_pretrained(directory)
    return directory


class TensorFeatures(torch.nn.Module):
    """A CLIPModel whose get_*_features return the projected tensor. transformers 5 returns a model
    output instead, on which torchmetrics 1.9's CLIPScore calls `.norm` and fails (fixed upstream in
    Lightning-AI/torchmetrics#3408); its callable `model_name_or_path` takes any model with these
    two methods, so the same weights go in through it."""

    def __init__(self, clip):
        super().__init__()
        self.clip, self.config = clip, clip.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self.clip.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self.clip.get_text_features(*args, **kwargs).pooler_output


def test_clip_t_agrees_with_torchmetrics_clip_score(tiny_clip_dir):
    from torchmetrics.multimodal import CLIPScore
    from transformers import CLIPModel, CLIPProcessor

    # A local directory by name is refused by torchmetrics 1.9 (it dispatches on "openai" /
    # "jinaai" / "zer0int" in the name); the loader callable is its documented way in.
    with pytest.raises(ValueError, match="Not supported by `clip_score`"):
        CLIPScore(model_name_or_path=str(tiny_clip_dir))
    clip, processor = CLIPModel.from_pretrained(tiny_clip_dir).eval(), CLIPProcessor.from_pretrained(tiny_clip_dir)
    reference = CLIPScore(model_name_or_path=lambda: (TensorFeatures(clip), processor))

    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 32, 32), generator=g, dtype=torch.uint8)
    captions = ["a dog on a beach", "a robot in a city", "a vase in a room", "a cartoon at night",
                "a dog in a forest", "a vase on a snow"]
    with torch.no_grad():
        pixel_values = processor(images=list(images), return_tensors="pt")["pixel_values"]
        # max_length padding where CLIPScore pads to the longest: the causal text tower's
        # end-of-text feature is the same either way
        tokens = processor.tokenizer(captions, padding="max_length", max_length=16, return_tensors="pt")
        image_embeddings = clip_image_embeddings(clip, pixel_values)
        text_embeddings = clip_text_embeddings(clip, tokens["input_ids"], tokens["attention_mask"])
    assert torch.allclose(image_embeddings.norm(dim=-1), torch.ones(6), atol=1e-6)

    # CLIPScore is 100 x max(mean cosine, 0): compare image by image, and on the whole set
    cosines = []
    for i in range(len(captions)):
        ours, theirs = TextImageSimilarity(), CLIPScore(model_name_or_path=lambda: (TensorFeatures(clip), processor))
        ours.update(image_embeddings[i:i + 1], text_embeddings[i:i + 1])
        with torch.no_grad():
            theirs.update(images[i], captions[i])
        cosine = ours.compute().item()
        cosines.append(cosine)
        # CLIPScore's summed state is 100 x the cosine before its clamp at 0: exact either sign
        assert (theirs.score / theirs.n_samples).item() == pytest.approx(100 * cosine, abs=1e-3)
        assert theirs.compute().item() == pytest.approx(100 * max(cosine, 0.0), abs=1e-3)
    assert any(c > 0.01 for c in cosines) and len(set(round(c, 4) for c in cosines)) == len(cosines)
    ours = TextImageSimilarity()
    ours.update(image_embeddings, text_embeddings)
    with torch.no_grad():
        reference.update(list(images), captions)
    assert (reference.score / reference.n_samples).item() == pytest.approx(100 * ours.compute().item(), abs=1e-3)
    assert reference.compute().item() == pytest.approx(100 * max(ours.compute().item(), 0.0), abs=1e-3)


def test_dino_cls_embeddings_are_the_vit_cls_token():
    from lightning_modules.diffusion.tiny import TinySizes, tiny_dino

    vit, _ = tiny_dino(TinySizes(resolution=16, vision_width=32, vision_layers=1, patch_size=4))
    pixels = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        embeddings = dino_cls_embeddings(vit.eval(), pixels)
        assert torch.equal(embeddings, vit(pixel_values=pixels).last_hidden_state[:, 0])
    assert embeddings.shape == (3, 32)
    metric = ImageImageSimilarity()
    metric.update(embeddings[:1], embeddings[:1])
    assert metric.compute().item() == pytest.approx(1.0)
