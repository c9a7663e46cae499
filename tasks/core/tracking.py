"""MLflow for stages: one run per stage execution, nested under a pipeline run if any.

The store is the embedded SQLite file under `paths.mlflow` unless MLFLOW_TRACKING_URI names
another (a tracking server). A flow passes its parent run id in SUBJECTLAB_PARENT_RUN_ID.
Only rank zero talks to MLflow: DDP relaunches of a stage never open runs.

A run's status tells the truth: FINISHED when the stage published, FAILED on an error,
KILLED on SIGTERM / SIGINT, and a run left RUNNING by a process that died (kill -9, a lost
machine) is marked KILLED the next time the stage starts on that machine. A server that
does not answer is reported at stage start, in one line, within seconds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import mlflow
import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run
from PIL import Image

from tasks.core import interrupt
from tasks.core.errors import TrackingError
from tasks.core.params import Params

PARENT_RUN_ENV = "SUBJECTLAB_PARENT_RUN_ID"
STAGE_TAG = "subjectlab.stage"
PROCESS_TAG = "subjectlab.process"
DEVICES_TAG = "subjectlab.cuda_visible_devices"   # host:pid:start-time of the process that owns a RUNNING run
REACH_TIMEOUT_S = 5.0
# MLflow 3's UI opens an experiment it cannot classify on its GenAI traces overview ("No data
# available"); this kind opens it on the runs table, where a training pipeline's runs are.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
TRAINING_KIND = "custom_model_development"
# A server that stops answering mid-run: a few quick retries, not MLflow's minutes of backoff.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def embedded_uri(params: Params, root: Path = Path(".")) -> str:
    """The SQLite store under paths.mlflow of the workspace at `root`."""
    return f"sqlite:///{(root / params.paths.mlflow).resolve() / 'mlflow.db'}"


def tracking_uri(params: Params, root: Path = Path(".")) -> str:
    """MLFLOW_TRACKING_URI when set (a server), else the embedded store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri(params, root)
    if uri == embedded_uri(params, root):
        (root / params.paths.mlflow).mkdir(parents=True, exist_ok=True)
    return uri


def experiment_id(client: MlflowClient, params: Params, root: Path = Path(".")) -> str:
    """The id of params.mlflow.experiment in the client's store, created on first use."""
    name = params.mlflow.experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND_TAG) is None:
            client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)
        return experiment.experiment_id
    # With the embedded store keep artifacts beside the database, not in the cwd.
    location = None
    if client.tracking_uri == embedded_uri(params, root):
        location = ((root / params.paths.mlflow).resolve() / "artifacts").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND})
    except mlflow.exceptions.MlflowException:
        # Another process created it between our lookup and create.
        return client.get_experiment_by_name(name).experiment_id


def use_experiment(params: Params) -> str:
    """Point the fluent MLflow API of this (stage) process at our store and experiment."""
    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    return experiment_id(MlflowClient(uri), params)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def git_commit(cwd: Path = Path(".")) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def describe_failure(err: BaseException) -> str:
    """The first line of what a store client raised, without its SQL or its traceback."""
    # The store client wraps the database's or the network's own error, which says it best.
    for _ in range(10):
        inner = getattr(err, "orig", None) or err.__cause__ or err.__context__
        if inner is None:
            break
        err = inner
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def check_reachable(uri: str) -> None:
    """A tracking server must answer within seconds, or the stage stops before any work."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=REACH_TIMEOUT_S) as response:
            response.read(64)
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            return  # a server that wants credentials (MLFLOW_TRACKING_USERNAME...) is there
        if err.code == 404:
            raise TrackingError(f"MLFLOW_TRACKING_URI={uri}: is not an MLflow server (no /health); "
                                "check the address and port") from None
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri}: answers with HTTP {err.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"MLFLOW_TRACKING_URI={uri}: no MLflow server answers ({reason}); start it "
                            "or unset the variable to use the workspace's own store") from None


def _process_start(pid: int) -> Optional[str]:
    """A process's start time (Linux), so a recycled pid is not taken for the owner."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start(os.getpid()) or ''}"


def _alive(process: str) -> bool:
    host, pid, start = (process.split(":") + ["", "", ""])[:3]
    if host != socket.gethostname():
        return True  # another machine's run: nothing here can tell
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return not start or _process_start(int(pid)) == start


def close_dead_runs(client: MlflowClient, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING runs whose process on this machine is gone."""
    closed = []
    runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=500)
    for run in runs:
        owner = run.data.tags.get(PROCESS_TAG)
        if owner and not _alive(owner):
            client.set_tag(run.info.run_id, "subjectlab.ended", "its process died; marked at a later start")
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


@contextmanager
def stage_run(stage: str, params: Params) -> Iterator[Optional[Run]]:
    """An MLflow run for one stage execution (None on non-zero ranks)."""
    from tasks.core.stage import is_rank_zero

    if not is_rank_zero():
        yield None
        return
    for name, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(name, value)
    # mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; undo that when the stage ends
    # so that a stage called in-process (a notebook, a test) leaves no global behind.
    previous_uri = os.environ.get("MLFLOW_TRACKING_URI")
    started = time.monotonic()
    try:
        with _stage_run(stage, params) as run:
            yield run
        # One line per stage: what finished, how long it took, where to look.
        print(f"{stage}: done in {time.monotonic() - started:.0f} s (MLflow run {run.info.run_id[:8]}, "
              f"experiment {params.mlflow.experiment})", flush=True)
    finally:
        mlflow.set_tracking_uri(previous_uri)


def _store_failure(uri: str, err: BaseException) -> TrackingError:
    return TrackingError(f"MLflow store {uri} failed ({describe_failure(err)})")


def _is_store_failure(err: BaseException) -> bool:
    """Errors of the tracking client itself (its HTTP, SQL or file layer), not of the stage."""
    module = type(err).__module__.split(".")[0]
    return module in ("mlflow", "sqlalchemy", "requests", "urllib3", "sqlite3")


@contextmanager
def _stage_run(stage: str, params: Params) -> Iterator[Run]:
    uri = tracking_uri(params)
    check_reachable(uri)
    try:
        experiment_id = use_experiment(params)
        closed = close_dead_runs(MlflowClient(uri), experiment_id)
        if closed:
            print(f"{stage}: marked {len(closed)} MLflow run(s) left RUNNING by a dead process as KILLED "
                  f"({', '.join(r[:8] for r in closed)})", file=sys.stderr, flush=True)
        parent = os.environ.get(PARENT_RUN_ENV) or None
        tags = {STAGE_TAG: stage, "subjectlab.profile": params.profile, PROCESS_TAG: process_id()}
        commit = git_commit()
        if commit:
            tags["mlflow.source.git.commit"] = commit
        if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:   # the device a queue worker pinned
            tags[DEVICES_TAG] = os.environ["CUDA_VISIBLE_DEVICES"]
        active = mlflow.start_run(experiment_id=experiment_id, run_name=stage, parent_run_id=parent,
                                  nested=parent is not None, tags=tags)
        effective = params.effective()
        shared = {key: effective[key] for key in ("profile", "seed", "trainer", "models")}
        section = {stage: effective[stage]} if stage in effective else {}
        mlflow.log_params(flatten({**shared, **section}))
    except Exception as err:
        if _is_store_failure(err):
            raise _store_failure(uri, err) from None
        raise
    try:
        yield active
    except (interrupt.StageInterrupted, KeyboardInterrupt):
        _end(active, "KILLED")
        raise
    except TrackingError:
        _end(active, "FAILED")
        raise
    except Exception as err:
        _end(active, "FAILED")
        if _is_store_failure(err):
            raise _store_failure(uri, err) from None
        raise
    except BaseException:
        _end(active, "FAILED")
        raise
    _end(active, "FINISHED", strict=True)


def _end(active: mlflow.ActiveRun, status: str, strict: bool = False) -> None:
    """End the stage's run; when the stage already failed, a store that cannot record it
    does not hide the original error."""
    try:
        mlflow.end_run(status)
    except Exception as err:
        # The run could not be closed in the store; forget it here all the same, or MLflow's
        # exit hook tries again and prints a traceback after the stage's own line.
        stack = mlflow.tracking.fluent._active_run_stack.get()
        if stack and stack[-1].info.run_id == active.info.run_id:
            stack.pop()
        if strict and _is_store_failure(err):
            raise _store_failure(mlflow.get_tracking_uri(), err) from None
        if strict:
            raise


def log_image(image: np.ndarray | Image.Image, artifact_file: str) -> None:
    """Log an image (HxWx3 uint8 or PIL) as a PNG artifact of the active run."""
    picture = image if isinstance(image, Image.Image) else Image.fromarray(image)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        picture.save(path)
        parent = str(Path(artifact_file).parent)
        mlflow.log_artifact(str(path), artifact_path=None if parent == "." else parent)


def log_metrics_tree(metrics: dict[str, Any], prefix: str = "") -> None:
    """Log a nested dict of numbers as flat MLflow metrics (`test.iou.sks_cartoon`)."""
    flat = {}
    for key, value in flatten(metrics, prefix).items():
        try:
            flat[key] = float(value)
        except ValueError:
            continue
    if flat:
        mlflow.log_metrics(flat)


@contextmanager
def system_metrics(run: Optional[Run], uri: str) -> Iterator[None]:
    """MLflow's system-metrics monitor (CPU, memory, disk, network; GPU utilisation and memory
    through NVML when a GPU is there) recording into `run` while the block runs.

    Lightning's MLFlowLogger never starts it, and MLflow starts it only for runs it opens
    with log_system_metrics=True; our runs are opened by the stage. The monitor samples every
    MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (10 by default) and publishes only after
    a full interval; a stage shorter than that still gets the samples taken so far.
    """
    if run is None:   # DDP ranks other than zero log nothing
        yield
        return
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run.info.run_id, tracking_uri=uri)
    monitor.start()
    try:
        yield
    finally:
        monitor.finish()
        try:
            if monitor._logging_step == 0:   # nothing published yet: what the samples hold
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
        except Exception as err:   # noqa: BLE001 - a lost sample must not fail the stage
            print(f"system metrics not recorded ({describe_failure(err)})", file=sys.stderr, flush=True)


SHARED_VIEW_PREFIX = "mlflow.sharedViewState."


def runs_url(server: str, experiment_id: str, search: str = "", view: str = "") -> str:
    """The experiment's runs table in MLflow's UI, optionally filtered (an MLflow search string)
    or as a shared view the pipeline saved (`share_table_view`).

    MLflow 3's UI opens every experiment on its GenAI views (traces, "No data available") in a
    browser that has not chosen otherwise: the link says workflowType=machine_learning, and
    the browser remembers it from then on."""
    fields = {"workflowType": "machine_learning"}
    fields.update({"viewStateShareKey": view} if view else {"searchFilter": search})
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?{urllib.parse.urlencode(fields)}"


def share_table_view(view: str, search: str, metrics: list[str]) -> None:
    """Save, on the active run's experiment, a view of MLflow's runs table: the rows of a table
    (`search`) with its metrics as columns, which the table's report opens through
    runs_url(..., view=view). The UI keeps such a view in an experiment tag (plain JSON of its
    filter and columns, as its "share" button writes); without one the table shows no metric
    until a reader picks each column by hand."""
    run = mlflow.active_run()
    if run is None:
        return
    state = {"searchFilter": search, "orderByKey": "attributes.start_time", "orderByAsc": False,
             "selectedColumns": [f"metrics.`{name}`" for name in metrics]}
    MlflowClient(mlflow.get_tracking_uri()).set_experiment_tag(run.info.experiment_id, SHARED_VIEW_PREFIX + view,
                                                               json.dumps(state))


def compare_url(server: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's compare view of these runs: their params and metrics side by side."""
    query = urllib.parse.urlencode({"runs": json.dumps(run_ids), "experiments": json.dumps([experiment_id])})
    return f"{server.rstrip('/')}/#/compare-runs?{query}"
