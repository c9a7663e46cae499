"""One static HTML report of the whole pipeline: every table and the key pictures of a
reproduced workspace, each linked to the MLflow run that made it.

    make report                                  # python -m flows.report -> report/index.html
    python -m flows.report --mlflow-ui http://mlflow.lab:5000 --out /srv/www/subjectlab

The tables are the reports' own Markdown (`plots/<report>/table.md`: DeSKPro's Table 3, the
personalization table, MSP's Table 1, and each method's table as it arrives); the pictures
are the PNGs the stages write for `dvc plots` (`plots/<stage>/...`). Pictures are copied
beside the page, so the folder can be served or mailed as it is. A table or picture whose
stage has no finished MLflow run in the store is shown without a link, never with a dead one.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from flows.entry import run_flow_main
from tasks.core.cli import OneLineParser
from tasks.core.errors import UserError
from tasks.core.params import load_params
from tasks.core.tracking import STAGE_TAG, runs_url, tracking_uri

# The report stages, in the order a reader meets the methods, with what their table is.
TABLES = (
    ("reid_ablation_report", "DeSKPro: Table 3, the ablation (rank-1 / rank-5 / mAP, %)"),
    ("personalization_report", "Personalization: DreamBooth's Table 1 on SynthWorld"),
    ("msp_report", "MSP-Diffusion: Table 1"),
    ("eclipsed_report", "eCLIPsed: Table 1, CLIP similarity of the edits (final against each alternate)"),
)
# plots/<family>/<item>/...: pictures of one item of a foreach family; msp/ holds three families' rows.
FAMILY_FOLDERS = {"msp": ("msp", "msp_baseline", "msp_controlnet"), "train_controlnet": ("train_controlnet",),
                  "personalization": ("personalization",), "eclipsed": ("eclipsed",)}


@dataclass
class Picture:
    path: Path          # under plots/
    stage_names: tuple[str, ...]   # the stage runs that may have drawn it, first match wins


def stage_of_picture(relative: Path) -> tuple[str, ...]:
    parts = relative.parts    # e.g. ("msp", "plain_gd", "n1_0.png") or ("evaluate_reid", "attention.png")
    if len(parts) >= 3 and parts[0] in FAMILY_FOLDERS:
        return tuple(f"{family}@{parts[1]}" for family in FAMILY_FOLDERS[parts[0]])
    return (parts[0],)


def latest_runs(workspace: Path) -> tuple[dict[str, object], Optional[str]]:
    """stage name -> its newest FINISHED run, and the experiment id (None: no store yet)."""
    from mlflow import MlflowClient

    params = load_params(workspace / "params.yaml")
    client = MlflowClient(tracking_uri(params, workspace))
    experiment = client.get_experiment_by_name(params.mlflow.experiment)
    if experiment is None:
        return {}, None
    runs: dict[str, object] = {}
    for run in client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'",
                                  order_by=["attributes.start_time DESC"], max_results=5000):
        runs.setdefault(run.data.tags.get(STAGE_TAG, ""), run)
    return runs, experiment.experiment_id


def run_link(ui: str, experiment_id: Optional[str], run) -> Optional[str]:
    if run is None or experiment_id is None:
        return None
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs/{run.info.run_id}"


def render_table(markdown_text: str) -> str:
    import markdown

    return markdown.markdown(markdown_text, extensions=["tables"])


def linked(label: str, href: Optional[str]) -> str:
    text = html.escape(label)
    return f'<a href="{html.escape(href)}">{text}</a>' if href else text


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5rem; vertical-align: top; max-width: 560px; }
figure img { max-width: 560px; image-rendering: pixelated; border: 1px solid #ddd; }
figcaption { font-size: 0.8rem; }
.run { font-size: 0.85rem; color: #555; }
"""


def build(workspace: Path, out: Path, ui: str) -> Path:
    """Write <out>/index.html and its pictures; the page's path."""
    workspace = workspace.resolve()
    plots = workspace / "plots"
    if not plots.is_dir():
        raise UserError(f"{plots}: missing; reproduce the pipeline first (dvc repro)")
    runs, experiment_id = latest_runs(workspace)
    staging = out.with_name(f".{out.name}.staged")
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "images").mkdir(parents=True)

    body = [f"<h1>subjectlab: {html.escape(workspace.name)}</h1>",
            f"<p class=run>Built {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC from {html.escape(str(workspace))}; "
            f"links open the MLflow run of each table and picture "
            f"({linked('all runs', runs_url(ui, experiment_id) if experiment_id else None)}).</p>"]
    body.append("<h2>Tables</h2>")
    for stage, title in TABLES:
        table = plots / stage / "table.md"
        if not table.is_file():
            continue
        run = runs.get(stage)
        body.append(f"<h3>{html.escape(title)}</h3>")
        body.append(f"<p class=run>{linked(f'MLflow run of {stage}', run_link(ui, experiment_id, run))}</p>")
        body.append(render_table(table.read_text()))

    body.append("<h2>Pictures</h2>")
    pictures = [Picture(p.relative_to(plots), stage_of_picture(p.relative_to(plots)))
                for p in sorted(plots.rglob("*.png"))]
    section = None
    for picture in pictures:
        top = picture.path.parts[0]
        if top != section:
            section = top
            body.append(f"<h3>{html.escape(top)}</h3>")
        run_name = next((name for name in picture.stage_names if name in runs), None)
        href = run_link(ui, experiment_id, runs.get(run_name)) if run_name else None
        target = staging / "images" / picture.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(plots / picture.path, target)
        source = html.escape(f"images/{picture.path.as_posix()}")
        caption = linked(f"{picture.path.as_posix()} ({run_name or picture.stage_names[0]})", href)
        body.append(f'<figure><img src="{source}" alt="{html.escape(picture.path.as_posix())}">'
                    f"<figcaption>{caption}</figcaption></figure>")

    page = ("<!doctype html><html><head><meta charset=utf-8><title>subjectlab report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    (staging / "index.html").write_text(page)
    # the whole folder at once: a reader never opens a page whose pictures are half copied
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out / "index.html"


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m flows.report", description="Write the pipeline's static HTML report.")
    parser.add_argument("--workspace", default=".")
    parser.add_argument("--out", default=None, help="folder of the report (default: <workspace>/report)")
    parser.add_argument("--mlflow-ui", default="http://127.0.0.1:5000",
                        help="where the MLflow UI of this workspace's store is served (make mlflow-ui / mlflow-server)")
    args = parser.parse_args(argv)
    workspace = Path(args.workspace)
    out = Path(args.out) if args.out else workspace / "report"
    page = build(workspace, out.resolve(), args.mlflow_ui)
    print(f"report: {page}", flush=True)


if __name__ == "__main__":
    run_flow_main(main)
