"""Re-ID rank metrics: identical to torchreid's reference evaluation, on random and hand-made cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from lightning_modules.core.metrics import cmc_map_report, evaluate_rank

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torchreid warns that its compiled evaluator is missing
    from torchreid import metrics as torchreid_metrics


def reference(*args, max_rank=50):
    """torchreid's Python evaluation (its 'Note: ...' print for small galleries goes to stdout)."""
    return torchreid_metrics.evaluate_rank(*args, max_rank=max_rank, use_cython=False)


def stable_reference(monkeypatch, *args, max_rank=50):
    """torchreid's evaluation with ties ordered by gallery index (a stable argsort)."""
    unstable = np.argsort
    with monkeypatch.context() as patch:
        patch.setattr(np, "argsort", lambda a, axis=-1, **_: unstable(a, axis=axis, kind="stable"))
        return reference(*args, max_rank=max_rank)


def random_case(seed, num_q, num_g, num_ids, num_cams, absent_ids=0):
    """Tie-free float64 distances; `absent_ids` query identities never appear in the gallery."""
    rng = np.random.default_rng(seed)
    distmat = rng.random((num_q, num_g))
    assert all(len(np.unique(row)) == num_g for row in distmat)  # exact equality needs no ties
    q_pids = rng.integers(0, num_ids + absent_ids, num_q)
    g_pids = rng.integers(0, num_ids, num_g)
    return distmat, q_pids, g_pids, rng.integers(0, num_cams, num_q), rng.integers(0, num_cams, num_g)


def assert_same(ours, theirs):
    assert ours[0].dtype == np.float32 and ours[0].shape == theirs[0].shape
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)
    assert isinstance(ours[1], float)


@pytest.mark.parametrize(
    ("seed", "num_q", "num_g", "num_ids", "num_cams", "absent_ids", "max_rank"),
    [
        (0, 40, 300, 15, 2, 0, 50),      # many matches per query, two cameras: removal matters
        (1, 200, 800, 150, 6, 0, 50),    # few matches per query: some queries have none left
        (2, 100, 1500, 4, 3, 0, 20),     # very few identities: hundreds of matches per query
        (3, 120, 400, 60, 2, 0, 10),     # short curve, two cameras: about half the matches are removed
        (4, 150, 600, 50, 4, 30, 100),   # query identities absent from the gallery are skipped
    ],
)
def test_matches_torchreid(seed, num_q, num_g, num_ids, num_cams, absent_ids, max_rank):
    case = random_case(seed, num_q, num_g, num_ids, num_cams, absent_ids)
    # A small chunk budget makes several chunks, so chunk boundaries are exercised too.
    assert_same(evaluate_rank(*case, max_rank=max_rank, chunk_bytes=20_000), reference(*case, max_rank=max_rank))


def test_skips_queries_without_a_kept_match():
    distmat, q_pids, g_pids, q_camids, g_camids = random_case(5, 60, 200, 30, 3)
    # Query 0's identity only appears in the gallery under query 0's camera: it must be skipped.
    g_pids[g_pids == q_pids[0]] = -1
    g_pids[:3], g_camids[:3] = q_pids[0], q_camids[0]
    args = (distmat, q_pids, g_pids, q_camids, g_camids)
    ours = evaluate_rank(*args)
    assert_same(ours, reference(*args))
    without_first = evaluate_rank(distmat[1:], q_pids[1:], g_pids, q_camids[1:], g_camids)
    np.testing.assert_array_equal(ours[0], without_first[0])
    assert ours[1] == without_first[1]


def test_torch_tensor_inputs():
    case = random_case(6, 80, 500, 40, 4)
    tensors = [torch.from_numpy(case[0]).requires_grad_()] + [torch.from_numpy(a) for a in case[1:]]
    assert_same(evaluate_rank(*tensors), reference(*case))


def test_max_rank_larger_than_gallery(capsys):
    distmat, q_pids, g_pids, q_camids, g_camids = random_case(7, 30, 25, 5, 2)
    g_camids = g_camids + 10  # no gallery sample shares a query's camera: every query keeps all 25
    args = (distmat, q_pids, g_pids, q_camids, g_camids)
    with pytest.warns(UserWarning, match="max_rank lowered from 50 to 25"):
        ours = evaluate_rank(*args)
    assert ours[0].shape == (25,) and ours[0][-1] == 1.0
    assert_same(ours, reference(*args))
    assert "quite small" in capsys.readouterr().out  # torchreid's own notice


def test_short_kept_lists_extend_the_curve():
    # Each query loses exactly one of 6 gallery samples: torchreid's curve has 5 entries, ours 6.
    distmat = np.random.default_rng(8).random((2, 6))
    args = (distmat, np.array([0, 1]), np.array([0, 0, 1, 1, 2, 2]), np.array([0, 1]), np.array([0, 1, 1, 0, 1, 1]))
    with pytest.warns(UserWarning):
        cmc, mAP = evaluate_rank(*args)
    theirs_cmc, theirs_map = reference(*args)
    assert cmc.shape == (6,) and theirs_cmc.shape == (5,)
    np.testing.assert_allclose(cmc[:5], theirs_cmc, rtol=1e-6)
    assert cmc[5] == 1.0 and mAP == pytest.approx(theirs_map, rel=1e-12)


def test_hand_computed_example():
    # Gallery: pids 1 2 1 3 1, cameras 0 1 1 1 2.
    g_pids, g_camids = np.array([1, 2, 1, 3, 1]), np.array([0, 1, 1, 1, 2])
    q_pids, q_camids = np.array([1, 2, 3]), np.array([0, 0, 1])
    distmat = np.array([
        [0.1, 0.2, 0.3, 0.4, 0.5],  # g0 removed (pid 1, cam 0); kept g1 g2 g3 g4: hits at ranks 2 and 4
        [0.5, 0.1, 0.4, 0.3, 0.2],  # g1 is pid 2 on another camera and ranks first: AP 1
        [0.3, 0.2, 0.1, 0.4, 0.5],  # the only pid-3 sample (g3) is on camera 1 too: skipped
    ])
    cmc, mAP = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=4)
    np.testing.assert_array_equal(cmc, np.array([0.5, 1.0, 1.0, 1.0], dtype=np.float32))
    assert mAP == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1.0) / 2)  # 0.75
    assert_same((cmc, mAP), reference(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=4))


def test_no_valid_query_raises():
    distmat = np.random.default_rng(9).random((3, 4))
    args = (distmat, np.array([7, 8, 9]), np.array([1, 2, 7, 8]), np.array([0, 0, 1]), np.array([0, 1, 0, 0]))
    # 7 and 8 only appear under the query's own camera, 9 never appears.
    with pytest.raises(AssertionError, match="do not appear in gallery"):
        reference(*args, max_rank=4)
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_rank(*args, max_rank=4)


def test_ties_follow_a_stable_order(monkeypatch):
    rng = np.random.default_rng(10)
    distmat = rng.integers(0, 6, (50, 300)).astype(np.float32)  # heavy ties
    distmat[rng.random(distmat.shape) < 0.05] = np.nan
    distmat[:, 0] = np.nan  # one gallery sample at NaN distance from every query
    case = (distmat, rng.integers(0, 20, 50), rng.integers(0, 20, 300), rng.integers(0, 3, 50), rng.integers(0, 3, 300))
    cmc, mAP = evaluate_rank(*case, chunk_bytes=10_000)
    assert np.all(np.diff(cmc) >= 0) and 0 <= cmc[0] and cmc[-1] <= 1 and 0 < mAP <= 1
    assert_same((cmc, mAP), stable_reference(monkeypatch, *case))


def test_rejects_inconsistent_inputs():
    distmat = np.zeros((2, 3))
    with pytest.raises(ValueError, match="query pids"):
        evaluate_rank(distmat, np.arange(3), np.arange(3), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="gallery"):
        evaluate_rank(distmat, np.arange(2), np.arange(3), np.zeros(2), np.zeros(4))
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_rank(distmat, np.arange(2), np.arange(3), np.zeros(2), np.zeros(3), max_rank=0)


def test_cmc_map_report():
    cmc = np.linspace(0.5, 1.0, 20, dtype=np.float32)
    report = cmc_map_report(cmc, np.float64(0.625))
    assert report == {"rank1": float(cmc[0]), "rank5": float(cmc[4]), "rank10": float(cmc[9]), "mAP": 0.625}
    assert all(type(value) is float for value in report.values())
    assert set(cmc_map_report(cmc, 0.5, ranks=(1, 20))) == {"rank1", "rank20", "mAP"}
    with pytest.raises(ValueError, match="outside the CMC curve"):
        cmc_map_report(cmc[:5], 0.5)
