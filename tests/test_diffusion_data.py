"""What the diffusion stages train and measure on (fast, no workspace run): caption dropout
redrawn every epoch, held-out images for CLIP retrieval, and checkpoints keyed by the data."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from torch.utils.data import DataLoader

from lightning_modules.diffusion.data import CaptionedImage, CaptionedImages, EncodedImages, tokenize
from lightning_modules.diffusion.finetune import FinetuneSettings
from lightning_modules.diffusion.losses import denoising_losses, subject_weights
from lightning_modules.diffusion.pretrain import TextToImagePretrainer
from lightning_modules.diffusion.tiny import TinySizes, tiny_text_to_image
from lightning_modules.diffusion.tokenizer import build_word_tokenizer, rare_token_pool, synthworld_words
from tasks.core.params import Params
from tasks.core.trainer import checkpoint_dir
from tasks.diffusion.setup import class_captions, pretraining_key, settings_from

MANIFEST_FIELDS = ("image", "mask", "subject", "identifier", "class_noun", "prompt", "split", "scene_caption")


@pytest.fixture(scope="module")
def tokenizer():
    return build_word_tokenizer(synthworld_words(), rare_token_pool(8), 32)


@pytest.fixture()
def one_thread():
    """Tiny models gain nothing from intra-op threads; on a busy 2-core machine their threads
    wait on each other (a 1-second fit takes half a minute)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def write_png(path: Path, seed: int, size: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_augmented(data: Path, splits: list[str], seed: int = 0) -> None:
    """An augment stage's output in miniature: a manifest and its images."""
    root = data / "augmented"
    rows = []
    for i, split in enumerate(splits):
        name = f"images/{i:04d}.png"
        write_png(root / name, seed * 1000 + i)
        noun, scene = ("dog", "cartoon")[i % 2], ("on a beach", "in a forest", "in a city")[i % 3]
        rows.append({"image": name, "mask": "", "subject": f"s{i % 2}", "identifier": "sks", "class_noun": noun,
                     "prompt": f"a sks {noun}", "split": split, "scene_caption": scene})
    with (root / "manifest.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def workspace_params(root: Path):
    return Params.model_validate({"paths": {"data": str(root / "data"), "checkpoints": str(root / "checkpoints")}})


# --- caption dropout ---------------------------------------------------------------------

def dropped(dataset: CaptionedImages, epoch: int) -> set[int]:
    dataset.set_epoch(epoch)
    return {i for i in range(len(dataset)) if dataset.dropped(i)}


def test_caption_dropout_is_redrawn_every_epoch_and_reproducible_by_seed(tokenizer):
    items = [CaptionedImage(Path(f"{i}.png"), "a dog on a beach") for i in range(400)]
    dataset = CaptionedImages(items, tokenizer, 32, caption_dropout=0.1, seed=3)
    epochs = [dropped(dataset, epoch) for epoch in range(4)]
    assert all(20 < len(d) < 60 for d in epochs)            # about 10% each epoch
    assert len({frozenset(d) for d in epochs}) == 4          # a different draw every epoch
    assert len(set.union(*epochs)) > 1.5 * len(epochs[0])   # so more images are unconditional at times
    again = CaptionedImages(items, tokenizer, 32, caption_dropout=0.1, seed=3)
    assert [dropped(again, epoch) for epoch in range(4)] == epochs   # same seed and epoch: same draw
    assert dropped(CaptionedImages(items, tokenizer, 32, caption_dropout=0.1, seed=4), 0) != epochs[0]
    assert not dropped(CaptionedImages(items, tokenizer, 32, caption_dropout=0.0, seed=3), 0)


def test_a_dropped_caption_is_the_empty_prompt(tokenizer, tmp_path):
    items = [CaptionedImage(write_png(tmp_path / f"{i}.png", i), "a dog on a beach") for i in range(8)]
    dataset = CaptionedImages(items, tokenizer, 32, caption_dropout=0.5, seed=0)
    empty, caption = tokenize(tokenizer, [""])[0], tokenize(tokenizer, ["a dog on a beach"])[0]
    for epoch in range(3):
        dataset.set_epoch(epoch)
        for i in range(len(dataset)):
            assert torch.equal(dataset[i]["input_ids"], empty if dataset.dropped(i) else caption)


# --- the subjects' share of the loss ------------------------------------------------------

def test_subject_masks_come_with_the_images_area_resized_and_zero_without_a_subject(tokenizer, tmp_path):
    mask = np.zeros((64, 64), np.uint8)
    mask[0:16, 0:32] = 7                       # any non-zero label is a subject: 1/8 of the picture
    Image.fromarray(mask).save(tmp_path / "mask.png")
    image = write_png(tmp_path / "image.png", 0, size=64)
    items = [CaptionedImage(image, "a dog on a beach", tmp_path / "mask.png"), CaptionedImage(image, "on a beach")]
    dataset = CaptionedImages(items, tokenizer, 32, masks=True)
    with_subject, scene_only = dataset[0]["subject_mask"], dataset[1]["subject_mask"]
    assert with_subject.shape == scene_only.shape == (1, 32, 32)
    assert with_subject.mean().item() == pytest.approx(1 / 8)
    assert with_subject[0, :8, :16].min().item() == 1.0 and with_subject[0, 8:, :].max().item() == 0.0
    assert scene_only.abs().sum().item() == 0.0
    assert "subject_mask" not in CaptionedImages(items, tokenizer, 32)[0]


def test_subject_weights_raise_the_subjects_pixels_by_one_plus_w_and_keep_the_mean_at_one():
    masks = torch.zeros(2, 1, 8, 8)
    masks[0, :, :1, :4] = 1.0                  # a strip of the first image; the second has no subject
    weights = subject_weights(masks, (4, 4), subject_weight=9.0)
    assert weights.shape == (2, 1, 4, 4)
    assert weights.mean(dim=(1, 2, 3)).tolist() == pytest.approx([1.0, 1.0])
    # a latent pixel half covered by the subject gets 1 + 9 * 0.5 against 1 for the background
    assert (weights[0, 0, 0, 0] / weights[0, 0, 3, 3]).item() == pytest.approx(5.5)
    assert torch.allclose(weights[1], torch.ones(1, 4, 4))


def test_weighted_denoising_loss_is_the_plain_one_under_unit_weights_and_scales_with_them(tokenizer):
    torch.manual_seed(0)
    c = tiny_text_to_image(tokenizer, TinySizes())
    latents, ids = torch.randn(2, 4, 16, 16), tokenize(tokenizer, ["a dog", "on a beach"])

    def loss(weights):
        torch.manual_seed(1)
        with torch.no_grad():
            return denoising_losses(c["unet"], c["text_encoder"], c["scheduler"], latents, ids, weights)

    plain = loss(None)
    assert torch.allclose(loss(torch.ones(2, 1, 16, 16)), plain)
    assert torch.allclose(loss(torch.full((2, 1, 16, 16), 3.0)), 3 * plain)
    # the halves' weighted losses add up to the plain one
    left, right = torch.zeros(2, 1, 16, 16), torch.zeros(2, 1, 16, 16)
    left[..., :8], right[..., 8:] = 1.0, 1.0
    assert torch.allclose(loss(left) + loss(right), plain, atol=1e-6)


def test_encoded_images_hold_the_frozen_vaes_posterior_and_the_wrapped_captions(tokenizer, tmp_path, one_thread):
    torch.manual_seed(0)
    c = tiny_text_to_image(tokenizer, TinySizes())
    c["vae"].eval()
    items = [CaptionedImage(write_png(tmp_path / f"{i}.png", i), f"a dog on a beach {i}") for i in range(5)]
    images = CaptionedImages(items, tokenizer, 32, caption_dropout=0.5, seed=1)
    encoded = EncodedImages(images, c["vae"], batch_size=2)   # chunks of 2: the last one is short
    with torch.no_grad():
        posterior = c["vae"].encode(torch.stack([images[i]["pixel_values"] for i in range(5)])).latent_dist
    torch.testing.assert_close(encoded.means, posterior.mean)
    torch.testing.assert_close(encoded.stds, posterior.std)
    for epoch in range(3):
        encoded.set_epoch(epoch)
        assert images.epoch == epoch
        assert [torch.equal(encoded[i]["input_ids"], images[i]["input_ids"]) for i in range(5)] == [True] * 5
    # the pretrainer samples latents from it: a finite loss that moves with the noise drawn
    module = TextToImagePretrainer(c["unet"], c["vae"], c["text_encoder"], c["scheduler"], lr=1e-4,
                                   weight_decay=0.0)
    batch = {k: torch.stack([encoded[i][k] for i in range(4)]) for k in ("latent_mean", "latent_std", "input_ids")}
    with torch.no_grad():
        losses = [module.compute_loss(batch) for _ in range(2)]
    assert all(torch.isfinite(x) for x in losses) and losses[0] != losses[1]


class SeenEpochs(L.Callback):
    """Per batch: the trainer's epoch, the epoch the dataset draws dropout from, and which
    items of the batch came without their caption."""

    def __init__(self, dataset: CaptionedImages, empty: torch.Tensor):
        self.dataset, self.empty, self.seen = dataset, empty, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        uncaptioned = tuple(bool(torch.equal(ids, self.empty)) for ids in batch["input_ids"])
        self.seen.append((trainer.current_epoch, self.dataset.epoch, batch_idx, uncaptioned))


def pretraining_fit(tokenizer, items, max_steps: int, checkpoints: Path, resume: Path | None = None):
    """TextToImagePretrainer on `items`, one image per batch (a step is seconds on a busy CPU)."""
    torch.manual_seed(0)
    components = tiny_text_to_image(tokenizer, TinySizes())
    dataset = CaptionedImages(items, tokenizer, 32, caption_dropout=0.5, seed=0)
    module = TextToImagePretrainer(components["unet"], components["vae"], components["text_encoder"],
                                   components["scheduler"], lr=1e-4, weight_decay=0.0)
    seen = SeenEpochs(dataset, tokenize(tokenizer, [""])[0])
    # saved mid-epoch, as the stage's checkpoint_every_n_steps may, so that a run can resume there
    saving = ModelCheckpoint(dirpath=checkpoints, every_n_train_steps=3, save_top_k=-1, filename="{step}")
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[seen, saving])
    trainer.fit(module, DataLoader(dataset, batch_size=1, shuffle=False), ckpt_path=resume)
    return dataset, seen.seen


def test_pretraining_redraws_caption_dropout_each_epoch_of_a_real_fit(tokenizer, tmp_path, one_thread):
    items = [CaptionedImage(write_png(tmp_path / f"{i}.png", i), "a dog on a beach") for i in range(2)]
    dataset, seen = pretraining_fit(tokenizer, items, 6, tmp_path / "checkpoints")
    assert [(epoch, drawn) for epoch, drawn, _, _ in seen] == [(e, e) for e in (0, 0, 1, 1, 2, 2)]
    per_epoch: dict[int, set[int]] = {epoch: set() for epoch in range(3)}
    for epoch, _, batch_idx, (uncaptioned,) in seen:   # the batches really held that epoch's draw
        dataset.set_epoch(epoch)
        assert uncaptioned == dataset.dropped(batch_idx)
        if uncaptioned:
            per_epoch[epoch].add(batch_idx)
    assert len({frozenset(d) for d in per_epoch.values()}) > 1

    # A run killed mid-epoch resumes where Lightning skips on_train_epoch_start: the epoch it
    # draws from is still the checkpoint's, not 0.
    middle = tmp_path / "checkpoints" / "step=3.ckpt"   # after the first batch of epoch 1
    _, resumed = pretraining_fit(tokenizer, items, 6, tmp_path / "resumed", resume=middle)
    assert resumed and all(epoch == drawn for epoch, drawn, _, _ in resumed)
    assert resumed[0][0] == 1 and resumed[-1][0] == 2


# --- held-out images for CLIP -----------------------------------------------------------

def test_clip_retrieval_is_measured_on_heldout_images_captioned_like_the_training_ones(tmp_path):
    write_augmented(tmp_path / "data", ["train", "val", "train", "test", "val", "train", "train", "val"])
    params = workspace_params(tmp_path)
    training, heldout = class_captions(params), class_captions(params, split="val")
    assert len(training) == 4 and len(heldout) == 3
    assert not {i.path for i in training} & {i.path for i in heldout}
    with (tmp_path / "data" / "augmented" / "manifest.csv").open() as f:
        val = [r for r in csv.DictReader(f) if r["split"] == "val"]
    assert [i.caption for i in heldout] == [f"a {r['class_noun']} {r['scene_caption']}" for r in val]


# --- checkpoint keys --------------------------------------------------------------------

def test_pretraining_checkpoints_are_keyed_by_the_data_not_its_count(tmp_path):
    splits = ["train"] * 6 + ["val"] * 2
    zoo = tmp_path / "zoo"
    write_png(zoo / "unet" / "weights.png", 99)   # stands in for the model's files

    def directory(name: str, seed: int, model: Path = zoo) -> Path:
        write_augmented(tmp_path / name / "data", splits, seed=seed)
        params = workspace_params(tmp_path / name)
        # the checkpoint root is the same place in every workspace of this test
        params = params.model_copy(update={"paths": params.paths.model_copy(update={"checkpoints": tmp_path / "ck"})})
        return checkpoint_dir(params, "pretrain_base", pretraining_key(params, class_captions(params), model))

    same = directory("a", seed=0)
    assert directory("b", seed=0) == same           # the same data and model: a killed run resumes
    assert directory("c", seed=1) != same           # same count and names, other pictures
    other_zoo = tmp_path / "zoo2"
    write_png(other_zoo / "unet" / "weights.png", 98)
    assert directory("d", seed=0, model=other_zoo) != same


def test_finetune_settings_come_from_the_params_section_by_name():
    section = Params.model_validate({"finetune": {"mode": "full", "lr": 3e-4, "lora_rank": 8, "adam_betas": [0.8, 0.99]}}).finetune
    settings = settings_from(FinetuneSettings, section)
    assert settings.mode == "full" and settings.lr == 3e-4 and settings.lora_rank == 8
    assert settings.adam_betas == (0.8, 0.99)
    assert settings.prior_preservation_weight == section.prior_preservation_weight
    assert settings.train_identifier_embeddings is section.train_identifier_embeddings is True
