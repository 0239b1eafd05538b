"""The hybrid's low-pass filter part (GF-CF's ideal low-pass filter, ``HybridConfig.lowpass_weight``)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core.model.hybrid import HybridConfig, ease_weights, fit_collaborative, lowpass_factors, lowpass_scale
from recsys_core.training.hybrid import select_config

N_ITEMS, N_USERS = 30, 80


def _data(seed: int = 0, cold: tuple[int, ...] = ()) -> sp.csr_matrix:
    """Two taste groups over two halves of the catalog, plus noise, so the top directions carry the signal."""
    rng = np.random.default_rng(seed)
    group = np.arange(N_USERS) % 2
    half = (np.arange(N_ITEMS) >= N_ITEMS // 2).astype(int)
    p = np.where(group[:, None] == half[None, :], 0.45, 0.08)
    x = (rng.random((N_USERS, N_ITEMS)) < p).astype(np.float64)
    x[:, list(cold)] = 0.0
    return sp.csr_matrix(x)


def _by_hand(x: np.ndarray, rank: int) -> np.ndarray:
    """D_i^-1/2 V V^T D_i^1/2 with V from numpy's exact SVD of D_u^-1/2 X D_i^-1/2 (zero-degree rows left at 0)."""
    du, di = x.sum(1), x.sum(0)
    inv = lambda d: np.where(d > 0, 1.0 / np.sqrt(np.where(d > 0, d, 1.0)), 0.0)  # noqa: E731
    _, _, vt = np.linalg.svd(inv(du)[:, None] * x * inv(di)[None, :], full_matrices=False)
    v = vt[:rank].T
    return (inv(di)[:, None] * v) @ (v.T * np.sqrt(di)[None, :])


def test_lowpass_factors_match_the_filter_computed_by_hand() -> None:
    x = _data()
    left, right = lowpass_factors(x, 4, seed=0)
    assert left.shape == right.shape == (N_ITEMS, 4)
    np.testing.assert_allclose(left @ right.T, _by_hand(x.toarray(), 4), atol=1e-4)


def test_the_dense_part_is_ease_plus_the_scaled_filter_off_the_diagonal() -> None:
    x = _data()
    content, genres = np.zeros((N_ITEMS, 0), np.float32), np.zeros((N_ITEMS, 0), np.float32)
    config = HybridConfig(lambda_=10.0, side_content=0.0, side_genre=0.0, lowpass_weight=0.3, lowpass_rank=4)
    part = fit_collaborative(x, content, genres, config, seed=0)
    b_ease = ease_weights((x.T @ x).toarray(), 10.0)
    b_lp = _by_hand(x.toarray(), 4)
    ease_scores, lp_scores = x @ b_ease, x @ b_lp
    beta = lowpass_scale(0.3, ease_scores, lp_scores)
    # The filter's scores are 0.3 times EASE's on average, as HybridConfig.lowpass_weight says.
    assert np.abs(beta * lp_scores).mean() == pytest.approx(0.3 * np.abs(ease_scores).mean(), rel=1e-9)
    expected = b_ease + beta * b_lp
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(part.right.T, expected, atol=1e-4)


def test_a_zero_weight_leaves_ease_exactly_as_it_was() -> None:
    x = _data()
    content, genres = np.zeros((N_ITEMS, 0), np.float32), np.zeros((N_ITEMS, 0), np.float32)
    plain = fit_collaborative(x, content, genres, HybridConfig(side_content=0.0, side_genre=0.0), seed=0)
    zero = fit_collaborative(x, content, genres, HybridConfig(side_content=0.0, side_genre=0.0, lowpass_weight=0.0),
                             seed=0)
    assert np.array_equal(plain.right, zero.right)


def test_an_item_without_interactions_gets_nothing_from_the_filter() -> None:
    x = _data(cold=(3, 20))
    rng = np.random.default_rng(1)
    content = rng.standard_normal((N_ITEMS, 8)).astype(np.float32)
    genres = np.zeros((N_ITEMS, 0), np.float32)
    base = HybridConfig(lambda_=10.0, side_content=1.0, side_genre=0.0)
    without = fit_collaborative(x, content, genres, base, seed=0)
    with_lp = fit_collaborative(x, content, genres, HybridConfig(**{**base.to_dict(), "lowpass_weight": 0.5, "lowpass_rank": 4}), seed=0)
    for cold in (3, 20):
        # Its content-driven weights (side information) stay finite and are untouched by the filter.
        assert np.isfinite(with_lp.right[cold]).all()
        np.testing.assert_allclose(with_lp.right[cold], without.right[cold], atol=1e-6)
    assert not np.allclose(with_lp.right, without.right)


def test_the_low_rank_solve_carries_the_filter_as_extra_factors() -> None:
    x = _data()
    content, genres = np.zeros((N_ITEMS, 0), np.float32), np.zeros((N_ITEMS, 0), np.float32)
    common = dict(lambda_=10.0, side_content=0.0, side_genre=0.0, lowpass_weight=0.3, lowpass_rank=4)
    dense = fit_collaborative(x, content, genres, HybridConfig(**common), seed=0)
    low = fit_collaborative(x, content, genres, HybridConfig(**common, max_dense_items=1, rank=N_ITEMS - 1), seed=0)
    assert low.left is not None and low.left.shape == (N_ITEMS, N_ITEMS - 1 + 4)
    off = ~np.eye(N_ITEMS, dtype=bool)
    corr = np.corrcoef((low.left @ low.right.T)[off], dense.right.T[off])[0, 1]
    assert corr > 0.95, f"off-diagonal weights correlate {corr:.4f} with the dense solve; expected > 0.95"


def test_selection_scores_the_filter_as_the_fitted_model_does() -> None:
    """The NDCG the selection reports for its choice is what the part fitted at that choice gives."""
    from recsys_core.evaluation.metrics import evaluate_scores
    from recsys_core.model.hybrid import mixed_scores

    class _Content:  # a content part that knows nothing: every profile scores every item 0
        item_vectors = __import__("torch").zeros((N_ITEMS, 4))

        def profiles(self, matrix):
            return __import__("torch").zeros((matrix.shape[0], 4))

    full = _data(seed=2).toarray()
    rng = np.random.default_rng(3)
    targets = []
    for row in full:
        items = np.flatnonzero(row)
        pick = rng.choice(items, size=max(1, len(items) // 5), replace=False)
        row[pick] = 0.0
        targets.append(list(pick))
    x = sp.csr_matrix(full)
    selection = select_config(x, targets, _Content(), np.zeros((N_ITEMS, 0), np.float32), fixed={"content_share": 0.0})
    chosen = selection.config
    assert any(r["lowpass_weight"] > 0 for r in selection.table)
    part = fit_collaborative(x, np.zeros((N_ITEMS, 4), np.float32), np.zeros((N_ITEMS, 0), np.float32), chosen, seed=0)
    scores = mixed_scores(chosen, np.zeros(x.shape), part.scores(x), part.prior)
    value = float(evaluate_scores(scores, x, [np.asarray(t) for t in targets], [20], None, tie_seed=0)["ndcg@20"])
    assert value == pytest.approx(selection.ndcg, abs=1e-4)
