"""Stage `reid_ablation_report`: the rows of Table 3 side by side (Markdown, CSV, MLflow)."""

from __future__ import annotations

import json
from typing import Optional

import mlflow

from tasks.core.errors import run_stage_main
from tasks.core.params import ORACLE_RESTORER
from tasks.core.outputs import atomic_outputs
from tasks.core.report import read_rows, write_csv, write_table
from tasks.core.stage import stage_params
from tasks.core.tracking import share_table_view, stage_run

STAGE = "reid_ablation_report"
# Table 3's columns: body stream G, CSA, L_att; face stream phi_s^-, phi_s^+, phi_t.
COMPONENTS = ("G", "CSA", "L_att", "phi_s-", "phi_s+", "phi_t")
# Beside them: whether the row was tested on oracle faces (tasks.deskpro.oracle.sees_oracle_faces).
ORACLE = "oracle"
ORACLE_NOTE = ("oracle: these rows are tested on SynthWorld's clean face renders (models.face_restorer: clean; "
               "for a folder of your own, its faces/), a perfect restorer no real system has, so their numbers "
               "are optimistic. With bicubic or a restorer model they are not oracle rows.")
# L_fkp's teacher sees restored faces in training, so a clean restorer reaches phi_s^+ there too.
DISTILLED_NOTE = ("phi_s+ rows are tested on the low-resolution faces alone, but their L_fkp soft labels "
                  "came from the teacher on the clean face renders.")
ROW_KEYS = ("variant", "face_restorer", "oracle", "test")


def components(variant: dict) -> dict[str, bool]:
    face = variant["face_stream"]
    return {"G": variant["global_stream"], "CSA": variant["csa"], "L_att": variant["attention_loss"],
            "phi_s-": face == "student" and not variant["knowledge_propagation"],
            "phi_s+": face == "student" and variant["knowledge_propagation"], "phi_t": face == "teacher"}


def table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    protocols = list(rows[0]["test"]) if rows else []
    header = ["model", *COMPONENTS, ORACLE] + [f"{p} {m}" for p in protocols for m in ("R-1", "R-5", "mAP")]
    body = []
    for row in rows:
        marks = components(row["variant"])
        cells = [row["row"], *("x" if marks[c] else "" for c in COMPONENTS), "x" if row["oracle"] else ""]
        for p in protocols:
            result = row["test"].get(p, {})
            cells += [f"{100 * result[k]:.1f}" if k in result else "-" for k in ("rank1", "rank5", "mAP")]
        body.append(cells)
    return header, body


def notes(rows: list[dict]) -> list[str]:
    """The table's footnotes: what the oracle rows saw, said only when some row saw it."""
    found = []
    if any(row["oracle"] for row in rows):
        found.append(ORACLE_NOTE)
    if any(row["face_restorer"] == ORACLE_RESTORER and components(row["variant"])["phi_s+"] for row in rows):
        found.append(DISTILLED_NOTE)
    return found


TABLE_VIEW = "reid-ablation-table-3"   # runs_url(server, experiment, view=TABLE_VIEW)


def model_label(row: dict) -> str:
    """The row's name where no footnote follows it (plots): oracle rows say so in the name."""
    return f"{row['row']} ({ORACLE})" if row["oracle"] else row["row"]


def main(argv: Optional[list[str]] = None) -> None:
    params = stage_params(STAGE, argv)
    names = list(params.reid_ablation.table)
    rows = read_rows(params.paths.metrics / "reid_ablation", names, "reid_ablation", ROW_KEYS)
    header, body = table(rows)
    targets = (params.paths.metrics / f"{STAGE}.json", params.paths.plots / STAGE)
    with stage_run(STAGE, params), atomic_outputs(*targets) as (tmp_metrics, tmp_plots):
        mlflow.log_param("reid_ablation_report.rows", ",".join(names))
        text = write_table(tmp_plots, header, body, notes(rows))
        # One line per row and protocol: what `dvc plots` draws as bars.
        write_csv(tmp_plots / "rank1.csv", ["model", "protocol", "rank1", "mAP"],
                  [[model_label(row), protocol, result["rank1"], result["mAP"]]
                   for row in rows for protocol, result in row["test"].items()])
        summary = {row["row"]: {ORACLE: row["oracle"], **row["test"]} for row in rows}
        tmp_metrics.write_text(json.dumps(summary, indent=2) + "\n")
        mlflow.log_artifacts(str(tmp_plots), artifact_path="reid_ablation")
        # MLflow's runs table as Table 3: the rows' runs, their rank-1 / rank-5 / mAP as columns
        share_table_view(TABLE_VIEW, "tags.`subjectlab.stage` LIKE 'reid_ablation@%'",
                         [f"test.{p}.{m}" for p in (rows[0]["test"] if rows else []) for m in ("rank1", "rank5", "mAP")])
        print(text, flush=True)


if __name__ == "__main__":
    run_stage_main(main)
