"""Stage `msp_controlnet@<row>`: Table 1's rows steered by ControlNet-OpenPose (MSP 3).

The same drawing as `msp@<row>` (tasks/msp/generate.py), from msp.controlnet.compositions (each
composition with its pose image), every UNet call taking the residuals of msp.controlnet.model:
the train_controlnet@openpose stage's ControlNet, or a real one by path. A family of its own
because its inputs differ: dvc.yaml expands it over `msp.controlnet_table`.
"""

from __future__ import annotations

from typing import Optional

from tasks.core.errors import run_stage_main
from tasks.msp.generate import draw_row

STAGE = "msp_controlnet"


def main(argv: Optional[list[str]] = None) -> None:
    draw_row(STAGE, argv, controlnet=True)


if __name__ == "__main__":
    run_stage_main(main)
