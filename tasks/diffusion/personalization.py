"""Stage `personalization@<row>`: one row of the personalization table.

dvc.yaml expands it over `personalization.table` (foreach). A row is a fine-tuning of the
subjects (the finetune section with the row's keys set differently: DreamBooth full, LoRA,
Textual Inversion, Custom Diffusion), then the prompt set drawn from it with its seeds (the
same items for every row), then the images measured (tasks/diffusion/evaluation.py). Each row
is its own DVC stage and MLflow run (tagged `subjectlab.table` / `subjectlab.row` for the
MLflow compare view); `personalization_report` sets the rows side by side.
"""

from __future__ import annotations

import json
import shutil
from typing import Optional

import mlflow
import numpy as np
from PIL import Image
from pydantic import ValidationError

from lightning_modules.diffusion.pipeline import make_pipeline
from lightning_modules.diffusion.prompt_sets import SubjectEntry
from tasks.core.errors import ParamsError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.params import Params, load_params
from tasks.core.schema.diffusion import FinetuneConfig
from tasks.core.stage import is_rank_zero, parse_stage_args
from tasks.core.tracking import flatten, log_image, log_metrics_tree, stage_run
from tasks.core.trainer import fit
from tasks.core.judges import load_judges
from tasks.diffusion.evaluation import evaluate
from tasks.diffusion.finetune import Prepared, export, language_drift, prepare
from tasks.diffusion.generation import draw, prompt_items, write_generations

STAGE = "personalization"
TABLE = "personalization"


def row_settings(params: Params, params_file: str, row: str) -> FinetuneConfig:
    rows = params.personalization.rows
    if row not in rows:
        raise ParamsError(f"{params_file}: personalization.rows.{row}: no such row (known: {', '.join(rows) or 'none'})")
    try:
        return FinetuneConfig.model_validate({**params.finetune.model_dump(), **overrides(params, row)})
    except ValidationError as err:
        first = err.errors()[0]
        raise ParamsError(f"{params_file}: personalization.rows.{row}: {'.'.join(map(str, first['loc']))}: "
                          f"{first['msg'].removeprefix('Value error, ')}") from None


def overrides(params: Params, row: str) -> dict:
    """The finetune keys the row sets (those it leaves out follow the finetune section)."""
    return params.personalization.rows[row].model_dump(mode="json", exclude_none=True)


def references(prepared: Prepared) -> dict[str, np.ndarray]:
    """Each subject's real images (its fine-tuning set): what CLIP-I and DINO compare against."""
    size = prepared.resolution
    return {s.name: np.stack([np.asarray(Image.open(i.image).convert("RGB").resize((size, size), Image.BILINEAR))
                              for i in s.images]) for s in prepared.subjects}


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_stage_args(STAGE, argv, lambda parser: parser.add_argument(
        "--row", required=True, help="a key of personalization.rows"))
    params = load_params(args.params)
    cfg = params.personalization
    settings = row_settings(params, args.params, args.row)
    stage = f"{STAGE}@{args.row}"
    prepared = prepare(params, settings)
    # The prompt set is checked before any training: a bad one costs nothing.
    items = prompt_items(cfg.prompt_set, [SubjectEntry(s.name, s.identifier, s.class_noun)
                                          for s in prepared.subjects])

    def train(run) -> object:
        return fit(params, stage, prepared.module, train_dataloaders=prepared.loader, max_steps=settings.max_steps,
                   run=run, checkpoint_key={**prepared.key, "row": args.row},
                   accumulate_grad_batches=settings.accumulate_grad_batches)

    def generate():
        pipe = make_pipeline({name: prepared.components[name] for name in ("unet", "vae", "text_encoder",
                                                                            "tokenizer", "scheduler")})
        return draw(params, pipe, items, steps=cfg.inference_steps, guidance_scale=cfg.guidance_scale,
                    batch_size=cfg.batch_size)

    if not is_rank_zero():   # a DDP worker: its share of training and of the drawing
        train(None)
        generate()
        return

    judges = load_judges(params)   # before training: a missing judge stops the row at once
    drift = language_drift(params, prepared.components, prepared.subjects, prepared.resolution)
    row_dir = params.paths.data / "personalization" / args.row
    metrics_file = params.paths.metrics / STAGE / f"{args.row}.json"
    with stage_run(stage, params) as run, atomic_outputs(row_dir, metrics_file) as (tmp, tmp_metrics):
        mlflow.set_tags({"subjectlab.table": TABLE, "subjectlab.row": args.row, "subjectlab.mode": settings.mode})
        mlflow.log_params(flatten({"row": args.row, "finetune": settings.model_dump(mode="json"),
                                   "personalization": {k: v for k, v in params.effective()[STAGE].items()
                                                       if k != "rows"}}))
        fitted = train(run)
        export(prepared, settings.mode, tmp / "model")
        images = generate()
        (tmp / "images").mkdir()
        grids = write_generations(tmp / "images", items, images)
        ordered = np.stack([images[item.index] for item in items])
        measured = evaluate(judges, items, ordered, references(prepared))
        result = {"row": args.row, "mode": settings.mode, "overrides": overrides(params, args.row),
                  "steps": fitted.trainer.global_step, "prompt_set": str(cfg.prompt_set), **measured,
                  "language_drift": drift.measure()}
        tmp_metrics.write_text(json.dumps(result, indent=2) + "\n")
        log_metrics_tree({k: v for k, v in result.items() if k in ("clip_i", "clip_t", "dino", "identity_accuracy",
                                                                   "prompt_accuracy", "language_drift")})
        for who, grid in grids.items():
            log_image(grid, f"personalization/{args.row}/{who}.png")
    shutil.rmtree(fitted.checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
