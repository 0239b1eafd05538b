"""Full-ranking top-k metrics from a score matrix (ranked and MMR re-ranked with :mod:`recsys_core.serving.rerank`).

Why full ranking: sampled-negative metrics (rank the positive among 100 random items) inflate
numbers about 3x and reorder models (Krichene & Rendle 2020), so every user is ranked against the
whole candidate set: all items not in their training set (warm) or all cold items (cold-item).

Definitions (binary relevance, per user, then averaged over users with >= 1 test item):

* ``precision@k`` = hits / k
* ``recall@k``    = hits / |test items|. The denominator is |test|, not min(|test|, k): this is
  the convention of the DATA.md reference figures (Cornac/RecBole), so our numbers compare.
* ``ndcg@k``      = DCG / IDCG, DCG = sum over hits of 1/log2(rank+1) (rank 1-based), IDCG = the
  DCG of min(|test|, k) hits at the top.
* ``hitrate@k``   = 1 if any hit in the top k.
* ``coverage@k``  = share of the candidate items recommended to at least one evaluated user.
* ``ild@k``       = intra-list diversity: mean pairwise cosine distance (1 - cos) of the item
  feature vectors in each list, averaged over users (only when features are given). A zero vector
  (an item without features) has cosine 0 with everything, i.e. distance 1.

Ties are broken at random (seeded, independently per user), not by item index: MovieLens ids are
roughly ordered by release and popularity, so index order would hand a constant-score model (an ID
model facing cold items scores them all 0) a popularity ranking for free (recall@20 0.157 instead
of random's 0.06 on the cold split).

Test items that cannot be ranked (in the user's training set, or outside the candidate set) are
dropped from that user's test set first; with the shipped leak-free splits this removes nothing.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from recsys_core.serving.rerank import mmr_rerank, top_k, unit_rows

log = logging.getLogger(__name__)

METRICS: tuple[str, ...] = ("recall", "ndcg", "precision", "hitrate", "coverage", "ild")


def _dense_mask(mask, shape: tuple[int, int]) -> np.ndarray:
    if mask is None:
        return np.zeros(shape, dtype=bool)
    if sp.issparse(mask):
        return np.asarray(mask.astype(bool).todense())
    out = np.asarray(mask, dtype=bool)
    if out.shape != shape:
        raise ValueError(f"mask has shape {out.shape}; scores have {shape}")
    return out


def intra_list_distance(items: np.ndarray, unit_vectors: np.ndarray) -> float:
    """Mean pairwise cosine distance among ``items`` (rows of ``unit_vectors`` are L2-normalised)."""
    n = len(items)
    if n < 2:
        return 0.0
    v = unit_vectors[items]
    sims = v @ v.T
    off_diagonal = (sims.sum() - np.trace(sims)) / (n * (n - 1))
    return float(1.0 - off_diagonal)


def rank_users(scores: np.ndarray, train_mask=None, *, candidate_mask: np.ndarray | None = None,
               k: int, mmr_lambda: float = 0.0, item_vectors: np.ndarray | None = None,
               users: Sequence[int] | None = None, tie_seed: int | None = 0) -> dict[int, np.ndarray]:
    """Top-``k`` item indices per user after excluding training items and non-candidates.

    ``tie_seed`` seeds per-user random tie-breaking (``None``: lower index first).
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_users, n_items = scores.shape
    excluded = _dense_mask(train_mask, (n_users, n_items))
    if candidate_mask is not None:
        cand = np.asarray(candidate_mask, dtype=bool)
        if cand.shape != (n_items,):
            raise ValueError(f"candidate_mask has shape {cand.shape}; expected ({n_items},)")
        excluded = excluded | ~cand[None, :]
    if mmr_lambda > 0 and item_vectors is None:
        raise ValueError("MMR re-ranking needs item vectors")
    out: dict[int, np.ndarray] = {}
    for u in (range(n_users) if users is None else users):
        row = np.where(excluded[u], -np.inf, scores[u])
        tb = None if tie_seed is None else np.random.default_rng([tie_seed, int(u)]).random(n_items)
        out[u] = (mmr_rerank(row, item_vectors, k, mmr_lambda, tiebreak=tb) if mmr_lambda > 0  # type: ignore[arg-type]
                  else top_k(row, k, tb))
    return out


def evaluate_scores(
    scores: np.ndarray,
    train_mask,
    test_sets: Sequence[Sequence[int] | np.ndarray],
    ks: Sequence[int],
    candidate_mask: np.ndarray | None = None,
    item_features_for_diversity: np.ndarray | None = None,
    *,
    mmr_lambda: float = 0.0,
    tie_seed: int | None = 0,
) -> dict[str, float]:
    """Average full-ranking metrics at every ``k`` in ``ks`` (keys like ``"recall@20"``).

    ``scores`` [n_users, n_items] (higher = better; -inf/nan = never recommend), ``train_mask``
    (bool array or sparse matrix, same shape: items to exclude per user), ``test_sets[u]`` the test
    item indices of user ``u``, ``candidate_mask`` [n_items] bool (cold protocol: only these are
    ranked). ``mmr_lambda`` > 0 re-ranks each list with :func:`mmr_rerank` over the diversity
    features. ``tie_seed`` seeds the random tie-breaking (None = by index). Also returns ``users`` (how many users were evaluated).
    """
    scores = np.asarray(scores, dtype=np.float64)
    scores = np.where(np.isnan(scores), -np.inf, scores)
    n_users, n_items = scores.shape
    if len(test_sets) != n_users:
        raise ValueError(f"{len(test_sets)} test sets for {n_users} score rows")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive integers; got {ks}")
    excluded = _dense_mask(train_mask, (n_users, n_items))
    cand = np.ones(n_items, dtype=bool) if candidate_mask is None else np.asarray(candidate_mask, dtype=bool)
    unit = unit_rows(item_features_for_diversity) if item_features_for_diversity is not None else None
    # Per-user relevant sets, restricted to what can be ranked.
    relevant: dict[int, np.ndarray] = {}
    for u, items in enumerate(test_sets):
        items = np.unique(np.asarray(items, dtype=np.int64))
        items = items[cand[items] & ~excluded[u, items]] if items.size else items
        if items.size:
            relevant[u] = items
    users = sorted(relevant)
    if not users:
        raise ValueError("no user has a rankable test item")
    lists = rank_users(scores, excluded, candidate_mask=cand, k=ks[-1], mmr_lambda=mmr_lambda,
                       item_vectors=unit, users=users, tie_seed=tie_seed)
    discounts = 1.0 / np.log2(np.arange(2, ks[-1] + 2))
    sums = {f"{m}@{k}": 0.0 for k in ks for m in ("recall", "ndcg", "precision", "hitrate", "ild")}
    seen = {k: np.zeros(n_items, dtype=bool) for k in ks}
    for u in users:
        ranked, rel = lists[u], relevant[u]
        hits = np.isin(ranked, rel).astype(np.float64)
        for k in ks:
            h = hits[:k]
            n_hits = h.sum()
            sums[f"recall@{k}"] += n_hits / rel.size
            sums[f"precision@{k}"] += n_hits / k
            sums[f"hitrate@{k}"] += float(n_hits > 0)
            idcg = discounts[: min(rel.size, k)].sum()
            sums[f"ndcg@{k}"] += float((h * discounts[: h.size]).sum() / idcg)
            seen[k][ranked[:k]] = True
            if unit is not None:
                sums[f"ild@{k}"] += intra_list_distance(ranked[:k], unit)
    out: dict[str, float] = {}
    n_cand = int(cand.sum())
    for k in ks:
        for m in ("recall", "ndcg", "precision", "hitrate"):
            out[f"{m}@{k}"] = sums[f"{m}@{k}"] / len(users)
        out[f"coverage@{k}"] = float((seen[k] & cand).sum() / n_cand) if n_cand else 0.0
        if unit is not None:
            out[f"ild@{k}"] = sums[f"ild@{k}"] / len(users)
    out["users"] = float(len(users))
    return out
