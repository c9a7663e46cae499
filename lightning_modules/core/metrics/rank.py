"""Re-identification rank metrics: CMC curve and mAP, chunked and vectorised.

Conventions (those of torchreid's ``evaluate_rank`` in its market1501 setting):

* each query ranks the whole gallery by increasing distance;
* gallery samples with the query's identity *and* the query's camera are removed from
  that ranking (they are the trivial same-view matches); every other sample keeps its
  place, so "kept rank" below means the 1-based position after that removal;
* a query with no true match left after the removal is skipped: it counts neither in the
  CMC nor in the mAP; if no query is left, a ``ValueError`` is raised (torchreid asserts);
* CMC at rank k is the fraction of valid queries whose first true match has kept rank
  <= k, for k = 1 .. max_rank; when the gallery has fewer than ``max_rank`` samples,
  ``max_rank`` is lowered to the gallery size with a warning; the curve is float32;
* AP of a query is the precision at each true match averaged over all its true matches
  (j / r_j for the j-th match at kept rank r_j), in float64; mAP is their mean.

Why the vectorised form gives the same numbers. The ranking of a query only matters at
its true matches (same identity), and those are few: a query of an identity with m
gallery samples needs m kept ranks, not a sorted gallery. The kept rank of a match at
distance x is

    (number of gallery samples ranked before it) - (removed samples ranked before it) + 1

and the first term, when no other sample has exactly distance x, is the number of
distances strictly below x: a ``searchsorted`` in the row's sorted *values*. Sorting
values is several times faster than ``argsort`` (it runs SIMD sorting kernels and moves
no indices), and no gathering of identities through a permutation is needed. The removed
samples are themselves matches, so the second term comes from the small per-query list
of matches ordered by distance. CMC needs only each query's first kept rank (a
histogram), AP needs the kept ranks of all matches; both are exact integer arithmetic
followed by the same float operations as the reference, so the results agree with
torchreid up to floating-point summation order in the AP (about 1e-16).

Ties. This function ranks with the order of ``np.argsort(row, kind="stable")``: equal
distances are ordered by gallery index, and NaN distances come last. A row in which a
true match shares its distance with another sample is re-ranked with that stable
argsort (rare for real-valued distances). torchreid uses the default, unstable
``np.argsort``, which orders equal distances arbitrarily, so on tied distances the two
may differ, by as much as the tie order can move a match; without ties they are equal.
Either way the result is the CMC/mAP of a valid ranking of the gallery.

Memory: queries are processed in chunks, each holding one sorted copy of its rows and
the list of its matches, kept under ``chunk_bytes`` (the result itself is tiny).

One difference from torchreid: when a query keeps fewer than ``max_rank`` gallery
samples after the removal (a gallery barely larger than ``max_rank``), torchreid's
curve for that query is shorter, which makes it return a shorter curve or fail on the
ragged stack. Here the curve always has ``min(max_rank, num_gallery)`` entries and a
valid query counts as matched at every rank beyond its kept list (it was matched within
it); the entries both compute are identical.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

_CHUNK_BYTES = 64 * 2**20
# Bytes per entry of the match list (indices, distances, flags, ranks while computing).
_MATCH_ENTRY_BYTES = 96


def _as_numpy(array: Any) -> np.ndarray:
    """A numpy view of a numpy array or a (possibly CUDA, possibly grad-tracking) tensor."""
    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def _query_chunks(costs: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Split queries into consecutive ranges whose summed cost stays within the budget."""
    bounds = [0]
    total = 0
    for index, cost in enumerate(costs.tolist()):
        if total and total + cost > budget:
            bounds.append(index)
            total = 0
        total += cost
    bounds.append(len(costs))
    return list(zip(bounds[:-1], bounds[1:]))


def _exclusive_cumsum_per_row(flags: np.ndarray, row_start: np.ndarray) -> np.ndarray:
    """For each entry, how many flagged entries precede it in its row.

    Entries are grouped by row; ``row_start`` gives, per entry, the index of its row's first entry.
    """
    before = np.cumsum(flags) - flags
    return before - before[row_start]


def evaluate_rank(
    distmat: Any,
    q_pids: Any,
    g_pids: Any,
    q_camids: Any,
    g_camids: Any,
    max_rank: int = 50,
    *,
    chunk_bytes: int = _CHUNK_BYTES,
) -> tuple[np.ndarray, float]:
    """CMC curve and mAP of a query x gallery distance matrix (see the module docstring).

    Args:
        distmat: (num_query, num_gallery) distances, numpy array or torch tensor.
        q_pids, g_pids: identities of the queries / gallery samples (any comparable dtype).
        q_camids, g_camids: camera ids of the queries / gallery samples.
        max_rank: length of the CMC curve (lowered to the gallery size if larger).
        chunk_bytes: approximate working-memory bound per chunk of queries.

    Returns:
        (cmc, mAP): float32 array of length ``min(max_rank, num_gallery)`` and a float.

    Raises:
        ValueError: on inconsistent shapes, ``max_rank < 1``, or when no query has a true
            match in the gallery after removing same-identity same-camera samples.
    """
    distmat = _as_numpy(distmat)
    q_pids, g_pids = _as_numpy(q_pids).reshape(-1), _as_numpy(g_pids).reshape(-1)
    q_camids, g_camids = _as_numpy(q_camids).reshape(-1), _as_numpy(g_camids).reshape(-1)
    if distmat.ndim != 2:
        raise ValueError(f"distmat must be 2-D (num_query, num_gallery), got shape {distmat.shape}")
    num_q, num_g = distmat.shape
    if len(q_pids) != num_q or len(q_camids) != num_q:
        raise ValueError(f"{num_q} query rows but {len(q_pids)} query pids and {len(q_camids)} query camids")
    if len(g_pids) != num_g or len(g_camids) != num_g:
        raise ValueError(f"{num_g} gallery columns but {len(g_pids)} gallery pids and {len(g_camids)} gallery camids")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    if num_g < max_rank:
        warnings.warn(f"gallery has only {num_g} samples: max_rank lowered from {max_rank} to {num_g}",
                      stacklevel=2)
        max_rank = num_g

    # Group the gallery by identity once: a query's matches are then one contiguous run
    # of `by_pid`, in increasing gallery index (stable sort).
    by_pid = np.argsort(g_pids, kind="stable")
    pid_values, pid_starts, pid_counts = np.unique(g_pids[by_pid], return_index=True, return_counts=True)
    slot = np.searchsorted(pid_values, q_pids)
    found = slot < len(pid_values)
    found[found] = pid_values[slot[found]] == q_pids[found]
    q_starts = np.zeros(num_q, dtype=np.int64)
    q_counts = np.zeros(num_q, dtype=np.int64)
    q_starts[found] = pid_starts[slot[found]]
    q_counts[found] = pid_counts[slot[found]]

    first_rank_counts = np.zeros(max_rank + 1, dtype=np.int64)  # last bin: first match beyond max_rank
    ap_chunks: list[np.ndarray] = []
    costs = num_g * distmat.itemsize + _MATCH_ENTRY_BYTES * q_counts
    for lo, hi in _query_chunks(costs, chunk_bytes):
        first_ranks, aps = _chunk_ranks(distmat, lo, hi, q_starts[lo:hi], q_counts[lo:hi], by_pid,
                                        q_camids[lo:hi], g_camids)
        first_rank_counts += np.bincount(np.minimum(first_ranks, max_rank + 1) - 1, minlength=max_rank + 1)
        ap_chunks.append(aps)

    num_valid = sum(len(a) for a in ap_chunks)
    if num_valid == 0:
        raise ValueError("no query has a true match in the gallery (after removing gallery samples with the "
                         "query's identity and camera): CMC and mAP are undefined")
    # Integer counts, then one float32 division: the same rounding as averaging 0/1 float32 curves.
    cmc = np.cumsum(first_rank_counts[:max_rank]).astype(np.float32) / np.float32(num_valid)
    return cmc, float(np.mean(np.concatenate(ap_chunks)))


def _chunk_ranks(
    distmat: np.ndarray,
    lo: int,
    hi: int,
    starts: np.ndarray,
    counts: np.ndarray,
    by_pid: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """First kept rank and AP of each valid query among rows lo:hi (valid ones only, in order)."""
    num_rows = hi - lo
    # The match list: one entry (row, gallery index) per gallery sample sharing the row's identity.
    offsets = np.concatenate(([0], np.cumsum(counts)))
    rows = np.repeat(np.arange(num_rows), counts)
    gallery = by_pid[starts[rows] + np.arange(offsets[-1]) - offsets[rows]]
    if len(gallery) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    dist = distmat[lo + rows, gallery]
    # Within each row, matches in ranking order: by distance, then gallery index (NaN last).
    order = np.lexsort((gallery, dist, rows))
    rows, gallery, dist = rows[order], gallery[order], dist[order]
    removed = g_camids[gallery] == q_camids[rows]

    # How many gallery samples precede each match in its row's ranking.
    block = np.array(distmat[lo:hi], order="C")
    block.sort(axis=1)
    before = np.empty(len(gallery), dtype=np.int64)
    for row in np.flatnonzero(counts):
        a, b = offsets[row], offsets[row + 1]
        values = dist[a:b]
        below = block[row].searchsorted(values, side="left")
        ties = block[row].searchsorted(values, side="right") - below > 1
        if ties.any():
            # Another sample has exactly this distance: place it by the stable order.
            position = np.empty(block.shape[1], dtype=np.int64)
            position[np.argsort(distmat[lo + row], kind="stable")] = np.arange(block.shape[1])
            below = position[gallery[a:b]]
        before[a:b] = below

    row_start = offsets[rows]
    kept = ~removed
    kept_rank = before - _exclusive_cumsum_per_row(removed, row_start) + 1
    hit_number = _exclusive_cumsum_per_row(kept, row_start) + 1
    rows, kept_rank, hit_number = rows[kept], kept_rank[kept], hit_number[kept]
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)

    # Kept entries are still grouped by row in ranking order: the first of a row is its first hit.
    firsts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
    num_hits = np.bincount(rows, minlength=num_rows)
    precision_sums = np.bincount(rows, weights=hit_number / kept_rank, minlength=num_rows)
    valid = num_hits > 0
    return kept_rank[firsts], precision_sums[valid] / num_hits[valid]


def cmc_map_report(cmc: np.ndarray, mAP: float, ranks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """{"rank1": .., "rank5": .., "rank10": .., "mAP": ..} as plain floats (fractions, not percent)."""
    cmc = _as_numpy(cmc).reshape(-1)
    report = {}
    for rank in ranks:
        if not 1 <= rank <= len(cmc):
            raise ValueError(f"rank {rank} is outside the CMC curve (ranks 1..{len(cmc)})")
        report[f"rank{rank}"] = float(cmc[rank - 1])
    report["mAP"] = float(mAP)
    return report
