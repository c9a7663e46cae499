"""What the rows of MSP's Table 1 share: compositions read and checked, drawn through the
platform's predict, measured, written and tracked (`msp@<row>` and `msp_baseline@<row>`).

A row of ours draws each composition with the composite sampler from the finetune stage's model
(MSP 2(i)), under the row's switches. A baseline row draws, from a personalization row's model,
one prompt naming every subject of the composition ("a sks cartoon and a kfz dog in a forest"),
with no layout: the paper's DreamBooth / Textual Inversion / Custom Diffusion rows. Both start
every image from the same seed's noise and are judged on the same segments.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Optional

import mlflow
import numpy as np
import torch
from diffusers import ControlNetModel
from PIL import Image

from lightning_modules.core.visual import image_grid, overlay_labels
from lightning_modules.diffusion.export import MANIFEST, load_finetuned
from lightning_modules.diffusion.generation import GatheredImages
from lightning_modules.diffusion.pipeline import resolution_of
from lightning_modules.diffusion.tokenizer import load_rare_tokens
from lightning_modules.msp import Composition, CompositeSampler, LayoutError, MSPSettings, load_composition
from lightning_modules.msp.generation import CompositionGenerator, CompositionJob, composition_loader
from lightning_modules.synthworld.subjects import IDENTIFIER_POOL
from tasks.core.errors import InputDataError
from tasks.core.outputs import atomic_outputs
from tasks.core.params import Params
from tasks.core.stage import is_rank_zero
from tasks.core.tracking import flatten, log_image, log_metrics_tree, stage_run
from tasks.core.trainer import predict
from tasks.core.judges import as_tensor, load_judges
from lightning_modules.core.visual import enlarge
from tasks.core.subjects import read_subjects
from tasks.msp.evaluation import evaluate_compositions

TABLE = "msp"
_NAME = re.compile(r"^n(\d+)_(\d+)$")


def composition_files(params: Params, controlnet: bool = False) -> list[Path]:
    """The first `compositions_per_count` compositions of each subject count (n<count>_<k>.yaml),
    or every YAML of a folder whose names do not follow that pattern. ControlNet's rows read the
    compositions with pose images (msp.controlnet.compositions)."""
    cfg = params.msp
    key, folder = ("msp.controlnet.compositions", cfg.controlnet.compositions) if controlnet else \
        ("msp.compositions", cfg.compositions)
    if not folder.is_dir():
        raise InputDataError(f"{key}: {folder} is not a folder of compositions (run dvc repro synthesize)")
    files = sorted(folder.glob("*.yaml"))
    if not files:
        raise InputDataError(f"{key}: {folder} holds no composition (*.yaml)")
    named = [(f, _NAME.match(f.stem)) for f in files]
    if not all(m for _, m in named):
        return files
    chosen = sorted(((int(m[1]), int(m[2]), f) for f, m in named if int(m[2]) < cfg.compositions_per_count))
    return [f for _, _, f in chosen]


def fine_tuned_identifiers(model_dir: Path) -> tuple[dict, list[str]]:
    """The run's manifest and the identifiers it learned."""
    path = model_dir / MANIFEST
    if not path.is_file():
        raise InputDataError(f"{model_dir}: no fine-tuned model ({MANIFEST} missing); run the stage that writes it "
                             "first (dvc repro finetune, or the personalization row)")
    manifest = json.loads(path.read_text())
    return manifest, [entry["identifier"] for entry in manifest["subjects"].values()]


def read_compositions(params: Params, size: int, identifiers: list[str], tokenizer_dir: Optional[Path],
                      controlnet: bool = False) -> list[Composition]:
    pool = set(IDENTIFIER_POOL) | set(load_rare_tokens(tokenizer_dir) or [] if tokenizer_dir else [])
    try:
        return [load_composition(f, size=size, identifiers=identifiers, rare_tokens=pool, controlnet=controlnet)
                for f in composition_files(params, controlnet)]
    except LayoutError as err:
        raise InputDataError(str(err)) from None


def item_seed(params: Params, composition: int, image: int) -> int:
    return params.seed * 1_000_003 + composition * 1009 + image


def pixels(image: Optional[np.ndarray]) -> Optional[torch.Tensor]:
    return None if image is None else torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255.0


def jobs_for(params: Params, compositions: list[Composition], single_prompt: bool, scaffolding: bool
             ) -> list[CompositionJob]:
    per = params.msp.images_per_composition
    jobs = []
    for k, comp in enumerate(compositions):
        indices = [k * per + i for i in range(per)]
        seeds = [item_seed(params, k, i) for i in range(per)]
        if single_prompt:
            # The baselines: one prompt naming every subject, no layout.
            prompt = " and ".join(comp.segments[j].prompt for j in comp.subject_segments)
            background = [s.prompt for i, s in enumerate(comp.segments) if i not in comp.subject_segments]
            prompt = " ".join([prompt or comp.global_prompt, *background[:1]])
            full = torch.ones(1, *comp.masks.shape[1:], dtype=torch.bool)
            jobs.append(CompositionJob(indices, seeds, full, [prompt], prompt, [], None))
        else:
            jobs.append(CompositionJob(indices, seeds, torch.from_numpy(comp.masks), [s.prompt for s in comp.segments],
                                       comp.global_prompt, comp.subject_segments,
                                       pixels(comp.scaffolding) if scaffolding else None, pixels(comp.pose)))
    return jobs


def references(params: Params, size: int) -> dict[str, np.ndarray]:
    return {s.name: np.stack([np.asarray(Image.open(i.image).convert("RGB").resize((size, size), Image.BILINEAR))
                              for i in s.images]) for s in read_subjects(params)}


def picture(judges, comp: Composition, images: np.ndarray) -> np.ndarray:
    """Layout (and pose image), the segmenter's reading of the first image, and every image, side by side."""
    labels = judges.segmenter(as_tensor(images[:1], judges.segmenter_size)).argmax(1)[0].numpy()
    if labels.shape[0] != images.shape[1]:
        labels = np.asarray(Image.fromarray(labels.astype(np.uint8)).resize(images.shape[1:3], Image.NEAREST))
    inputs = [comp.layout] + ([comp.pose] if comp.pose is not None else [])
    tiles = [*inputs, overlay_labels(images[0], labels), *images]
    return enlarge(image_grid(tiles, columns=len(tiles)))


def load_controlnet(params: Params) -> ControlNetModel:
    path = params.msp.controlnet.model
    if not (path / "config.json").is_file():
        raise InputDataError(f"msp.controlnet.model: {path} holds no ControlNet (config.json); run dvc repro "
                             f"train_controlnet@{path.name}, or give a real ControlNet's directory")
    return ControlNetModel.from_pretrained(path).eval().requires_grad_(False)


def run_row(params: Params, stage: str, row: str, model_dir: Path, settings: MSPSettings, *, single_prompt: bool,
            scaffolding: bool, tags: dict[str, str], logged: dict, controlnet: bool = False) -> None:
    """Draw, measure, write and track one row of Table 1."""
    manifest, identifiers = fine_tuned_identifiers(model_dir)
    steer = load_controlnet(params) if controlnet else None
    pipe = load_finetuned(model_dir)
    size = resolution_of({"unet": pipe.unet, "vae": pipe.vae})
    base = Path(manifest.get("base_model", "")) / "tokenizer"
    compositions = read_compositions(params, size, identifiers, base if base.is_dir() else None, controlnet)
    # Rank zero measures; every rank guides with the segmenter when SAL is on.
    judges = load_judges(params) if is_rank_zero() or settings.sal else None
    guide = judges if settings.sal else None
    sampler = CompositeSampler(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, settings,
                               segmenter=guide.segmenter if guide else None,
                               segmenter_size=guide.segmenter_size if guide else None, controlnet=steer,
                               conditioning_scale=params.msp.controlnet.conditioning_scale)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    generator = CompositionGenerator(sampler)
    jobs = jobs_for(params, compositions, single_prompt, scaffolding)

    def draw() -> GatheredImages:
        gathered = GatheredImages()
        predict(params, generator, composition_loader(jobs), [gathered], inference_mode=not settings.sal)
        return gathered

    if not is_rank_zero():   # a DDP worker: its share of the drawing
        draw()
        return
    per = params.msp.images_per_composition
    out = params.paths.data / "msp" / row
    metrics_file = params.paths.metrics / "msp" / f"{row}.json"
    plots_dir = params.paths.plots / "msp" / row
    # The run spans the drawing too, so its duration in MLflow is the row's cost.
    with stage_run(stage, params), atomic_outputs(out, metrics_file, plots_dir) as (tmp, tmp_metrics, tmp_plots):
        mlflow.set_tags({"subjectlab.table": TABLE, "subjectlab.row": row, **tags})
        mlflow.log_params(flatten(logged))
        gathered = draw()
        images = {comp.name: np.stack([gathered.images[k * per + i] for i in range(per)])
                  for k, comp in enumerate(compositions)}
        measured = evaluate_compositions(judges, compositions, images, references(params, size))
        (tmp / "images").mkdir(parents=True)
        tmp_plots.mkdir(parents=True)
        for comp in compositions:
            for i, image in enumerate(images[comp.name]):
                Image.fromarray(image).save(tmp / "images" / f"{comp.name}_{i}.png")
            sheet = picture(judges, comp, images[comp.name])
            Image.fromarray(sheet).save(tmp_plots / f"{comp.name}.png")
            log_image(sheet, f"msp/{row}/{comp.name}.png")
        result = {"row": row, **tags, "compositions": len(compositions), **measured,
                  "sal_loss": float(np.mean(generator.sal_loss)) if generator.sal_loss else None}
        tmp_metrics.write_text(json.dumps(result, indent=2) + "\n")
        log_metrics_tree({k: v for k, v in measured.items() if k != "images"})
    shutil.rmtree(params.paths.checkpoints / "lightning_logs", ignore_errors=True)


def settings_for(params: Params, **switches) -> MSPSettings:
    """The section's sampler settings with a row's switches on top."""
    cfg = params.msp
    return MSPSettings(**{"steps": cfg.inference_steps, "guidance_scale": cfg.guidance_scale,
                          "scaffolding_fraction": cfg.scaffolding_fraction, "global_steps": cfg.global_steps,
                          "global_weight": cfg.global_weight, "sal_scale": cfg.sal_scale,
                          "sal_range": tuple(cfg.sal_range), **switches})
