"""Stage `eclipsed_report`: eCLIPsed's Table 1 in the paper's layout, with SynthWorld's columns.

Each line of the paper's table compares the final configuration with one alternate: CLIP
similarity of an edit to the prompt for both, the paper's figures beside ours. Ours are means
over eclipsed.eval_seeds fixed latents at eclipsed.eval_alpha (the paper: one random seed at
alpha 6 or 7), except "same seed", measured on the single-seed row's training seed. Beside them,
what the paper could not measure: locality (pixel change outside the part over inside; lower is
more local) and edit accuracy (the face judge finds the prompted attribute, the other attributes
and the identity kept). A second table lists every row; a sequential strip composes the rows of
eclipsed.sequential. Markdown, CSV, DVC metrics, a plot, MLflow.
"""

from __future__ import annotations

from typing import Optional

import mlflow
from PIL import Image

from tasks.core.errors import run_stage_main
from tasks.core.outputs import atomic_outputs
from tasks.core.report import finish_report, markdown, read_rows, write_csv, write_table
from tasks.core.stage import stage_params
from tasks.core.tracking import log_image, share_table_view, stage_run
from tasks.eclipsed.learned import TABLE

STAGE = "eclipsed_report"
TABLE_VIEW = "eclipsed-table-1"   # runs_url(server, experiment, view=TABLE_VIEW)
FAMILY = "eclipsed"
SEQUENTIAL = "eclipsed_sequential"   # plots/<this>/sequential.png: the strip of eclipsed.sequential
FINAL = "final"
# (the paper's line, the alternate row, the CLIP similarity compared, the paper's final / alternate)
PAIRS = (
    ("Prompt (normal vs extended)", "extended_prompt", "clip_similarity", (0.192, 0.177)),
    ("Single seed training (same seed)", "single_seed", "clip_similarity_train_seed", (0.188, 0.205)),
    ("Single seed training (on random seed)", "single_seed", "clip_similarity", (0.207, 0.193)),
    ("W+ vs W", "w_space", "clip_similarity", (0.213, 0.201)),
    ("localization score (0.05 vs 0)", "localization_0", "clip_similarity", (0.201, 0.204)),
    ("localization score (0.05 vs 0.2)", "localization_0_2", "clip_similarity", (0.201, 0.174)),
)
ROW_KEYS = ("row", "prompt", "part", "clip_similarity", "clip_similarity_unedited", "clip_similarity_train_seed",
            "locality", "edit_accuracy")
PAPER_NOTE = ("paper: Table 1 of the eCLIPsed report (StyleGAN2 FFHQ, CLIP ViT, one random seed, alpha 6-7). Ours: "
              "SynthWorld's tiny generator and CLIP trained here, means over the evaluation seeds: compare the "
              "direction of each difference, not values. locality: pixel change outside the part over inside "
              "(lower is more local); edit accuracy: the face judge finds the prompted attribute with the other "
              "attributes and the identity unchanged. '-': the row did not run (eclipsed.table).")


def cell(value: Optional[float]) -> str:
    return "-" if value is None or value != value else f"{value:.3f}"


def table_1(rows: dict[str, dict]) -> tuple[list[str], list[list[str]], list[dict]]:
    header = ["Parameter", "paper final", "paper alternate", "final", "alternate", "locality final",
              "locality alternate", "edit accuracy final", "edit accuracy alternate"]
    final = rows.get(FINAL, {})
    body, data = [], []
    for title, alternate_row, key, (paper_final, paper_alternate) in PAIRS:
        alternate = rows.get(alternate_row, {})
        line = {"parameter": title, "alternate_row": alternate_row, "measure": key,
                "paper_final": paper_final, "paper_alternate": paper_alternate,
                "final": final.get(key), "alternate": alternate.get(key),
                "locality_final": final.get("locality"), "locality_alternate": alternate.get("locality"),
                "edit_accuracy_final": final.get("edit_accuracy"),
                "edit_accuracy_alternate": alternate.get("edit_accuracy")}
        data.append(line)
        body.append([title, f"{paper_final:.3f}", f"{paper_alternate:.3f}", cell(line["final"]),
                     cell(line["alternate"]), cell(line["locality_final"]), cell(line["locality_alternate"]),
                     cell(line["edit_accuracy_final"]), cell(line["edit_accuracy_alternate"])])
    return header, body, data


def rows_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    header = ["row", "prompt", "part", "CLIP sim.", "CLIP sim. unedited", "CLIP sim. training seed", "locality",
              "edit accuracy"]
    return header, [[r["row"], r["prompt"], r["part"], *(cell(r[k]) for k in ROW_KEYS[3:])] for r in rows]


def main(argv: Optional[list[str]] = None) -> None:
    params = stage_params(STAGE, argv)
    cfg = params.eclipsed
    names = list(cfg.table)
    rows = read_rows(params.paths.metrics / FAMILY, names, FAMILY, ROW_KEYS)
    by_name = {r["row"]: r for r in rows}
    editor = None
    if cfg.sequential:
        # The generator, the directions and the CLIP / judge code they bring (~10 s of imports)
        # only when a sequential strip is asked for: a report of rows alone stays a light stage.
        from tasks.eclipsed.editor import load_editor

        editor = load_editor(params, cfg.sequential)
    # The strip has a folder of its own: dvc plots reads every file of a plots output, and the
    # report's folder holds table.md, which it cannot draw.
    targets = (params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE, params.paths.plots / SEQUENTIAL)
    with stage_run(STAGE, params), atomic_outputs(*targets) as (tmp_metrics, tmp_plots, tmp_sequential):
        tmp_sequential.mkdir(parents=True)
        mlflow.log_param("eclipsed_report.rows", ",".join(names))
        header, body, data = table_1(by_name)
        text = write_table(tmp_plots, header, body, [PAPER_NOTE])
        all_header, all_body = rows_table(rows)
        write_csv(tmp_plots / "rows.csv", all_header, all_body)
        text += "\n" + markdown(all_header, all_body)
        (tmp_plots / "table.md").write_text(text)
        # One line per row and measure: what `dvc plots` draws as grouped bars.
        write_csv(tmp_plots / "metrics.csv", ["row", "metric", "value"],
                  [[r["row"], k, r[k]] for r in rows for k in ("clip_similarity", "locality", "edit_accuracy")
                   if r[k] is not None])
        if editor is not None:
            from tasks.eclipsed.evaluation import sequential_picture

            edits = [(editor.directions[row], cfg.eval_alpha) for row in cfg.sequential]
            seeds = list(range(cfg.eval_seed_start, cfg.eval_seed_start + cfg.strip_seeds))
            picture = sequential_picture(editor.generator, edits, seeds, editor.truncation)
            Image.fromarray(picture).save(tmp_sequential / "sequential.png")
            log_image(picture, "eclipsed/sequential.png")
        # MLflow's runs table as Table 1: the rows' runs, their measures as columns
        share_table_view(TABLE_VIEW, f"tags.`subjectlab.table` = '{TABLE}'",
                         ["clip_similarity", "clip_similarity_train_seed", "locality", "edit_accuracy"])
        finish_report(tmp_metrics, tmp_plots, rows, ROW_KEYS, {"table_1": data, "sequential": list(cfg.sequential)},
                      "eclipsed", text)


if __name__ == "__main__":
    run_stage_main(main)
