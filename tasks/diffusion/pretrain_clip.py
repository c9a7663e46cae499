"""Stage `pretrain_clip`: a tiny CLIP trained contrastively on SynthWorld image/caption pairs,
so CLIP-I (image-image) and CLIP-T (image-text) similarities mean something here. When
params.zoo.clip names a real CLIP the stage records it and trains nothing.

Beside the subjects' class captions it learns SynthWorld's faces with their attribute captions
("a person with curly blond hair and glasses"; `face_share` of the pairs), so that a CLIP loss
can steer a face generator by hair color, glasses or expression (eCLIPsed). Each face also
brings hard negative captions (its caption with glasses or mouth changed), so small details
count as much as hair does.

How well it learned, before and after training: caption retrieval on the augment stage's
held-out (val) images, captioned as the training ones are, and zero-shot attribute accuracy
(hair color, glasses, mouth) on the faces' test split."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Sequence

import lightning as L
import mlflow
import torch
from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

from lightning_modules.data.faces import FacesFolder, read_faces_folder
from lightning_modules.diffusion.data import CaptionedImage, CaptionedImages
from lightning_modules.diffusion.hard_negatives import flipped_captions
from lightning_modules.diffusion.pretrain import ClipPretrainer
from lightning_modules.diffusion.retrieval import caption_retrieval_top1
from lightning_modules.diffusion.zero_shot import face_zero_shot
from lightning_modules.synthworld import FACE_ATTRIBUTES, caption_of
from tasks.core.curves import write_curves
from tasks.core.trainer import fit
from tasks.diffusion.setup import class_captions, mix_in, pretraining_key, seeded_loader
from tasks.core.errors import InputDataError, ParamsError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import log_metrics_tree, stage_run
from tasks.core.models import clip_dir, record_real_model, write_record, zoo_model

STAGE = "pretrain_clip"


def face_captions(faces: FacesFolder, split: str, flip: Sequence[str] = (), seed: int = 0) -> list[CaptionedImage]:
    """The faces of `split` with their captions and, where SynthWorld's caption template wrote
    the caption (a folder of one's own may caption otherwise), a hard negative per `flip`."""
    unknown = [name for name in flip if name not in faces.attributes]
    if unknown:
        raise ParamsError(f"pretrain_clip.hard_negatives: {unknown[0]!r} is not an attribute of "
                          f"{faces.root / 'dataset.yaml'} ({', '.join(faces.attributes)})")
    items = []
    for record in faces.split(split):
        values = {name: vocabulary[record.attributes[name]] for name, vocabulary in faces.attributes.items()}
        templated = flip and set(FACE_ATTRIBUTES) <= set(values) and caption_of(values) == record.caption
        negatives = flipped_captions(values, faces.attributes, flip, caption_of, f"{seed}/{record.image.name}") \
            if templated else ()
        items.append(CaptionedImage(record.image, record.caption, negatives=negatives))
    return items


def face_zero_shot_of(clip, tokenizer, faces: FacesFolder, images: CaptionedImages) -> dict:
    """Zero-shot attribute accuracies on `images` (the faces' test split, in faces.split order)."""
    records = faces.split("test")
    if not records:
        return {}
    pixels = torch.stack([images[i]["pixel_values"] for i in range(len(images))])
    values = {name: [vocabulary[r.attributes[name]] for r in records] for name, vocabulary in faces.attributes.items()}
    return face_zero_shot(clip, tokenizer, pixels, values, faces.attributes)


def main(argv: list[str] | None = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.pretrain_clip
    zoo = zoo_model(params, "clip")
    target = clip_dir(params)
    outputs = (target, params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    if not zoo["tiny"]:
        record_real_model(STAGE, params, outputs, Path(zoo["path"]))
        return
    subjects = class_captions(params)
    if not subjects:
        raise InputDataError("data/augmented/manifest.csv: no training images to pretrain CLIP on")
    faces = read_faces_folder(params.paths.data / "faces")
    flip = list(cfg.hard_negatives)
    items = mix_in(subjects, face_captions(faces, "train", flip, params.seed), cfg.face_share)
    L.seed_everything(params.seed, workers=True, verbose=False)
    path = Path(zoo["path"])
    clip, processor = CLIPModel.from_pretrained(path), CLIPImageProcessor.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    size = processor.crop_size["height"]
    dataset = CaptionedImages(items, tokenizer, size, image_processor=processor, negatives=len(flip))
    loader = seeded_loader(dataset, cfg.batch_size, params)
    key = pretraining_key(params, items, path, listings=[faces.root / "faces.csv"])
    module = ClipPretrainer(clip, cfg.lr, cfg.weight_decay)
    if not is_rank_zero():
        fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.steps, run=None, checkpoint_key=key)
        return
    heldout = CaptionedImages(class_captions(params, split="val"), tokenizer, size, image_processor=processor)
    test_faces = CaptionedImages(face_captions(faces, "test"), tokenizer, size, image_processor=processor)
    with stage_run(STAGE, params) as run, atomic_outputs(*outputs) as (tmp, tmp_metrics, tmp_plots):
        before = caption_retrieval_top1(clip, heldout)
        faces_before = face_zero_shot_of(clip, tokenizer, faces, test_faces)
        fitted = fit(params, STAGE, module, train_dataloaders=loader, max_steps=cfg.steps, run=run,
                     checkpoint_key=key)
        trainer, history, checkpoints = fitted.trainer, fitted.history, fitted.checkpoints
        after = caption_retrieval_top1(clip, heldout)
        faces_after = face_zero_shot_of(clip, tokenizer, faces, test_faces)
        clip.save_pretrained(tmp / "model")
        processor.save_pretrained(tmp / "model")
        tokenizer.save_pretrained(tmp / "model")
        write_record(tmp, target / "model", pretrained=True)
        write_curves(history, tmp_plots)
        metrics = {"steps": trainer.global_step, "training_images": len(subjects),
                   "training_faces": len({item.path for item in items if item.path.is_relative_to(faces.root)}),
                   "training_pairs_per_epoch": len(items),
                   "distinct_captions": len({i.caption for i in items}),
                   "heldout_caption_retrieval_top1": {"split": "val", "images": len(heldout),
                                                      "before": before, "after": after},
                   "face_zero_shot": {"split": "test", "images": len(test_faces),
                                      "before": faces_before, "after": faces_after}}
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        if len(heldout):   # augment.val_count may be 0: nothing held out, null in the metrics
            mlflow.log_metrics({"heldout_caption_retrieval_top1.before": before,
                                "heldout_caption_retrieval_top1.after": after})
        log_metrics_tree(metrics["face_zero_shot"], "face_zero_shot.")
    shutil.rmtree(checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
