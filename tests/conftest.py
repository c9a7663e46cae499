"""Shared fixtures: real workspaces (git + DVC) running the smoke profile in temp dirs."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE = ("tasks", "lightning_modules", "flows", "conf", "prompts", "dvc.yaml", "params.yaml", ".dvc/config",
        ".dvcignore", "pyproject.toml")

for name, value in {"DO_NOT_TRACK": "1", "DVC_NO_ANALYTICS": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PYTHONUNBUFFERED": "1"}.items():
    os.environ.setdefault(name, value)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("SUBJECTLAB_PARENT_RUN_ID", None)


def stage_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run(command: list[str], cwd: Path, check: bool = True, timeout: float = 2400) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, env=stage_env(), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def stage_command(stage: str) -> list[str]:
    """`python -m tasks.<method>.<stage>`, the module found through the stage registry."""
    from tasks.core.registry import stage_module

    return [sys.executable, "-m", stage_module(stage).module]


def python_stage(stage: str, cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([*stage_command(stage), *args], cwd, check=check)


def edit_params(path: Path, **changes) -> None:
    """Set values in a composed params file by dotted key (`edit_params(p, **{"finetune.max_steps": 3})`),
    as a user editing params.yaml before `dvc repro` would."""
    import yaml

    data = yaml.safe_load(path.read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node[key]
        assert leaf in node, dotted
        node[leaf] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False))


# Table 3 rows the smoke workspaces keep: one per kind of training (global stream only, face
# student with knowledge propagation, teacher only, global + teacher). Every row of params.yaml
# is still validated and expanded by dvc (tests/test_reid_pipeline.py); each row is a separate
# stage process, and the suite's time budget pays for four.
SMOKE_ABLATION_ROWS = ("baseline", "student_fkp", "teacher", "deskpro_star")


# Personalization rows the smoke workspaces keep: the two that train the fewest weights.
SMOKE_PERSONALIZATION_ROWS = ("lora", "textual_inversion")
# MSP Table 1's baseline rows draw from personalization rows that run.
SMOKE_MSP_BASELINES = ("textual_inversion",)


def table_rows(keep: tuple[str, ...], table: str = "reid_ablation") -> str:
    """The Hydra override that runs only `keep` of <table>.rows (every row stays defined)."""
    return f"{table}.table=[{','.join(keep)}]"


def make_workspace(path: Path, profile: str = "smoke", git: bool = True,
                   ablation_rows: tuple[str, ...] | None = SMOKE_ABLATION_ROWS, overrides: tuple[str, ...] = ()) -> Path:
    """A copy of the project as a user would have it: code, conf/, dvc.yaml, git + DVC, and
    params.yaml composed for `profile` exactly as `dvc exp run -S profile=...` composes it."""
    from tasks.core.profiles import compose

    path.mkdir(parents=True, exist_ok=True)
    for name in CODE:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, path / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, path / name)
    rows = [] if ablation_rows is None else [table_rows(ablation_rows),
                                             table_rows(SMOKE_PERSONALIZATION_ROWS, "personalization"),
                                             f"msp.baselines=[{','.join(SMOKE_MSP_BASELINES)}]"]
    compose([f"profile={profile}", *rows, *overrides], root=path)
    if git:
        run(["git", "init", "-q"], path)
        run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "add", "-A"], path)
        run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "init"], path)
    return path


def write_params(workspace: Path, name: str, edit) -> str:
    """A params file beside params.yaml with `edit(params_dict)` applied; its name, for --params."""
    import yaml

    params = yaml.safe_load((workspace / "params.yaml").read_text())
    edit(params)
    (workspace / name).write_text(yaml.safe_dump(params))
    return name


def workspace_with_data(smoke_workspace: Path, target: Path, data: tuple[str, ...]) -> Path:
    """A plain workspace (no git, no DVC) holding the named data/ folders of a smoke run."""
    workspace = make_workspace(target, git=False)
    for name in data:
        shutil.copytree(smoke_workspace / "data" / name, workspace / "data" / name)
    return workspace


def kill_at_first_checkpoint(stage: str, cwd: Path, params_file: str, timeout: float = 600) -> Path:
    """Start a training stage, SIGKILL it (and its children) once its first last.ckpt exists,
    and return that checkpoint: a crash at an arbitrary moment after some progress."""
    import signal
    import time

    command = [*stage_command(stage), "--params", params_file]
    process = subprocess.Popen(command, cwd=cwd, env=stage_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    checkpoints = cwd / "checkpoints" / stage
    deadline = time.time() + timeout
    while not list(checkpoints.glob("*/last.ckpt")) and process.poll() is None:
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    (last,) = checkpoints.glob("*/last.ckpt")
    return last


def wait_for_health(url: str, server: subprocess.Popen, log: Path | None = None, timeout: float = 180) -> None:
    """Wait until a server subprocess answers `url`; fail with its log if it dies or never does."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"{url} never answered" + (f":\n{log.read_text()[-3000:]}" if log else ""))
            time.sleep(0.5)


def dvc(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "dvc", *args], cwd, check=check)


@pytest.fixture(scope="session")
def smoke_repo(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The smoke profile reproduced once with `dvc repro` in a fresh git + DVC workspace."""
    workspace = make_workspace(tmp_path_factory.mktemp("smoke") / "ws")
    return workspace, dvc(workspace, "repro")


@pytest.fixture()
def augmented_copy(smoke_repo, tmp_path) -> Path:
    """A plain workspace holding the smoke run's augmented data, for training-only tests."""
    workspace, _ = smoke_repo
    target = make_workspace(tmp_path / "ws", git=False)
    shutil.copytree(workspace / "data" / "augmented", target / "data" / "augmented")
    return target


@pytest.fixture()
def in_process(monkeypatch):
    """Run a stage's main() inside the test process, in a workspace (skips the import cost of
    a fresh interpreter). MLflow's global tracking URI does not leak into later tests."""

    def run_stage(stage: str, workspace: Path, *args: str) -> None:
        import importlib

        from tasks.core.errors import run_stage_main
        from tasks.core.registry import stage_module

        monkeypatch.chdir(workspace)
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
        try:
            run_stage_main(importlib.import_module(stage_module(stage).module).main, list(args))
        finally:
            # a stage must not leave MLflow pointed at its workspace for what runs next
            assert "MLFLOW_TRACKING_URI" not in os.environ

    return run_stage


@contextlib.contextmanager
def one_intra_op_thread():
    """In this process, what OMP_NUM_THREADS=1 gives a fresh one: torch ops on one thread (a CPU
    matmul sums in an order that follows its thread count)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def stopped(in_process, capsys, stage: str, workspace: Path, *args: str) -> str:
    """Run a stage through `in_process`; it must stop with exit 2 and one line on stderr, which is
    returned. (tests/test_bad_values.py proves the same exit and line from a real process for
    every stage; here the refusal's reasons are checked without paying a fresh interpreter.)"""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        in_process(stage, workspace, *args)
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err[-2000:]
    return err


@pytest.fixture(scope="session")
def tracking_server(tmp_path_factory):
    """A real MLflow tracking server on a real PostgreSQL cluster, on free local ports."""
    from flows.tracking_server import TrackingServer

    with TrackingServer(tmp_path_factory.mktemp("tracking") / "server") as server:
        yield server


@pytest.fixture(scope="session")
def prefect_server():
    """A real Prefect server (the test harness's, on a free local port and its own database);
    PREFECT_API_URL points at it while the tests that use it run."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=300):
        yield
