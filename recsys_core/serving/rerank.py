"""Top-k selection and maximal-marginal-relevance re-ranking: what the service serves and what the
offline metrics rank with (:mod:`recsys_core.evaluation.metrics`), one implementation for both."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the offline metrics use the numpy half: importing them loads no torch
    import torch

    from recsys_core.serving.index import VectorIndex

MMR_POOL = 200  # MMR re-ranks only the top-N by relevance: diversity never pulls in junk from the tail


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)


def top_k(scores_row: np.ndarray, k: int, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest finite scores, best first.

    Ties are broken by ``tiebreak`` (higher first; e.g. seeded random numbers) when given, else by
    lower index.
    """
    finite = np.flatnonzero(np.isfinite(scores_row))
    if finite.size == 0:
        return finite
    k = min(k, finite.size)
    vals = scores_row[finite]
    if k < finite.size:
        # Partition on the k-th value, then keep every item tied with it so the stable sort decides.
        kth = np.partition(-vals, k - 1)[k - 1]
        keep = finite[-vals <= kth]
        vals = scores_row[keep]
    else:
        keep = finite
    if tiebreak is None:
        order = np.argsort(-vals, kind="stable")
    else:
        order = np.lexsort((-tiebreak[keep], -vals))
    return keep[order][:k]


def mmr_rerank(scores_row: np.ndarray, item_vectors: np.ndarray, k: int, lambda_: float,
               pool: int = MMR_POOL, tiebreak: np.ndarray | None = None) -> np.ndarray:
    """Maximal marginal relevance (Carbonell & Goldstein 1998): top-``k`` indices, best first.

    Greedily picks ``argmax (1 - lambda_) * rel(i) - lambda_ * max_{j chosen} cos(i, j)``.
    ``lambda_`` is the *diversity* weight: 0 = plain ranking by score, 1 = only diversity. Relevance is
    min-max scaled to [0, 1] over the pool so it is on the same scale as cosine similarity whatever
    the model's score range. Non-finite scores (excluded items) are never picked.
    """
    if not 0.0 <= lambda_ <= 1.0:
        raise ValueError(f"lambda_ is {lambda_}; allowed 0..1")
    candidates = top_k(scores_row, max(k, pool), tiebreak)
    if lambda_ == 0.0 or candidates.size <= 1:
        return candidates[:k]
    rel = scores_row[candidates].astype(np.float64)
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    vecs = unit_rows(item_vectors[candidates])
    sims = vecs @ vecs.T
    chosen = [0]  # the most relevant item is always first (no similarity penalty yet)
    max_sim = sims[0].copy()
    available = np.ones(candidates.size, dtype=bool)
    available[0] = False
    for _ in range(min(k, candidates.size) - 1):
        gain = (1.0 - lambda_) * rel - lambda_ * max_sim
        gain[~available] = -np.inf
        nxt = int(np.argmax(gain))
        chosen.append(nxt)
        available[nxt] = False
        max_sim = np.maximum(max_sim, sims[nxt])
    return candidates[np.asarray(chosen)]


@dataclass(frozen=True)
class RerankedResult:
    """What :func:`mmr_search` picked, with what a person needs to see why the order is not by score."""

    indices: torch.Tensor  # [k] long, in MMR order
    scores: torch.Tensor  # [k] float: each pick's relevance score (the model's score, unchanged by MMR)
    score_ranks: tuple[int, ...]  # each pick's 1-based rank by score alone (ties share the better rank)
    gains: tuple[float, ...]  # each pick's diversity gain: 1 - its highest cosine to the picks above it

    @property
    def reordered(self) -> bool:
        """True when MMR changed the list: some pick is not where ranking by score would put it."""
        return any(rank != position for position, rank in enumerate(self.score_ranks, start=1))


def diversity_gains(item_vectors: np.ndarray, chosen: np.ndarray) -> np.ndarray:
    """1 - the highest cosine similarity of each chosen item to those chosen before it (the first has
    nothing above it: 1): how much new ground each pick covers, on the vectors MMR compares."""
    vecs = unit_rows(np.asarray(item_vectors)[np.asarray(chosen, dtype=np.int64)])
    gains = np.ones(len(vecs))
    for i in range(1, len(vecs)):
        gains[i] = 1.0 - float((vecs[:i] @ vecs[i]).max())
    return gains


def mmr_search(index: VectorIndex, diversity_vectors: torch.Tensor, query: torch.Tensor, k: int, exclude: list[int],
               diversity: float) -> RerankedResult:
    """The service's ``diversity`` > 0 path: every item scored, then re-ranked with :func:`mmr_rerank`."""
    import torch

    scores = (index.vectors @ query.float()).numpy()
    scores[exclude] = -np.inf
    k = min(k, len(scores) - len(set(exclude)))
    vectors = diversity_vectors.numpy()
    chosen = mmr_rerank(scores, vectors, k, diversity, pool=max(100, 5 * k))
    finite = scores[np.isfinite(scores)]
    ranks = tuple(int((finite > scores[i]).sum()) + 1 for i in chosen)
    gains = tuple(float(g) for g in diversity_gains(vectors, chosen))
    return RerankedResult(torch.as_tensor(chosen, dtype=torch.long), torch.as_tensor(scores[chosen]), ranks, gains)
