"""Stage `eclipsed@<row>`: one configuration of eCLIPsed's Table 1, trained and measured.

dvc.yaml expands it over `eclipsed.table` (foreach): each row is its own DVC stage and MLflow run
(tagged subjectlab.table / subjectlab.row for the compare view). The row's K directions are
learned against the frozen generator, CLIP and part segmenter (lightning_modules/eclipsed/
directions.py) through the shared `fit`, then measured on eclipsed.eval_seeds fixed latents at
eclipsed.eval_alpha (tasks/eclipsed/evaluation.py). Writes:

- ${paths.data}/eclipsed/<row>/directions.safetensors ("directions": K x num_ws x w_dim) and
  directions.json (prompt, part, latent space, layers, alpha range, generator, truncation, K);
- ${paths.metrics}/eclipsed/<row>.json: CLIP similarity (evaluation seeds, training seed),
  locality, edit accuracy, the CLIP loss curve, and the alpha curve (below);
- ${paths.plots}/eclipsed/<row>/: edit strips over eclipsed.strip_alphas (negative ones too),
  a sequential strip of the row's directions when K > 1, the loss curves, and alpha_curve.csv:
  CLIP similarity, locality, edit accuracy and its three parts at each of eclipsed.curve_alphas
  (also drawn to MLflow as alpha_curve.png).
"""

from __future__ import annotations

import csv
import json
import shutil
from typing import Optional

import lightning as L
import mlflow
from PIL import Image
from safetensors.torch import save_file

from lightning_modules.core.resumable import shuffled_loader
from lightning_modules.eclipsed.directions import DirectionSettings, LatentDirections, TermsHistory
from tasks.core.curves import write_curves
from tasks.core.errors import ParamsError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.params import Params, load_params
from tasks.core.stage import is_rank_zero, parse_stage_args
from tasks.core.tracking import flatten, log_image, log_metrics_tree, stage_run
from tasks.core.trainer import fit
from tasks.eclipsed.evaluation import (alpha_curve, alpha_curve_figure, evaluate_direction, sequential_picture,
                                      strip_picture, summarize, write_alpha_curve)
from tasks.eclipsed.learned import DIRECTIONS_FILE, DIRECTIONS_META, TABLE, directions_dir, load_generator
from tasks.eclipsed.models import load_classifier, load_clip, load_segmenter, part_mask, resolve_part, training_prompt

STAGE = "eclipsed"


def training_seeds(params: Params, row) -> list[int]:
    """One latent seed per training image: eclipsed.train_seed over and over for a single-seed row,
    else 0, 1, 2, ... (each image once; the evaluation's seeds start far above)."""
    count = row.steps * row.batch_size
    return [params.eclipsed.train_seed] * count if row.single_seed else list(range(count))


def settings_of(params: Params, row) -> DirectionSettings:
    return DirectionSettings(
        num_directions=row.num_directions, latent_space=row.latent_space, layers=tuple(row.layers),
        localization_layers=tuple(row.localization_layers), alpha_range=tuple(row.alpha_range),
        alpha_min=row.alpha_min, localization_weight=row.localization_weight,
        decorrelation_weight=row.decorrelation_weight, clip_loss=row.clip_loss, lr=row.lr, steps=row.steps,
        truncation=row.truncation, init_seed=params.seed)


def write_terms(rows: list[dict], path) -> None:
    fields = ["step", "clip", "localization", "decorrelation"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_stage_args(STAGE, argv, lambda parser: parser.add_argument(
        "--row", required=True, help="a key of eclipsed.rows"))
    params = load_params(args.params)
    cfg = params.eclipsed
    if args.row not in cfg.rows:
        known = ", ".join(cfg.rows) or "none"
        raise ParamsError(f"{args.params}: eclipsed.rows.{args.row}: no such row (known: {known})")
    row = cfg.row(args.row)
    stage = f"{STAGE}@{args.row}"

    # Every model and the part first: a bad part name or a missing model stops the stage here,
    # before it writes or tracks anything.
    generator, clip, segmenter = load_generator(params), load_clip(params), load_segmenter(params)
    part = resolve_part(row, f"{args.params}: eclipsed.rows.{args.row}", segmenter.class_names, clip)
    classifier = load_classifier(params) if is_rank_zero() else None
    prompt = training_prompt(row, part)
    mask = part_mask(segmenter, part, generator.size)

    L.seed_everything(params.seed, workers=True, verbose=False)
    neutral = clip.texts([row.neutral_prompt])[0] if row.clip_loss == "directional" else None
    module = LatentDirections(generator, clip, clip.texts([prompt])[0], settings_of(params, row),
                              mask if row.localization_weight > 0 else None, neutral)
    seeds = training_seeds(params, row)
    terms = TermsHistory(params.trainer.log_every_n_steps)

    def train(run):
        loader = shuffled_loader(seeds, row.batch_size, seed=params.seed, shuffle=False,
                                 num_workers=params.trainer.num_workers)
        return fit(params, stage, module, run=run, train_dataloaders=loader, max_epochs=1, max_steps=row.steps,
                   # the row's whole configuration: `fit` keys by params.<stage>, which a row stage has not
                   checkpoint_key={"row": args.row, "directions": row.model_dump(mode="json"), "part": part,
                                   "train_seed": cfg.train_seed, "generator": str(cfg.generator)},
                   callbacks=[terms])

    if not is_rank_zero():   # a DDP worker: its share of the training only
        train(None)
        return

    out = directions_dir(params, args.row)
    metrics_file, plots_dir = params.paths.metrics / STAGE / f"{args.row}.json", params.paths.plots / STAGE / args.row
    with stage_run(stage, params) as run, atomic_outputs(out, metrics_file, plots_dir) as (tmp, tmp_metrics, tmp_plots):
        mlflow.set_tags({"subjectlab.table": TABLE, "subjectlab.row": args.row, "eclipsed.part": part})
        mlflow.log_params(flatten({"row": args.row, "directions": row.model_dump(mode="json"), "part_used": part,
                                   "training_prompt": prompt}))
        fitted = train(run)
        module.cpu()
        generator.cpu()
        directions = module.full_directions().detach().cpu().contiguous()
        tmp.mkdir(parents=True)
        save_file({"directions": directions}, str(tmp / DIRECTIONS_FILE))
        meta = {"prompt": row.prompt, "training_prompt": prompt, "part": part, "latent_space": row.latent_space,
                "layers": list(row.layers), "alpha_range": list(row.alpha_range), "generator": str(cfg.generator),
                "truncation": row.truncation, "K": row.num_directions, "clip_loss": row.clip_loss}
        (tmp / DIRECTIONS_META).write_text(json.dumps(meta, indent=2) + "\n")

        eval_seeds = list(range(cfg.eval_seed_start, cfg.eval_seed_start + cfg.eval_seeds))
        per_direction = [evaluate_direction(generator, clip.cpu(), mask.cpu(), classifier, d, row.prompt, eval_seeds,
                                            cfg.eval_alpha, row.truncation, cfg.train_seed) for d in directions]
        summary = summarize(per_direction)
        tmp_plots.mkdir(parents=True)
        write_curves(fitted.history, tmp_plots)
        write_terms(terms.rows, tmp_plots / "loss_terms.csv")
        strip_seeds = eval_seeds[:cfg.strip_seeds]
        strip = strip_picture(generator, list(directions), strip_seeds, cfg.strip_alphas, row.truncation)
        Image.fromarray(strip).save(tmp_plots / "strip.png")
        log_image(strip, f"eclipsed/{args.row}/strip.png")
        curve = alpha_curve(generator, clip, mask.cpu(), classifier, list(directions), row.prompt, eval_seeds,
                            cfg.curve_alphas, row.truncation)
        if curve:
            write_alpha_curve(curve, tmp_plots / "alpha_curve.csv")
            mlflow.log_figure(alpha_curve_figure(curve, f"{args.row}: {row.prompt}"), f"eclipsed/{args.row}/alpha_curve.png")
        if row.num_directions > 1:
            steps = [(d, cfg.eval_alpha) for d in directions]
            picture = sequential_picture(generator, steps, strip_seeds, row.truncation)
            Image.fromarray(picture).save(tmp_plots / "sequential.png")
            log_image(picture, f"eclipsed/{args.row}/sequential.png")
        result = {"row": args.row, "prompt": row.prompt, "training_prompt": prompt, "part": part,
                  "configuration": row.model_dump(mode="json"), "eval_alpha": cfg.eval_alpha,
                  "eval_seeds": len(eval_seeds), "train_seed": cfg.train_seed, **summary,
                  "directions": per_direction, "alpha_curve": curve,
                  "clip_loss_curve": [{"step": r["step"], "clip": r.get("clip")} for r in terms.rows],
                  "global_step": fitted.trainer.global_step}
        tmp_metrics.write_text(json.dumps(result, indent=2) + "\n")
        log_metrics_tree({k: v for k, v in summary.items() if isinstance(v, (int, float))})
        mlflow.log_artifacts(str(tmp), artifact_path=f"eclipsed/{args.row}")
    shutil.rmtree(fitted.checkpoints, ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
