"""Run DVC's experiment queue with one worker per device, each pinned to its own.

    dvc exp run --queue -S 'reid_ablation.table=[csa]' ...     # queue the grid, one -S set each
    python -m flows.queue_workers --devices 0,1,2,3            # four workers, GPU 0..3 (make queue)
    dvc queue status; dvc exp show                              # progress, then the results side by side

`dvc queue start -j N` starts N workers with one environment, so they would all see every GPU.
A worker's experiments inherit the environment it was started with; this spawns worker k with
CUDA_VISIBLE_DEVICES set to the k-th device, through DVC's own spawn of one worker (the one
`dvc queue start` loops over). Calling `dvc queue start -j k` once per device does not work:
DVC counts the workers that answer a ping, a worker busy with an experiment does not answer,
and DVC spawns that worker again under the same name.

Queued experiments run in temporary copies of the repository, so their MLflow runs must go to
a store outside it: set MLFLOW_TRACKING_URI (the shared server, or an absolute sqlite:///
path) before starting the workers. Experiments that DVC's queue lost to a race of its workers
show as Failed with no log in `dvc queue status`: requeue them (`dvc exp run --queue ...`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flows.entry import run_flow_main
from tasks.core.cli import OneLineParser
from tasks.core.errors import UserError



def dvc(*args: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise UserError(f"dvc {' '.join(args)} failed in {cwd}: {detail[-1] if detail else result.returncode}")
    return result.stdout


def start_pinned_workers(devices: list[str], cwd: Path) -> None:
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    if "MLFLOW_TRACKING_URI" not in os.environ:
        print("note: MLFLOW_TRACKING_URI is not set; the experiments' MLflow runs stay in their temporary "
              "copies and are lost", file=sys.stderr, flush=True)
    if "Worker status: 0 active, 0 idle" not in dvc("queue", "status", cwd=cwd):
        raise UserError(f"queue workers already run in {cwd}: stop them first (dvc queue stop)")
    try:
        repo = Repo(str(cwd))
    except NotDvcRepoError:
        raise UserError(f"{cwd}: not a DVC repository") from None
    queue = repo.experiments.celery_queue
    saved = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        for number, device in enumerate(devices, start=1):
            os.environ["CUDA_VISIBLE_DEVICES"] = device
            # DVC's spawn of worker `number` (node dvc-exp-<repo>-<number>; number 1 cleans up the
            # queue when it stops), a private method of the pinned DVC 3: what `queue start` calls
            queue._spawn_worker(number)
            print(f"queue worker {number}: CUDA_VISIBLE_DEVICES={device}", flush=True)
    finally:
        if saved is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved
        repo.close()


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(prog="python -m flows.queue_workers",
                           description="Start DVC experiment queue workers, one pinned to each device.")
    parser.add_argument("--devices", required=True, help="comma-separated device ids, one worker each (e.g. 0,1)")
    parser.add_argument("--workspace", default=".")
    args = parser.parse_args(argv)
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if not devices or len(set(devices)) != len(devices):
        raise UserError(f"--devices {args.devices!r}: give distinct device ids, e.g. 0,1")
    start_pinned_workers(devices, Path(args.workspace).resolve())


if __name__ == "__main__":
    run_flow_main(main)
