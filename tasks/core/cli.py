"""`subjectlab <stage> [--params FILE]` runs one stage as dvc.yaml's command does;
`subjectlab params [-S key=value ...]` composes params.yaml from conf/ as `dvc exp run` does."""

from __future__ import annotations

import argparse
import importlib
import sys

from tasks.core.errors import USER_ERROR_EXIT_CODE, UserError, run_stage_main
from tasks.core.registry import stage_modules


class OneLineParser(argparse.ArgumentParser):
    """A command line mistake as one `error:` line (argparse prints the usage, then the error)."""

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see {self.prog} --help)")


def stages() -> list[str]:
    return sorted(stage_modules())


def compose_params(argv: list[str]) -> None:
    from tasks.core.profiles import compose

    parser = OneLineParser(prog="subjectlab params",
                                     description="Compose params.yaml from conf/ (Hydra overrides, as dvc exp run -S).")
    parser.add_argument("-S", "--set-param", action="append", default=[], dest="overrides",
                        metavar="KEY=VALUE", help="e.g. profile=smoke or finetune.max_steps=50 (repeatable)")
    args = parser.parse_args(argv)
    params = compose(args.overrides)
    print(f"params.yaml composed: profile {params.profile}" + (f", {' '.join(args.overrides)}" if args.overrides else ""))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "params":
        run_stage_main(lambda rest: compose_params(rest or []), argv[1:])
        return
    if not argv or argv[0] not in stages():
        print(f"usage: subjectlab {{params,{','.join(stages())}}} [--params FILE]", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    module = importlib.import_module(stage_modules()[argv[0]].module)
    run_stage_main(module.main, argv[1:])


if __name__ == "__main__":
    main()
