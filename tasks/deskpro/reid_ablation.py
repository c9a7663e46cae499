"""Stage `reid_ablation@<row>`: one row of DeSKPro's Table 3, trained and evaluated.

dvc.yaml expands it over `reid_ablation.table` (foreach), so each row is its own DVC stage
(re-run only when its own params change) and its own MLflow run.
"""

from __future__ import annotations

import json
import shutil
from typing import Optional

import mlflow

from tasks.core.params import load_params
from tasks.core.errors import ParamsError, run_stage_main
from tasks.deskpro.evaluate_reid import evaluate_model
from tasks.core.outputs import atomic_outputs
from tasks.deskpro.oracle import sees_oracle_faces
from tasks.deskpro.setup import load_folder
from tasks.core.stage import is_rank_zero, parse_stage_args
from tasks.core.tracking import flatten, log_metrics_tree, stage_run
from tasks.deskpro.variants import train_variant

STAGE = "reid_ablation"


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_stage_args(STAGE, argv, lambda parser: parser.add_argument(
        "--row", required=True, help="a key of reid_ablation.rows"))
    params = load_params(args.params)
    cfg = params.reid_ablation
    if args.row not in cfg.rows:
        known = ", ".join(cfg.rows) or "none"
        raise ParamsError(f"{args.params}: reid_ablation.rows.{args.row}: no such row (known: {known})")
    variant = cfg.rows[args.row]
    folder = load_folder(params)
    stage = f"{STAGE}@{args.row}"
    if not is_rank_zero():
        train_variant(params, stage, folder, variant, max_epochs=cfg.max_epochs,
                      limit_train_batches=cfg.limit_train_batches, run=None)
        return
    metrics_file = params.paths.metrics / STAGE / f"{args.row}.json"
    with stage_run(stage, params) as run, atomic_outputs(metrics_file) as (tmp_metrics,):
        oracle = sees_oracle_faces(params, variant)
        mlflow.set_tag("subjectlab.ablation_row", args.row)
        mlflow.set_tag("subjectlab.oracle", str(oracle).lower())  # a filter in the MLflow compare view
        mlflow.log_params(flatten({"row": args.row, "variant": variant.model_dump(),
                                   "reid": params.effective()["reid"],
                                   "reid_ablation": {k: v for k, v in params.effective()[STAGE].items()
                                                     if k != "rows"}}))
        net, training, state = train_variant(params, stage, folder, variant, max_epochs=cfg.max_epochs,
                                             limit_train_batches=cfg.limit_train_batches, run=run)
        report = evaluate_model(params, folder, net, None, f"ablation/{args.row}")
        result = {"row": args.row, "variant": variant.model_dump(), "face_restorer": params.models.face_restorer,
                  "oracle": oracle, "training": training, "test": report}
        tmp_metrics.write_text(json.dumps(result, indent=2) + "\n")
        log_metrics_tree({"test": report})
    if state is not None:
        shutil.rmtree(state[1], ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
