"""Stage `msp@<row>`: one configuration of MSP-Diffusion's Table 1 (MSP 2(ii)-(iv), 3).

dvc.yaml expands it over `msp.table` (and `msp_controlnet` over `msp.controlnet_table`). The row's
switches (scaffolding image, global diffuser, SAL, ControlNet) set the composite sampler (lightning_modules/msp/sampler.py); the model is the finetune
stage's (MSP 2(i): every subject with its own identifier). Every composition of msp.compositions
is drawn `msp.images_per_composition` times, measured (tasks/msp/evaluation.py) and written to
data/msp/<row>/ (images, and a picture per composition: layout, segments, results) with
metrics/msp/<row>.json; one MLflow run per row, tagged for the compare view.
"""

from __future__ import annotations

from typing import Optional

from tasks.core.errors import ParamsError, run_stage_main
from tasks.core.params import load_params
from tasks.core.stage import parse_stage_args
from tasks.msp.composite import run_row, settings_for

STAGE = "msp"


def draw_row(stage: str, argv: Optional[list[str]], controlnet: bool) -> None:
    """A row of ours: `msp@<row>`, or `msp_controlnet@<row>` for the rows steered by ControlNet."""
    args = parse_stage_args(stage, argv, lambda parser: parser.add_argument(
        "--row", required=True, help="a key of msp.rows"))
    params = load_params(args.params)
    rows = params.msp.rows
    if args.row not in rows:
        raise ParamsError(f"{args.params}: msp.rows.{args.row}: no such row (known: {', '.join(rows) or 'none'})")
    row = rows[args.row]
    if row.controlnet != controlnet:
        other = "msp_controlnet" if row.controlnet else "msp"
        raise ParamsError(f"{args.params}: msp.rows.{args.row}: controlnet is {str(row.controlnet).lower()}; "
                          f"the row runs as {other}@{args.row}")
    switches = row.model_dump()
    run_row(params, f"{stage}@{args.row}", args.row, params.paths.data / "models" / "finetuned",
            settings_for(params, global_diffuser=row.global_diffuser, sal=row.sal),
            single_prompt=False, scaffolding=row.scaffolding, controlnet=row.controlnet,
            tags={"method": "ours", **{k: str(v).lower() for k, v in switches.items()}},
            logged={"row": args.row, "switches": switches,
                    "msp": {k: v for k, v in params.effective()["msp"].items()
                            if k not in ("rows", "table", "controlnet_table", "baselines")}})


def main(argv: Optional[list[str]] = None) -> None:
    draw_row(STAGE, argv, controlnet=False)


if __name__ == "__main__":
    run_stage_main(main)
