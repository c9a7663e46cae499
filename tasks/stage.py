"""What every stage entry point shares: its command line, params and rank."""

from __future__ import annotations

import argparse
import os

from tasks.config import DEFAULT_PARAMS_FILE, Params, load_params


def parse_stage_args(stage: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"python -m tasks.{stage}", description=f"Run the `{stage}` stage.")
    parser.add_argument("--params", default=DEFAULT_PARAMS_FILE, help="params file (default: params.yaml)")
    return parser.parse_args(argv)


def stage_params(stage: str, argv: list[str] | None) -> Params:
    return load_params(parse_stage_args(stage, argv).params)


def is_rank_zero() -> bool:
    """True in the launching process; Lightning's DDP relaunches set these for the others."""
    return all(int(os.environ.get(name, "0")) == 0 for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))
