"""The hybrid model's collaborative part: EASE with side information, and how it mixes with content.

The product's ``multimodal`` model scores item ``j`` for a profile of liked items ``L`` as

    score(L, j) = content_share / content_scale * content(L, j)          (the zero-shot fused score)
                + (1 - content_share) / collab_scale * sum_{l in L} B[l, j]  (item-item weights)
                + prior[j]                                                 (items without interactions)

``B`` is EASE (Steck 2019) solved on a Gram matrix that also carries the items' content, as in the
"collective" variant of Jeunen et al. ("Closed-form models for collaborative filtering with side
information", RecSys 2020): ``G = X^T X + side_content * C C^T + side_genre * H H^T`` with ``C`` the
zero-shot item vectors and ``H`` the genre multi-hot rows. An item nobody interacted with still has
content rows, so it gets finite, content-driven item-item weights (it is never an all-zero column).
``prior`` gives such an item the popularity of its nearest warm items by content (a CB2CF-style
mapping learned on warm items); warm items carry their popularity in ``B`` already.

With no interactions at all there is nothing to learn: ``content_share`` is 1, the scale 1 and ``B``
zero, so the model *is* the zero-shot model (tested exactly).

Scale: the dense solve is an n x n inverse (time ~n^3, memory ~3 n^2 floats). Above
``max_dense_items`` the same formula is applied to a rank-``rank`` eigen-decomposition of ``G``
(randomized SVD of the stacked rows), which keeps ``B`` low-rank, so it is never materialised:
``collab(L, j) = (sum_{l in L} left[l]) . right[j]``; ``benchmarks/hybrid_scale.py`` measures both.

numpy/scipy only (no torch): this module is the math; :mod:`recsys_core.serving.hybrid` serves it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from recsys_core.config import _Config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HybridConfig(_Config):
    """Everything that fixes the hybrid's scores besides the data; saved in the checkpoint's config.json."""

    lambda_: float = 500.0  # EASE's L2 weight
    side_content: float = 10.0  # weight of the content Gram C C^T in the solve (0 = plain EASE)
    side_genre: float = 5.0  # weight of the genre Gram H H^T
    content_share: float = 1.0  # w_c in [0, 1]; the collaborative part gets 1 - w_c
    content_scale: float = 1.0  # mean |content score| of a validation user's candidates: puts both parts on one scale
    collab_scale: float = 1.0  # the same for the collaborative part
    prior_weight: float = 0.0  # weight of the content-predicted popularity of items without interactions
    prior_neighbours: int = 10  # warm items (by content) whose popularity a cold item inherits
    max_dense_items: int = 4000  # above: low-rank solve (see the module doc)
    # Rank of the low-rank solve: at least the side rows' width, or the content part loses directions
    # (benchmarks/hybrid_scale.py: rank 256 vs 512 at 10k items, top-20 overlap with dense 0.74 vs 0.86).
    rank: int = 512
    selected_on: str = "defaults"  # where the weights were chosen (a validation split, labels, or defaults)

    def __post_init__(self) -> None:
        if self.lambda_ <= 0:
            raise ValueError(f"lambda_ is {self.lambda_}; it must be > 0")
        if self.side_content < 0 or self.side_genre < 0 or self.prior_weight < 0:
            raise ValueError("side_content, side_genre and prior_weight must be >= 0")
        if not 0.0 <= self.content_share <= 1.0:
            raise ValueError(f"content_share is {self.content_share}; allowed 0..1")
        if self.content_scale <= 0 or self.collab_scale <= 0:
            raise ValueError("content_scale and collab_scale must be > 0")
        if self.prior_neighbours < 1 or self.max_dense_items < 1 or self.rank < 1:
            raise ValueError("prior_neighbours, max_dense_items and rank must be >= 1")

    @property
    def content_weight(self) -> float:
        """The multiplier of the zero-shot score."""
        return self.content_share / self.content_scale

    @property
    def collab_weight(self) -> float:
        """The multiplier of sum_l B[l, j]."""
        return (1.0 - self.content_share) / self.collab_scale


@dataclass(frozen=True)
class CollaborativePart:
    """``collab(L, j) = (sum_{l in L} left[l]) . right[j]``; dense: ``left`` is None (the identity), ``right = B^T``."""

    right: np.ndarray  # [n, n] (dense: row j = B[:, j]) or [n, r] (low-rank)
    left: np.ndarray | None  # None (dense) or [n, r]
    prior: np.ndarray  # [n] content-predicted popularity of items without interactions (0 for the others)
    known: np.ndarray  # [n] bool: items with at least one interaction

    @property
    def dense(self) -> bool:
        return self.left is None

    @classmethod
    def empty(cls, n: int) -> "CollaborativePart":
        """No interactions: nothing collaborative (the hybrid is then exactly the zero-shot model)."""
        return cls(np.zeros((n, 0), dtype=np.float32), np.zeros((n, 0), dtype=np.float32),
                   np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool))

    def query(self, weights: np.ndarray) -> np.ndarray:
        """``weights`` [n] (1 per liked item, -w per disliked) -> the collaborative query block."""
        return weights.astype(np.float32) if self.left is None else (weights @ self.left).astype(np.float32)

    def pair(self, liked: Sequence[int], item: int) -> np.ndarray:
        """sum_l B[l, item] split over the liked items [len(liked)]."""
        if self.left is None:
            return self.right[item, list(liked)].astype(np.float64)
        return (self.left[list(liked)] @ self.right[item]).astype(np.float64)

    def scores(self, matrix: sp.spmatrix | np.ndarray) -> np.ndarray:
        """``matrix`` [users, n] (profiles as rows) -> sum_l B[l, j] for every item [users, n]."""
        m = sp.csr_matrix(matrix, dtype=np.float32)
        if self.right.shape[1] == 0:
            return np.zeros(m.shape, dtype=np.float64)
        left = m if self.left is None else sp.csr_matrix(m @ self.left)
        # (right @ left^T)^T rather than left @ right^T: scipy would copy the transposed dense matrix on every
        # call (18 s per profile at 20k items, benchmarks/hybrid_scale.py).
        return np.asarray((left @ self.right.T) if self.left is not None else (self.right @ left.T).T,
                          dtype=np.float64)


def genre_rows(genres: Sequence[Sequence[str]]) -> np.ndarray:
    """Multi-hot genre rows [n, n_genres] (sorted genre names); an item without genres is a zero row."""
    names = sorted({g for item in genres for g in item})
    where = {g: i for i, g in enumerate(names)}
    out = np.zeros((len(genres), len(names)), dtype=np.float32)
    for row, item in enumerate(genres):
        out[row, [where[g] for g in item]] = 1.0
    return out


def side_rows(config: HybridConfig, content: np.ndarray, genres: np.ndarray) -> np.ndarray | None:
    """The item-side rows ``[sqrt(a) C, sqrt(b) H]`` [n, f] whose Gram joins X^T X (None: no side information)."""
    blocks = [np.sqrt(w) * np.asarray(m, dtype=np.float64) for w, m in ((config.side_content, content),
                                                                        (config.side_genre, genres))
              if w > 0 and m.shape[1] > 0]
    return np.hstack(blocks) if blocks else None


def ease_weights(gram: np.ndarray, lambda_: float) -> np.ndarray:
    """EASE: ``B = I - P diagMat(1 / diag(P))``, ``P = (G + lambda I)^-1``, zero diagonal (float64)."""
    g = np.array(gram, dtype=np.float64, copy=True)
    g[np.diag_indices_from(g)] += lambda_
    p = np.linalg.inv(g)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def _lowrank(x: sp.csr_matrix, side: np.ndarray | None, lambda_: float, rank: int, seed: int
             ) -> tuple[np.ndarray, np.ndarray]:
    """EASE from a rank-r eigen-decomposition G ~ U S U^T: ``(G + lambda I)^-1 ~ U diag(1/(s+lambda)) U^T
    + (I - U U^T) / lambda``, so off the diagonal ``B = U D U^T diagMat(1/diag(P))`` with
    ``D = 1/lambda - 1/(s + lambda)``: left = U D, right = U / diag(P)."""
    from sklearn.utils.extmath import randomized_svd

    stacked = x if side is None else sp.vstack([x, sp.csr_matrix(side.T)]).tocsr()
    rank = min(rank, min(stacked.shape) - 1)
    _, s, vt = randomized_svd(stacked, rank, n_iter=4, random_state=seed)
    u = vt.T  # [n, r]
    eig = s ** 2
    d = 1.0 / lambda_ - 1.0 / (eig + lambda_)
    p_diag = (u ** 2 / (eig + lambda_)).sum(1) + (1.0 - (u ** 2).sum(1)) / lambda_
    return (u * d).astype(np.float32), (u / p_diag[:, None]).astype(np.float32)


def content_prior(content: np.ndarray, counts: np.ndarray, neighbours: int) -> np.ndarray:
    """For items without interactions: the mean log-popularity of their ``neighbours`` most similar warm items
    (by content dot product), z-scored over those items; 0 for warm items and when nothing is warm."""
    counts = np.asarray(counts, dtype=np.float64)
    warm = counts > 0
    out = np.zeros(len(counts), dtype=np.float32)
    cold = ~warm
    if not warm.any() or not cold.any():
        return out
    k = min(neighbours, int(warm.sum()))
    sims = np.asarray(content[cold], dtype=np.float64) @ np.asarray(content[warm], dtype=np.float64).T
    nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    estimate = np.log1p(counts[warm][nearest]).mean(1)
    spread = estimate.std()
    out[cold] = (estimate - estimate.mean()) / spread if spread > 0 else 0.0
    return out


def fit_collaborative(matrix: sp.spmatrix, content: np.ndarray, genres: np.ndarray, config: HybridConfig, *,
                      seed: int = 0) -> CollaborativePart:
    """Solve the collaborative part from interactions ``matrix`` [users, n] (binary) and the item side rows."""
    x = sp.csr_matrix(matrix, dtype=np.float64)
    n = x.shape[1]
    counts = np.asarray(x.sum(0)).ravel()
    if x.nnz == 0:
        return CollaborativePart.empty(n)
    side = side_rows(config, content, genres)
    prior = content_prior(content, counts, config.prior_neighbours)
    if n <= config.max_dense_items:
        gram = (x.T @ x).toarray()
        if side is not None:
            gram += side @ side.T
        b = ease_weights(gram, config.lambda_)
        return CollaborativePart(np.ascontiguousarray(b.T, dtype=np.float32), None, prior, counts > 0)
    log.info("hybrid: %d items > max_dense_items %d: rank-%d solve", n, config.max_dense_items, config.rank)
    left, right = _lowrank(x, side, config.lambda_, config.rank, seed)
    return CollaborativePart(right, left, prior, counts > 0)


def mixed_scores(config: HybridConfig, content: np.ndarray, collab: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """The hybrid's score from its parts (the formula of the module doc; the serving rows compute the same)."""
    return config.content_weight * content + config.collab_weight * collab + config.prior_weight * prior[None, :]


def with_scales(config: HybridConfig, content: np.ndarray, collab: np.ndarray, rows: np.ndarray | None = None
                ) -> HybridConfig:
    """``config`` with each part's scale set to its mean absolute score (over ``rows`` of items, default all)."""
    pick = (lambda m: m) if rows is None else (lambda m: m[:, rows])
    c, b = float(np.abs(pick(content)).mean()), float(np.abs(pick(collab)).mean())
    return replace(config, content_scale=c if c > 0 else 1.0, collab_scale=b if b > 0 else 1.0)
