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

from lightning_modules.diffusion.data import CaptionedImage, CaptionedImages, tokenize
from lightning_modules.diffusion.finetune import FinetuneSettings
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
