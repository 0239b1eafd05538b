"""The hybrid's low-rank collaborative solve (recsys_core/model/hybrid.py ``_lowrank``) against the dense EASE solve.

At rank n - 1 the low-rank solve drops only the smallest eigen-direction of ``G`` (replacing 1/(s_min + lambda)
by 1/lambda), so on items outside a profile it must rank like the dense solve. Items inside a profile are
left out of the comparison on purpose: the low-rank factors do not zero B's diagonal (see ``_lowrank``), and
serving and evaluation never rank a profile's own items.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from recsys_core.model.hybrid import HybridConfig, fit_collaborative

N_ITEMS, N_USERS, DIM, N_GENRES, K = 40, 120, 384, 19, 5


def _data(seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """A power-law-ish binary matrix (every item seen at least once), unit content rows and one-hot genres."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, N_ITEMS + 1) ** 0.7
    p = np.clip(0.6 * popularity / popularity.mean() * 0.25, 0.02, 0.9)
    x = (rng.random((N_USERS, N_ITEMS)) < p[None, :]).astype(np.float64)
    x[rng.integers(0, N_USERS, N_ITEMS), np.arange(N_ITEMS)] = 1.0
    content = rng.standard_normal((N_ITEMS, DIM))
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    genres = np.eye(N_GENRES)[rng.integers(0, N_GENRES, N_ITEMS)]
    return sp.csr_matrix(x), content.astype(np.float32), genres.astype(np.float32)


@pytest.mark.parametrize("side", [(10.0, 5.0), (0.0, 0.0)], ids=["side-info", "plain-ease"])
def test_full_rank_lowrank_ranks_like_dense(side: tuple[float, float]) -> None:
    x, content, genres = _data()
    base = HybridConfig(side_content=side[0], side_genre=side[1])
    dense = fit_collaborative(x, content, genres, base, seed=0)
    low = fit_collaborative(x, content, genres,
                            HybridConfig(side_content=side[0], side_genre=side[1], max_dense_items=N_ITEMS - 1,
                                         rank=N_ITEMS - 1), seed=0)
    assert dense.dense and not low.dense
    assert low.left is not None and low.left.shape == low.right.shape == (N_ITEMS, N_ITEMS - 1)

    seen = x.toarray() > 0
    sd = np.where(seen, -np.inf, dense.scores(x))
    sl = np.where(seen, -np.inf, low.scores(x))
    top_d = np.argsort(-sd, axis=1, kind="stable")[:, :K]
    top_l = np.argsort(-sl, axis=1, kind="stable")[:, :K]
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(top_d, top_l)])
    corr = np.corrcoef(sd[~seen], sl[~seen])[0, 1]
    assert overlap >= 0.8, f"mean top-{K} overlap {overlap:.3f}; expected >= 0.8"
    assert corr > 0.95, f"score correlation {corr:.4f} on unseen items; expected > 0.95"


def test_off_diagonal_weights_match_dense_at_full_rank() -> None:
    """The pairwise weights themselves (what explanations show) agree off the diagonal."""
    x, content, genres = _data(seed=1)
    dense = fit_collaborative(x, content, genres, HybridConfig(), seed=0)
    low = fit_collaborative(x, content, genres, HybridConfig(max_dense_items=1, rank=N_ITEMS - 1), seed=0)
    b_dense = dense.right.T  # right row j = B[:, j]
    b_low = low.left @ low.right.T
    off = ~np.eye(N_ITEMS, dtype=bool)
    corr = np.corrcoef(b_dense[off], b_low[off])[0, 1]
    assert corr > 0.95, f"off-diagonal B correlation {corr:.4f}; expected > 0.95"
    assert np.abs(b_dense[off] - b_low[off]).max() < 0.5 * np.abs(b_dense[off]).max()


@pytest.mark.parametrize("max_dense", [N_ITEMS - 1, N_ITEMS, N_ITEMS + 1])
def test_lowrank_path_exactly_above_max_dense_items(max_dense: int) -> None:
    x, content, genres = _data()
    part = fit_collaborative(x, content, genres, HybridConfig(max_dense_items=max_dense, rank=8), seed=0)
    assert part.dense == (N_ITEMS <= max_dense)
    if part.dense:
        assert part.left is None and part.right.shape == (N_ITEMS, N_ITEMS)
    else:
        assert part.left is not None and part.left.shape == part.right.shape == (N_ITEMS, 8)
    assert part.scores(x).shape == (N_USERS, N_ITEMS)
