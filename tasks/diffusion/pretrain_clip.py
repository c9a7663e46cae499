"""Stage `pretrain_clip`: a tiny CLIP trained contrastively on SynthWorld image/caption pairs,
so CLIP-I (image-image) and CLIP-T (image-text) similarities mean something here. When
params.zoo.clip names a real CLIP the stage records it and trains nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import mlflow
import torch
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from lightning_modules.diffusion.data import CaptionedImages
from lightning_modules.diffusion.pretrain import ClipPretrainer, clip_image_features, clip_text_features
from tasks.core.curves import write_curves
from tasks.core.trainer import fit
from tasks.diffusion.setup import class_captions, seeded_loader
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import stage_run
from tasks.diffusion.models import clip_dir, write_record, zoo_model

STAGE = "pretrain_clip"


@torch.no_grad()
def retrieval_accuracy(clip: CLIPModel, dataset: CaptionedImages, count: int = 256) -> float:
    """Share of images whose most similar caption (among the distinct captions) is their own."""
    clip.eval()
    picks = range(0, len(dataset), max(1, len(dataset) // count))
    batch = [dataset[i] for i in picks]
    captions = [dataset.items[i].caption for i in picks]
    distinct = sorted(set(captions))
    tokens = dataset.tokenizer(distinct, padding="max_length", max_length=dataset.tokenizer.model_max_length,
                               truncation=True, return_tensors="pt").input_ids
    text = clip_text_features(clip, tokens)
    image = clip_image_features(clip, torch.stack([b["pixel_values"] for b in batch]))
    best = (image @ text.T).argmax(1)
    return float(sum(distinct[j] == c for j, c in zip(best.tolist(), captions)) / len(captions))


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.pretrain_clip
    zoo = zoo_model(params, "clip")
    target = clip_dir(params)
    outputs = (target, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    if not zoo["tiny"]:
        if is_rank_zero():
            with stage_run(STAGE, params), atomic_outputs(*outputs) as (tmp, tmp_metrics, tmp_plots):
                write_record(tmp, Path(zoo["path"]), pretrained=False)
                tmp_metrics.write_text(json.dumps({"skipped": True}) + "\n")
                tmp_plots.mkdir()
        return
    items = class_captions(params)
    if not items:
        raise InputDataError("data/augmented/manifest.csv: no training images to pretrain CLIP on")
    L.seed_everything(params.seed, workers=True, verbose=False)
    path = Path(zoo["path"])
    clip, processor = CLIPModel.from_pretrained(path), CLIPImageProcessor.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    dataset = CaptionedImages(items, tokenizer, processor.crop_size["height"], image_processor=processor)
    loader = seeded_loader(dataset, cfg.batch_size, params)
    key = {"count": len(items), "zoo": zoo["path"]}
    module = ClipPretrainer(clip, cfg.lr, cfg.weight_decay)
    if not is_rank_zero():
        fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.steps, run=None, checkpoint_key=key)
        return
    with stage_run(STAGE, params) as run, atomic_outputs(*outputs) as (tmp, tmp_metrics, tmp_plots):
        before = retrieval_accuracy(clip, dataset)
        fitted = fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.steps, run=run,
                     checkpoint_key=key)
        trainer, history, checkpoints = fitted.trainer, fitted.history, fitted.checkpoints
        after = retrieval_accuracy(clip, dataset)
        clip.save_pretrained(tmp / "model")
        processor.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        write_record(tmp, target / "model", pretrained=True)
        write_curves(history, tmp_plots)
        metrics = {"steps": trainer.global_step, "caption_retrieval_top1": {"before": before, "after": after},
                   "distinct_captions": len({i.caption for i in items})}
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        mlflow.log_metrics({"caption_retrieval_top1.before": before, "caption_retrieval_top1.after": after})
    shutil.rmtree(checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
