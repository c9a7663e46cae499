"""Wall time and peak memory of `dvc repro` for a profile, and the cost of a no-op repro.

Copies the project into a fresh git + DVC workspace, runs the pipeline on the chosen profile,
then times a second `dvc repro` (nothing to do) next to `dvc status` (the least DVC can do).
Run: python benchmarks/pipeline_cost.py --profile smoke|default [--keep DIR]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.conftest import dvc, make_workspace  # noqa: E402  (the same workspace the tests use)


def timed(label: str, fn) -> float:
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    print(f"{label:28s} {elapsed:8.1f} s")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--keep", type=Path, help="workspace directory to use and keep")
    parser.add_argument("--noop-repeats", type=int, default=3)
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="subjectlab-bench-"))
    # All of params.yaml's Table 3 rows: the pipeline a user runs (the tests keep fewer).
    workspace = make_workspace(root / "ws", profile=args.profile, ablation_rows=None)
    timed(f"dvc repro ({args.profile})", lambda: dvc(workspace, "repro"))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"{'peak RSS of one stage':28s} {peak:8.0f} MiB")
    noop = min(timed("dvc repro (no-op)", lambda: dvc(workspace, "repro")) for _ in range(args.noop_repeats))
    status = min(timed("dvc status", lambda: dvc(workspace, "status")) for _ in range(args.noop_repeats))
    print(f"no-op repro / dvc status: {noop / status:.2f}")
    print(f"workspace: {workspace}")


if __name__ == "__main__":
    main()
