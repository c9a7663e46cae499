"""The stage registry: every module `tasks/<method>/<stage>.py` that declares `STAGE = "<name>"`.

Found by reading the source (no imports, so listing the stages costs nothing), which makes
adding a stage a matter of writing its module: the CLI, the tests and the docs find it here.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

TASKS = Path(__file__).resolve().parents[1]
NOT_METHODS = {"core", "__pycache__"}


@dataclass(frozen=True)
class StageModule:
    name: str        # the DVC stage name (a foreach stage's items are name@key)
    method: str      # the folder under tasks/ (and, by convention, under lightning_modules/)
    module: str      # what `python -m` runs

    @property
    def path(self) -> Path:
        return TASKS.parent / (self.module.replace(".", "/") + ".py")


def _declared_stage(path: Path) -> str | None:
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "STAGE" and isinstance(node.value, ast.Constant)):
            return str(node.value.value)
    return None


@lru_cache(maxsize=1)
def stage_modules() -> dict[str, StageModule]:
    found: dict[str, StageModule] = {}
    for folder in sorted(p for p in TASKS.iterdir() if p.is_dir() and p.name not in NOT_METHODS):
        for path in sorted(folder.glob("*.py")):
            name = _declared_stage(path)
            if name is None:
                continue
            if name in found:
                raise RuntimeError(f"stage {name!r} declared twice: {found[name].path} and {path}")
            found[name] = StageModule(name, folder.name, f"tasks.{folder.name}.{path.stem}")
    return found


def stage_module(name: str) -> StageModule:
    """The module of a stage by its DVC name (`reid_ablation@baseline` -> reid_ablation)."""
    return stage_modules()[name.split("@", 1)[0]]
