"""Stage `train_controlnet@<condition>`: the tiny model's ControlNet-OpenPose (MSP 3, "with ControlNet").

dvc.yaml expands it over `train_controlnet.conditions` (openpose). ControlNet is built from the
base model's UNet (lightning_modules/msp/controlnet.py) and trained on synthesize's pose pairs,
the base model frozen; MSP's ControlNet rows then steer the fine-tuned model with it (the weights
carry over to a DreamBooth of the same base, as Stable Diffusion's ControlNets do).

Whether it steers is measured on the last `eval_pairs` pairs, never trained on: each caption is
drawn from the same noise with and without ControlNet, and the subject segmenter's foreground is
compared (IoU) with the figures' true mask. Without ControlNet the model cannot know where the
pose put them; with it the foreground should follow the pose. Writes data/models/controlnet/
<condition> (diffusers format), metrics/train_controlnet/<condition>.json, the loss curve and a
picture (pose, with, without, truth) to dvc plots and MLflow.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

import lightning as L
import mlflow
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from lightning_modules.core.resumable import shuffled_loader
from lightning_modules.core.visual import enlarge, image_grid
from lightning_modules.diffusion.pipeline import load_text_to_image, resolution_of
from lightning_modules.msp.controlnet import (
    ControlNetTraining,
    PairsError,
    PosePair,
    PosePairs,
    build_controlnet,
    load_condition,
    load_mask_array,
    mask_iou,
    read_pairs,
)
from lightning_modules.msp.sampler import CompositeSampler, MSPSettings
from tasks.core.curves import write_curves
from tasks.core.errors import InputDataError, ParamsError, run_stage_main
from tasks.core.judges import load_segmenter
from tasks.core.models import base_model_path
from tasks.core.outputs import atomic_outputs
from tasks.core.params import Params, load_params
from tasks.core.stage import is_rank_zero, parse_stage_args
from tasks.core.tracking import flatten, log_image, log_metrics_tree, stage_run
from tasks.core.trainer import fit

STAGE = "train_controlnet"
SHOWN = 8   # held-out pairs in the picture


def digest(paths: Sequence[Path]) -> str:
    """What the resumable checkpoints are keyed by: the bytes of the pairs and of the base model."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def split(params: Params) -> tuple[list[PosePair], list[PosePair]]:
    cfg = params.train_controlnet
    try:
        pairs = read_pairs(cfg.pairs)
    except PairsError as err:
        raise InputDataError(str(err)) from None
    if len(pairs) <= cfg.eval_pairs:
        raise InputDataError(f"train_controlnet.eval_pairs: {cfg.eval_pairs} held out of the {len(pairs)} pairs of "
                             f"{cfg.pairs} leaves none to train on")
    return pairs[:-cfg.eval_pairs], pairs[-cfg.eval_pairs:]


@torch.no_grad()
def steering(params: Params, components: dict, controlnet, held: Sequence[PosePair], resolution: int
             ) -> tuple[dict[str, float], np.ndarray]:
    """Foreground IoU of the held-out pairs drawn with and without ControlNet, and their picture."""
    cfg = params.train_controlnet
    segmenter, size = load_segmenter(params)
    settings = MSPSettings(steps=cfg.sample_steps, guidance_scale=cfg.guidance_scale, scaffolding_fraction=0.0,
                           global_diffuser=False)
    parts = (components["unet"], components["vae"], components["text_encoder"], components["tokenizer"],
             components["scheduler"])
    samplers = {"controlnet": CompositeSampler(*parts, settings, controlnet=controlnet),
                "without": CompositeSampler(*parts, settings)}
    full = torch.ones(1, resolution, resolution, dtype=torch.bool)
    ious: dict[str, list[float]] = {name: [] for name in samplers}
    tiles = []
    for k, pair in enumerate(tqdm(held, desc="steering", unit="pair")):
        pose = load_condition(pair.pose, resolution)
        truth = load_mask_array(pair.mask, resolution)
        row = [(pose.permute(1, 2, 0).numpy() * 255).astype(np.uint8)]
        for name, sampler in samplers.items():
            generator = torch.Generator().manual_seed(params.seed * 1_000_003 + k)
            image = sampler(full, [pair.caption], pair.caption, [generator],
                            pose=pose if name == "controlnet" else None)
            labels = segmenter(F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
                               if image.shape[-1] != size else image).argmax(1, keepdim=True)
            foreground = F.interpolate(labels.float(), size=(resolution, resolution), mode="nearest")[0, 0] > 0
            ious[name].append(mask_iou(foreground.numpy(), truth))
            row.append((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        if k < SHOWN:
            tiles += [*row, np.repeat(truth[..., None], 3, -1).astype(np.uint8) * 255]
    measured = {f"foreground_iou_{name}": float(np.mean(values)) for name, values in ious.items()}
    measured["iou_gain"] = measured["foreground_iou_controlnet"] - measured["foreground_iou_without"]
    measured["pairs_improved"] = float(np.mean([a > b for a, b in zip(ious["controlnet"], ious["without"])]))
    return measured, enlarge(image_grid(tiles, columns=4))


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_stage_args(STAGE, argv, lambda parser: parser.add_argument(
        "--condition", required=True, help="an entry of train_controlnet.conditions (openpose)"))
    params = load_params(args.params)
    cfg = params.train_controlnet
    if args.condition not in cfg.conditions:
        raise ParamsError(f"{args.params}: train_controlnet.conditions: {args.condition!r} is not listed "
                          f"({', '.join(cfg.conditions) or 'none'})")
    train, held = split(params)
    L.seed_everything(params.seed, workers=True, verbose=False)
    base = base_model_path(params)
    components = load_text_to_image(base)
    resolution = resolution_of(components)
    controlnet = build_controlnet(components["unet"], resolution)
    dataset = PosePairs(train, components["tokenizer"], resolution, cfg.caption_dropout, params.seed)
    loader = shuffled_loader(dataset, min(cfg.batch_size, len(dataset)), seed=params.seed, drop_last=True,
                             num_workers=params.trainer.num_workers, epoch_listeners=[dataset.set_epoch])
    module = ControlNetTraining(controlnet, components["unet"], components["vae"], components["text_encoder"],
                                components["scheduler"], cfg.lr, cfg.weight_decay)
    key = {"condition": args.condition, "pairs": digest([cfg.pairs / "pairs.yaml"]),
           "model": digest([p for p in base.rglob("*") if p.is_file()])}

    def train_it(run) -> object:
        return fit(params, f"{STAGE}@{args.condition}", module, train_dataloaders=loader, max_steps=cfg.steps,
                   run=run, checkpoint_key=key)

    if not is_rank_zero():   # a DDP worker: train, leave outputs and tracking to rank zero
        train_it(None)
        return
    target = params.paths.data / "models" / "controlnet" / args.condition
    metrics_file = params.paths.metrics / STAGE / f"{args.condition}.json"
    with stage_run(f"{STAGE}@{args.condition}", params) as run, \
            atomic_outputs(target, metrics_file, params.paths.plots / STAGE / args.condition) as (tmp, tmp_metrics,
                                                                                                 tmp_plots):
        mlflow.set_tags({"subjectlab.condition": args.condition})
        # The run is named by the family item, so the section is logged here (stage_run logs a
        # section whose name is the run's).
        mlflow.log_params(flatten({"condition": args.condition, STAGE: params.effective()[STAGE]}))
        fitted = train_it(run)
        controlnet.eval()
        for part in (components["unet"], components["vae"], components["text_encoder"]):
            part.eval()
        controlnet.save_pretrained(tmp)
        measured, sheet = steering(params, components, controlnet, held, resolution)
        write_curves(fitted.history, tmp_plots)
        Image.fromarray(sheet).save(tmp_plots / "steering.png")
        log_image(sheet, f"train_controlnet/{args.condition}/steering.png")
        history = fitted.history.train
        result = {"condition": args.condition, "steps": fitted.trainer.global_step,
                  "final_loss": history[-1]["loss"] if history else None, "train_pairs": len(train),
                  "held_out_pairs": len(held), **measured}
        tmp_metrics.write_text(json.dumps(result, indent=2) + "\n")
        log_metrics_tree(measured)
        print(f"{STAGE}@{args.condition}: held-out foreground IoU {measured['foreground_iou_controlnet']:.3f} with "
              f"ControlNet, {measured['foreground_iou_without']:.3f} without", flush=True)
    shutil.rmtree(fitted.checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
