"""Stage `evaluate_base`: does the base model draw what it is asked? Its prompt set
("a <class> <scene>" over every class and scene, with seeds) drawn with Lightning predict and
judged by the class / scene classifier trained on real renders, plus CLIP-T. This is the
class prior that DreamBooth fine-tuning starts from and prior preservation keeps."""

from __future__ import annotations

import json
from typing import Optional

import numpy as np

from lightning_modules.diffusion.pipeline import load_text_to_image, make_pipeline
from lightning_modules.diffusion.prompt_sets import SubjectEntry
from tasks.core.errors import InputDataError, run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.stage import is_rank_zero, stage_params
from tasks.core.tracking import log_image, log_metrics_tree, stage_run
from tasks.core.judges import load_judges
from tasks.diffusion.evaluation import evaluate
from tasks.diffusion.generation import draw, prompt_items, write_generations
from tasks.core.manifest import manifest_rows
from tasks.core.models import base_model_path

STAGE = "evaluate_base"


def main(argv: Optional[list[str]] = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.evaluate_base
    # The base model knows no identifiers: its set names classes only (a template with
    # {identifier} would ask for a token it does not have).
    subjects = list(dict.fromkeys(SubjectEntry(row["subject"], row["identifier"], row["class_noun"])
                                  for row in manifest_rows(params)))
    items = prompt_items(cfg.prompt_set, subjects)
    if any(item.subject for item in items):
        raise InputDataError(f"{cfg.prompt_set}: a template names {{identifier}}, a token the base model does not "
                             "have; the base model's set draws classes ({class_noun}, {scene})")
    pipe = make_pipeline(load_text_to_image(base_model_path(params)))
    if not is_rank_zero():
        draw(params, pipe, items, steps=cfg.inference_steps, guidance_scale=cfg.guidance_scale,
             batch_size=cfg.batch_size)
        return
    judges = load_judges(params)
    target = params.paths.data / "generated" / "base"
    with stage_run(STAGE, params), atomic_outputs(target, params.paths.metrics / f"{STAGE}.json") as (tmp, tmp_metrics):
        images = draw(params, pipe, items, steps=cfg.inference_steps, guidance_scale=cfg.guidance_scale,
                      batch_size=cfg.batch_size)
        tmp.mkdir(parents=True)
        grids = write_generations(tmp, items, images)
        measured = evaluate(judges, items, np.stack([images[item.index] for item in items]), {})
        tmp_metrics.write_text(json.dumps({"prompt_set": str(cfg.prompt_set), **measured}, indent=2) + "\n")
        log_metrics_tree(measured)
        for who, grid in grids.items():
            log_image(grid, f"evaluate_base/{who}.png")


if __name__ == "__main__":
    run_stage_main(main)
