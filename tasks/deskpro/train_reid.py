"""Stage `train_reid`: DeSKPro's global stream (CSA + L_att) and face student, eq. 7.

The row of Table 3 it trains is `train_reid.variant` (DeSKPro by default). The teacher from
`train_reid_teacher` supplies the soft labels of L_fkp and is not part of the saved model
(unless the variant is DeSKPro*, whose face stream is the teacher itself).
"""

from __future__ import annotations

import json
import shutil
from typing import Optional

import mlflow

from tasks.core.curves import write_curves
from tasks.core.errors import run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import flatten, stage_run
from tasks.deskpro.setup import load_folder
from tasks.deskpro.variants import train_variant

STAGE = "train_reid"


def main(argv: Optional[list[str]] = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.train_reid
    folder = load_folder(params)
    if not is_rank_zero():
        train_variant(params, STAGE, folder, cfg.variant, max_epochs=cfg.max_epochs,
                      limit_train_batches=cfg.limit_train_batches, run=None)
        return
    targets = (params.paths.data / "models" / "reid", params.paths.metrics / f"{STAGE}.json",
               params.paths.plots / STAGE)
    with stage_run(STAGE, params) as run, atomic_outputs(*targets) as (tmp_model, tmp_metrics, tmp_plots):
        mlflow.log_params(flatten({"reid": params.effective()["reid"]}))
        net, metrics, state = train_variant(params, STAGE, folder, cfg.variant, max_epochs=cfg.max_epochs,
                                            limit_train_batches=cfg.limit_train_batches, run=run)
        net.save_pretrained(tmp_model)
        tmp_metrics.write_text(json.dumps(metrics, indent=2) + "\n")
        tmp_plots.mkdir(parents=True)
        if state is not None:
            write_curves(state[0], tmp_plots)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        mlflow.log_artifacts(str(tmp_model), artifact_path="reid_model")
    if state is not None:
        shutil.rmtree(state[1], ignore_errors=True)


if __name__ == "__main__":
    run_stage_main(main)
