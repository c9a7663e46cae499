"""What every stage entry point shares: its command line, params and rank."""

from __future__ import annotations

import argparse
import os
from typing import Callable, Mapping, Sequence

from tasks.core.params import DEFAULT_PARAMS_FILE, Params, load_params


def parse_stage_args(stage: str, argv: list[str] | None,
                     extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """`--params FILE`, plus whatever `extra` adds (e.g. the `--row` of a foreach stage)."""
    from tasks.core.registry import stage_module

    parser = argparse.ArgumentParser(prog=f"python -m {stage_module(stage).module}",
                                     description=f"Run the `{stage}` stage.")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, help="params file (default: params.yaml)")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def stage_params(stage: str, argv: list[str] | None) -> Params:
    return load_params(parse_stage_args(stage, argv).params)


def is_rank_zero() -> bool:
    """True in the launching process; Lightning's DDP relaunches set these for the others."""
    return all(int(os.environ.get(name, "0")) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def held_out_split(stage: str, splits: Mapping[str, Sequence], measured: str) -> str:
    """The split a stage's final figures are measured on: test, or val when augment.test_count
    is 0. The metrics carry the split's name and the console says so: never a silent stand-in."""
    if splits.get("test"):
        return "test"
    print(f"{stage}: augment.test_count is 0, so {measured} is measured on the val split", flush=True)
    return "val"
