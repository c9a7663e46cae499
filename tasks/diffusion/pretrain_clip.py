"""Stage `pretrain_clip`: a tiny CLIP trained contrastively on SynthWorld image/caption pairs,
so CLIP-I (image-image) and CLIP-T (image-text) similarities mean something here. When
params.zoo.clip names a real CLIP the stage records it and trains nothing.

How well it learned is caption retrieval on the augment stage's held-out (val) images,
captioned as the training ones are, before and after training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning as L
import mlflow
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from lightning_modules.diffusion.data import CaptionedImages
from lightning_modules.diffusion.pretrain import ClipPretrainer
from lightning_modules.diffusion.retrieval import caption_retrieval_top1
from tasks.core.curves import write_curves
from tasks.core.trainer import fit
from tasks.diffusion.setup import class_captions, pretraining_key, seeded_loader
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import stage_run
from tasks.core.models import clip_dir, record_real_model, write_record, zoo_model

STAGE = "pretrain_clip"


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.pretrain_clip
    zoo = zoo_model(params, "clip")
    target = clip_dir(params)
    outputs = (target, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    if not zoo["tiny"]:
        record_real_model(STAGE, params, outputs, Path(zoo["path"]))
        return
    items = class_captions(params)
    if not items:
        raise InputDataError("data/augmented/manifest.csv: no training images to pretrain CLIP on")
    L.seed_everything(params.seed, workers=True, verbose=False)
    path = Path(zoo["path"])
    clip, processor = CLIPModel.from_pretrained(path), CLIPImageProcessor.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    size = processor.crop_size["height"]
    dataset = CaptionedImages(items, tokenizer, size, image_processor=processor)
    loader = seeded_loader(dataset, cfg.batch_size, params)
    key = pretraining_key(params, items, path)
    module = ClipPretrainer(clip, cfg.lr, cfg.weight_decay)
    if not is_rank_zero():
        fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.steps, run=None, checkpoint_key=key)
        return
    heldout = CaptionedImages(class_captions(params, split="val"), tokenizer, size, image_processor=processor)
    with stage_run(STAGE, params) as run, atomic_outputs(*outputs) as (tmp, tmp_metrics, tmp_plots):
        before = caption_retrieval_top1(clip, heldout)
        fitted = fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.steps, run=run,
                     checkpoint_key=key)
        trainer, history, checkpoints = fitted.trainer, fitted.history, fitted.checkpoints
        after = caption_retrieval_top1(clip, heldout)
        clip.save_pretrained(tmp / "model")
        processor.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        write_record(tmp, target / "model", pretrained=True)
        write_curves(history, tmp_plots)
        metrics = {"steps": trainer.global_step, "training_images": len(items),
                   "distinct_captions": len({i.caption for i in items}),
                   "heldout_caption_retrieval_top1": {"split": "val", "images": len(heldout),
                                                      "before": before, "after": after}}
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        if len(heldout):   # augment.val_count may be 0: nothing held out, null in the metrics
            mlflow.log_metrics({"heldout_caption_retrieval_top1.before": before,
                                "heldout_caption_retrieval_top1.after": after})
    shutil.rmtree(checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
