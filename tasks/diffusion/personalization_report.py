"""Stage `personalization_report`: the personalization table, rows side by side, with the
DreamBooth paper's own DreamBench numbers beside ours (Markdown, CSV, a plot, MLflow)."""

from __future__ import annotations

from typing import Optional

import mlflow

from tasks.core.errors import run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.report import finish_report, read_rows, write_csv, write_table
from tasks.core.stage import stage_params
from tasks.core.tracking import stage_run

STAGE = "personalization_report"
FAMILY = "personalization"
ROW_KEYS = ("row", "mode", "clip_i", "clip_t", "dino", "identity_accuracy", "prompt_accuracy")
# DreamBooth (Ruiz et al. 2023), Table 1: DreamBench with Stable Diffusion (DINO, CLIP-I, CLIP-T).
PAPER = {"full": (0.668, 0.803, 0.305), "textual_inversion": (0.569, 0.780, 0.255)}
PAPER_NOTE = ("paper: DreamBooth's Table 1 on DreamBench with Stable Diffusion (DreamBooth full fine-tuning, "
              "Textual Inversion); real reference images score DINO 0.774, CLIP-I 0.885 there. "
              "SynthWorld's CLIP and DINO are tiny models trained here, so compare orderings, not values.")
HEADER = ["row", "mode", "DINO", "CLIP-I", "CLIP-T", "identity", "class", "scene", "other drift",
          "paper DINO", "paper CLIP-I", "paper CLIP-T"]


def cell(value: Optional[float], digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def small(value: Optional[float]) -> str:
    """Language drift is a relative shift of the guidance direction, often 1e-4: two significant digits."""
    return "-" if value is None else f"{value:.2g}"


def table(rows: list[dict]) -> list[list[str]]:
    body = []
    for row in rows:
        paper = PAPER.get(row["mode"], (None, None, None))
        drift = row.get("language_drift", {}).get("other_shift")
        body.append([row["row"], row["mode"], cell(row["dino"]), cell(row["clip_i"]), cell(row["clip_t"]),
                     cell(row["identity_accuracy"]), cell(row["prompt_accuracy"]["class"]),
                     cell(row["prompt_accuracy"]["scene"]), small(drift), *(cell(v) for v in paper)])
    return body


def ordering(rows: list[dict]) -> dict[str, Optional[bool]]:
    """Does SynthWorld reproduce the paper's ordering (DreamBooth above Textual Inversion on
    DINO and CLIP-I)? None when the table lacks one of the two."""
    by_mode = {row["mode"]: row for row in rows}
    if not {"full", "textual_inversion"} <= set(by_mode):
        return {"dino": None, "clip_i": None}
    full, ti = by_mode["full"], by_mode["textual_inversion"]
    return {key: bool(full[key] > ti[key]) for key in ("dino", "clip_i")}


def main(argv: Optional[list[str]] = None) -> None:
    params = stage_params(STAGE, argv)
    names = list(params.personalization.table)
    rows = read_rows(params.paths.metrics / FAMILY, names, FAMILY, ROW_KEYS)
    body = table(rows)
    order = ordering(rows)
    footnotes = [PAPER_NOTE]
    if order["dino"] is not None:
        footnotes.append(f"DreamBooth above Textual Inversion: DINO {'yes' if order['dino'] else 'no'}, "
                         f"CLIP-I {'yes' if order['clip_i'] else 'no'} (the paper: yes, yes).")
    targets = (params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params), atomic_outputs(*targets) as (tmp_metrics, tmp_plots):
        mlflow.log_param("personalization_report.rows", ",".join(names))
        text = write_table(tmp_plots, HEADER, body, footnotes)
        # One line per row and metric: what `dvc plots` draws as grouped bars.
        write_csv(tmp_plots / "metrics.csv", ["row", "metric", "value"],
                  [[row["row"], metric, row[metric]] for row in rows
                   for metric in ("dino", "clip_i", "clip_t", "identity_accuracy")])
        finish_report(tmp_metrics, tmp_plots, rows, ROW_KEYS, {"dreambooth_above_textual_inversion": order},
                      "personalization", text)


if __name__ == "__main__":
    run_stage_main(main)
