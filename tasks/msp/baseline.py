"""Stage `msp_baseline@<row>`: a baseline row of MSP's Table 1 (DreamBooth, Textual Inversion,
Custom Diffusion).

dvc.yaml expands it over `msp.baselines`, names of personalization rows: the row's fine-tuned
model draws, for every composition, one prompt naming all its subjects and the scene, with no
layout, from the same seeds as ours; the images are judged on the composition's segments all the
same (tasks/msp/composite.py).
"""

from __future__ import annotations

from typing import Optional

from tasks.core.errors import ParamsError, run_stage_main
from tasks.core.params import load_params
from tasks.core.stage import parse_stage_args
from tasks.msp.composite import fine_tuned_identifiers, run_row, settings_for

STAGE = "msp_baseline"


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_stage_args(STAGE, argv, lambda parser: parser.add_argument(
        "--row", required=True, help="a row of personalization.table listed in msp.baselines"))
    params = load_params(args.params)
    if args.row not in params.msp.baselines:
        raise ParamsError(f"{args.params}: msp.baselines: {args.row!r} is not listed "
                          f"(listed: {', '.join(params.msp.baselines) or 'none'})")
    model_dir = params.paths.data / "personalization" / args.row / "model"
    mode = fine_tuned_identifiers(model_dir)[0].get("mode", "")
    run_row(params, f"{STAGE}@{args.row}", args.row, model_dir,
            settings_for(params, global_diffuser=False, sal=False, scaffolding_fraction=0.0),
            single_prompt=True, scaffolding=False, tags={"method": "baseline", "mode": mode},
            logged={"row": args.row, "mode": mode,
                    "msp": {k: v for k, v in params.effective()["msp"].items() if k not in ("rows", "table")}})


if __name__ == "__main__":
    run_stage_main(main)
