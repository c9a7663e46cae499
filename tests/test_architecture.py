"""The house rules, checked: stage deps cover every project file a stage imports, stage params
cover every section it reads, and the layers hold (import-linter)."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import yaml

from tasks.core.params import Params
from tasks.core.registry import stage_module, stage_modules
from tests.conftest import ROOT, stage_env
from tests.import_closure import closure

# Where results are recorded, not what they are: no stage depends on these.
RECORDING_ONLY = {"profile", "mlflow", "schedule"}


def dvc_stages() -> dict[str, dict]:
    """dvc.yaml's stages as written (a foreach stage once, under its own name)."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: spec.get("do", spec) for name, spec in stages.items()}


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_dvc_yaml_and_the_stage_registry_name_the_same_stages():
    assert set(dvc_stages()) == set(stage_modules())
    for name, spec in dvc_stages().items():
        assert spec["cmd"].split()[:3] == ["python", "-m", stage_module(name).module], name


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_stage_deps_cover_every_project_file_it_imports(stage):
    spec = dvc_stages()[stage]
    module = spec["cmd"].split()[2]
    missing = sorted(p.relative_to(ROOT).as_posix() for p in closure(module) if not covered(p, spec["deps"]))
    assert not missing, f"{stage} imports files its deps do not cover: {missing}"


def sections_read(path: Path) -> set[str]:
    """`params.<section>` attribute reads in a file (docstrings and comments do not count)."""
    fields = set(Params.model_fields)
    return {node.attr for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "params"
            and node.attr in fields}


@pytest.mark.parametrize("stage", sorted(dvc_stages()))
def test_stage_params_cover_every_section_it_reads(stage):
    spec = dvc_stages()[stage]
    declared = {re.split(r"[.$]", entry)[0] for entry in spec["params"] if isinstance(entry, str)}
    read = set().union(*(sections_read(p) for p in closure(spec["cmd"].split()[2]) if "tasks" in p.parts))
    assert read - RECORDING_ONLY <= declared, f"{stage} reads {sorted(read - RECORDING_ONLY - declared)} undeclared"
    assert not declared & RECORDING_ONLY


def lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=cwd,
                          env=stage_env(), capture_output=True, text=True, timeout=300)


def test_layer_rules_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("file, line, violation", [
    ("lightning_modules/core/visual.py", "import tasks.core.params", "lightning_modules.core.visual -> tasks.core.params"),
    ("tasks/msp/augment.py", "import tasks.deskpro.setup", "tasks.msp.augment -> tasks.deskpro.setup"),
    ("tasks/core/outputs.py", "import tasks.diffusion.setup", "tasks.core.outputs -> tasks.diffusion.setup"),
])
def test_a_layer_violation_is_caught(tmp_path, file, line, violation):
    for name in ("tasks", "lightning_modules", "flows", "pyproject.toml"):
        source = ROOT / name
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        copy(source, tmp_path / name)
    with (tmp_path / file).open("a") as f:
        f.write(f"\n{line}  # noqa\n")
    result = subprocess.run([str(Path(sys.executable).parent / "lint-imports"), "--no-cache"], cwd=tmp_path,
                            env={**stage_env(), "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "BROKEN" in result.stdout
    assert violation in result.stdout, result.stdout[-3000:]


def test_every_third_party_import_is_a_declared_dependency():
    """pyproject.toml names every distribution the project's code imports (not just what
    happens to be installed beside something else)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[ ;]", spec)[0].lower().replace("_", "-")
                for spec in project["dependencies"] + project["optional-dependencies"]["test"]}
    distributions = packages_distributions()
    undeclared = {}
    for package in ("tasks", "lightning_modules", "flows"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {name.split(".")[0] for name in names}:
                    if top in ("tasks", "lightning_modules", "flows") or top in sys.stdlib_module_names:
                        continue
                    provided = {d.lower().replace("_", "-") for d in distributions.get(top, [])}
                    if not provided & declared:
                        undeclared[top] = path.relative_to(ROOT).as_posix()
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
