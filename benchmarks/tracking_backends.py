"""The same smoke slice of the pipeline logged to the embedded SQLite store and to the shared
tracking server (MLflow on PostgreSQL, proxied artifacts), side by side, and the ratio.

Each run is `dvc repro` of the slice in a fresh git + DVC workspace (the workspace the tests
use); the server runs on this machine, so the difference is MLflow's HTTP + PostgreSQL path
against SQLite, not a network. The order alternates over the repeats.
Run: python benchmarks/tracking_backends.py [--repeats 1] [--stages synthesize_persons,...]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from flows.tracking_server import TrackingServer  # noqa: E402
from tests.conftest import dvc, make_workspace  # noqa: E402  (the same workspace the tests use)

SLICE = "synthesize_persons,train_reid_teacher,train_reid,evaluate_reid"


def repro(root: Path, name: str, stages: list[str], uri: str | None) -> float:
    workspace = make_workspace(root / name)
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    else:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    start = time.perf_counter()
    dvc(workspace, "repro", *stages)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--stages", default=SLICE, help="comma-separated stages to reproduce (with their inputs)")
    args = parser.parse_args()
    stages = args.stages.split(",")
    root = Path(tempfile.mkdtemp(prefix="subjectlab-bench-"))
    times: dict[str, list[float]] = {"sqlite": [], "postgresql": []}
    started = time.perf_counter()
    with TrackingServer(root / "server") as server:
        print(f"tracking server up in {time.perf_counter() - started:.1f} s (initdb, migrations)")
        for repeat in range(args.repeats):
            order = ["sqlite", "postgresql"] if repeat % 2 == 0 else ["postgresql", "sqlite"]
            for backend in order:
                uri = server.uri if backend == "postgresql" else None
                seconds = repro(root, f"{backend}-{repeat}", stages, uri)
                times[backend].append(seconds)
                print(f"{backend:11s} repeat {repeat}: {seconds:7.1f} s")
    sqlite, postgres = (min(times[k]) for k in ("sqlite", "postgresql"))
    print(f"\nslice: {', '.join(stages)}")
    print(f"{'embedded SQLite':28s} {sqlite:8.1f} s")
    print(f"{'server on PostgreSQL':28s} {postgres:8.1f} s")
    print(f"{'ratio server / SQLite':28s} {postgres / sqlite:8.2f}x")


if __name__ == "__main__":
    main()
