"""`subjectlab <stage> [--params FILE]`: run one stage directly, as dvc.yaml's commands do."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import tasks
from tasks.errors import USER_ERROR_EXIT_CODE, run_stage_main

# Helpers that live beside the stage modules but are not stages themselves.
_NOT_STAGES = {"cli", "config", "config_base", "config_diffusion", "curves", "diffusion_setup", "errors", "outputs", "reid_folder", "reid_setup", "stage",
               "subjects_folder", "tracking", "trainer", "zoo_paths"}


def stages() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(tasks.__path__) if m.name not in _NOT_STAGES)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in stages():
        print(f"usage: subjectlab {{{','.join(stages())}}} [--params FILE]", file=sys.stderr)
        sys.exit(USER_ERROR_EXIT_CODE)
    module = importlib.import_module(f"tasks.{argv[0]}")
    run_stage_main(module.main, argv[1:])


if __name__ == "__main__":
    main()
