"""Re-ID rank evaluation: subjectlab's evaluate_rank against torchreid's reference.

Builds a realistic query x gallery distance matrix (embeddings with identity structure:
each identity has a centre, each camera a shared offset, each sample its own noise;
squared euclidean distances in float32), then times on the same matrix (1) ours, (2)
torchreid's evaluate_rank(use_cython=False), the evaluation its pip wheel actually runs,
and (3) one np.argsort of the matrix, a floor for any argsort-based evaluation. Checks that
ours gives torchreid's CMC and mAP and reports our peak extra memory (tracemalloc).
Run: python benchmarks/rank_eval.py [--queries 5000 --gallery 20000 --ids 1500 --cameras 6]
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
import warnings

import numpy as np

from lightning_modules.core.metrics import cmc_map_report, evaluate_rank


def make_case(args: argparse.Namespace) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.ids, args.dim)).astype(np.float32)
    camera_shift = 0.6 * rng.standard_normal((args.cameras, args.dim)).astype(np.float32)

    def samples(count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pids = rng.integers(0, args.ids, count)
        camids = rng.integers(0, args.cameras, count)
        noise = args.noise * rng.standard_normal((count, args.dim)).astype(np.float32)
        return centres[pids] + camera_shift[camids] + noise, pids, camids

    q_feat, q_pids, q_camids = samples(args.queries)
    g_feat, g_pids, g_camids = samples(args.gallery)
    distmat = (q_feat**2).sum(1, keepdims=True) + (g_feat**2).sum(1) - 2 * q_feat @ g_feat.T
    return distmat.astype(np.float32, copy=False), q_pids, g_pids, q_camids, g_camids


def tied_match_rows(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray) -> int:
    """Queries where a same-identity sample shares its distance with another sample.

    Only there may a different (equally valid) order of equal distances change the result.
    """
    count = 0
    for row, pid in zip(distmat, q_pids):
        values = row[g_pids == pid]
        ordered = np.sort(row)
        count += bool(np.any(ordered.searchsorted(values, "right") - ordered.searchsorted(values, "left") > 1))
    return count


def best_time(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=5000)
    parser.add_argument("--gallery", type=int, default=20000)
    parser.add_argument("--ids", type=int, default=1500)
    parser.add_argument("--cameras", type=int, default=6)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--noise", type=float, default=0.7, help="per-sample noise (larger: harder retrieval)")
    parser.add_argument("--max-rank", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="best of N for ours and argsort (torchreid runs once)")
    parser.add_argument("--skip-torchreid", action="store_true", help="skip the slow reference run")
    args = parser.parse_args()

    case = make_case(args)
    distmat = case[0]
    print(f"distmat {distmat.shape[0]} x {distmat.shape[1]} {distmat.dtype} ({distmat.nbytes / 2**20:.0f} MiB), "
          f"{args.ids} ids, {args.cameras} cameras, max_rank {args.max_rank}")

    evaluate_rank(*case, max_rank=args.max_rank)  # warm-up
    t_ours, (cmc, mAP) = best_time(lambda: evaluate_rank(*case, max_rank=args.max_rank), args.repeats)
    tracemalloc.start()
    evaluate_rank(*case, max_rank=args.max_rank)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    t_argsort, _ = best_time(lambda: np.argsort(distmat, axis=1), args.repeats)

    rows = [("subjectlab evaluate_rank", t_ours), ("np.argsort(distmat) floor", t_argsort)]
    theirs = None
    if not args.skip_torchreid:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the missing compiled evaluator
            from torchreid import metrics as torchreid_metrics
        start = time.perf_counter()
        theirs = torchreid_metrics.evaluate_rank(*case, max_rank=args.max_rank, use_cython=False)
        rows.insert(1, ("torchreid evaluate_rank (py)", time.perf_counter() - start))

    print(f"{'method':30s} {'seconds':>9s}")
    for name, seconds in rows:
        print(f"{name:30s} {seconds:9.2f}")
    print(f"ours / argsort: {t_ours / t_argsort:.2f}")
    print(f"peak extra memory of ours (tracemalloc): {peak / 2**20:.0f} MiB")
    print("ours:", {k: round(v, 4) for k, v in cmc_map_report(cmc, mAP).items()})
    if theirs is not None:
        print(f"torchreid / ours: {rows[1][1] / t_ours:.1f}x")
        print("torchreid:", {k: round(v, 4) for k, v in cmc_map_report(*theirs).items()})
        print(f"max |cmc diff| {np.abs(cmc - theirs[0]).max():.3g}, |mAP diff| {abs(mAP - theirs[1]):.3g} "
              f"({tied_match_rows(*case[:3])} queries have a true match at a tied distance)")


if __name__ == "__main__":
    main()
