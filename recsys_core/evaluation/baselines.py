"""Reference recommenders for offline evaluation: popularity, ItemKNN, EASE, BPR, content profiles.

Why these: they are the standard yardsticks (DATA.md lists their figures on MovieLens-100K). A new
multimodal model is only interesting if it beats EASE on warm users or TF-IDF on cold items.

Every model works on *internal* indices: :class:`InteractionData` maps external string ids to row
(user) and column (item) indices of a binary CSR matrix. ``fit(data)`` learns from the training
matrix; ``score(user_indices)`` returns a dense ``[len(users), n_items]`` float array (higher =
better). Training items are *not* masked here: the metrics exclude them, so every model is judged
by the same rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InteractionData:
    """Binary user x item matrix with the id <-> index maps that give its rows and columns meaning."""

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    matrix: sp.csr_matrix  # [n_users, n_items], 1.0 where the user interacted (train only)
    user_index: Mapping[str, int] = field(repr=False)
    item_index: Mapping[str, int] = field(repr=False)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @classmethod
    def from_frame(cls, interactions: pd.DataFrame, user_ids: Sequence[str], item_ids: Sequence[str]) -> "InteractionData":
        """Build from a (user_id, item_id) frame; ``user_ids``/``item_ids`` fix the index order.

        The index spaces are given, not inferred, so users or items without training interactions
        (cold items, test-only users) still get a row/column and can be scored.
        """
        user_ids, item_ids = tuple(map(str, user_ids)), tuple(map(str, item_ids))
        user_index = {u: i for i, u in enumerate(user_ids)}
        item_index = {it: i for i, it in enumerate(item_ids)}
        rows = interactions.user_id.astype(str).map(user_index)
        cols = interactions.item_id.astype(str).map(item_index)
        if rows.isna().any() or cols.isna().any():
            raise ValueError("interactions mention users or items outside the given id lists")
        matrix = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows.to_numpy(np.int64), cols.to_numpy(np.int64))),
            shape=(len(user_ids), len(item_ids)),
        )
        matrix.sum_duplicates()
        matrix.data[:] = 1.0  # binary: a repeated interaction is still one positive
        return cls(user_ids, item_ids, matrix, user_index, item_index)

    def items_of(self, user: int) -> np.ndarray:
        m = self.matrix
        return m.indices[m.indptr[user]: m.indptr[user + 1]]


class Recommender(Protocol):
    name: str

    def fit(self, data: InteractionData) -> "Recommender": ...

    def score(self, user_indices: Sequence[int] | np.ndarray) -> np.ndarray: ...


class _Base:
    name = "base"
    data: InteractionData | None = None

    def _data(self) -> InteractionData:
        if self.data is None:
            raise RuntimeError(f"{type(self).__name__}.score called before fit")
        return self.data


class Popularity(_Base):
    """Items ranked by training interaction count, the same list for everybody."""

    name = "pop"

    def fit(self, data: InteractionData) -> "Popularity":
        self.data = data
        self.counts = np.asarray(data.matrix.sum(axis=0), dtype=np.float64).ravel()
        return self

    def score(self, user_indices) -> np.ndarray:
        self._data()
        return np.tile(self.counts, (len(user_indices), 1))


class RandomScorer(_Base):
    """Uniform random scores (seeded): the floor any model must clear."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, data: InteractionData) -> "RandomScorer":
        self.data = data
        return self

    def score(self, user_indices) -> np.ndarray:
        data = self._data()
        users = np.asarray(user_indices, dtype=np.int64)
        # Keyed by user, so a user's scores do not depend on how the users were batched.
        return np.stack([np.random.default_rng([self.seed, int(u)]).random(data.n_items) for u in users]) \
            if users.size else np.zeros((0, data.n_items))


class ItemKNN(_Base):
    """Item-based kNN with cosine similarity (each item keeps its ``k`` nearest neighbours).

    score(u, i) = sum over the user's items j of sim(j, i), with sim pruned to j's top-``k``
    neighbours (as ``implicit``'s CosineRecommender does), self-similarity zero. ``k=None`` keeps
    every neighbour; on the fixed ML-100K warm split that reproduces the ``implicit`` peer figure
    (recall@20 0.288), while k=100 scores lower (0.273): pruning per *history* item drops weak
    but many-times-repeated evidence.
    """

    name = "itemknn"

    def __init__(self, k: int | None = 100) -> None:
        if k is not None and k < 1:
            raise ValueError(f"k is {k}; it must be >= 1 (or None: keep every neighbour)")
        self.k = k

    def fit(self, data: InteractionData) -> "ItemKNN":
        self.data = data
        x = data.matrix.astype(np.float64)
        co = (x.T @ x).toarray()
        norms = np.sqrt(np.diag(co))
        denom = np.outer(norms, norms)
        sim = np.divide(co, denom, out=np.zeros_like(co), where=denom > 0)
        np.fill_diagonal(sim, 0.0)
        n = sim.shape[0]
        if self.k is not None and self.k < n:
            drop = np.argpartition(-sim, self.k, axis=1)[:, self.k:]
            np.put_along_axis(sim, drop, 0.0, axis=1)
        self.similarity = sim  # [n_items, n_items], row j = j's neighbours
        return self

    def score(self, user_indices) -> np.ndarray:
        data = self._data()
        return np.asarray(data.matrix[np.asarray(user_indices, dtype=np.int64)] @ self.similarity)


class EASE(_Base):
    """EASE^R (Steck 2019): closed-form item-item weights with a zero diagonal.

    B = I - P diagMat(1 / diag(P)), P = (X^T X + lambda I)^-1, i.e. B_ij = -P_ij / P_jj off the
    diagonal. ``lambda_`` = 300 is the DATA.md reference setting for MovieLens-100K.
    """

    name = "ease"

    def __init__(self, lambda_: float = 300.0) -> None:
        if lambda_ <= 0:
            raise ValueError(f"lambda_ is {lambda_}; it must be > 0")
        self.lambda_ = lambda_

    def fit(self, data: InteractionData) -> "EASE":
        self.data = data
        x = data.matrix.astype(np.float64)
        gram = (x.T @ x).toarray()
        gram[np.diag_indices_from(gram)] += self.lambda_
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        self.weights = b
        return self

    def score(self, user_indices) -> np.ndarray:
        data = self._data()
        return np.asarray(data.matrix[np.asarray(user_indices, dtype=np.int64)] @ self.weights)


@dataclass(frozen=True)
class BPRConfig:
    factors: int = 64
    # Chosen on the warm *validation* split (warmval_*), never on test: recall@20 0.298 there vs
    # 0.290 for lr 0.005/40 epochs and 0.27 for lr 0.01; weaker L2 (1e-4..5e-3) overfits.
    epochs: int = 100
    lr: float = 0.002
    reg: float = 1e-2  # L2 on the embeddings of each batch, per example
    batch_size: int = 1024
    seed: int = 0
    # Torch CPU threads during fit (restored after). 1 on purpose: the tensors are tiny, so extra
    # threads only add synchronisation, and on a busy 2-core box they cost 100x (measured 1.8 vs 240 ms/step).
    threads: int | None = 1


class BPR(_Base):
    """Matrix factorisation trained with the BPR pairwise loss (Rendle et al. 2009), in torch.

    Each epoch visits every training interaction once as (user, positive) and samples one negative
    uniformly among items the user has not interacted with. Adam, seeded; ~seconds on ML-100K CPU.
    ``losses`` keeps the mean loss per epoch (tests check that it goes down).
    """

    name = "bpr"

    def __init__(self, config: BPRConfig | None = None, *, progress: bool = False) -> None:
        self.config = config or BPRConfig()
        self.progress = progress
        self.losses: list[float] = []

    def fit(self, data: InteractionData) -> "BPR":
        import torch

        cfg = self.config
        self.data = data
        previous_threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        try:
            self._train(data, torch)
        finally:
            torch.set_num_threads(previous_threads)
        return self

    def _train(self, data: InteractionData, torch) -> None:
        cfg = self.config
        gen = torch.Generator().manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        coo = data.matrix.tocoo()
        users = torch.from_numpy(coo.row.astype(np.int64))
        items = torch.from_numpy(coo.col.astype(np.int64))
        # Sorted keys u * n_items + i: a vectorised membership test for sampled negatives.
        positive_keys = np.unique(coo.row.astype(np.int64) * data.n_items + coo.col)
        n_users, n_items, d = data.n_users, data.n_items, cfg.factors
        self.user_emb = torch.nn.Parameter(torch.randn(n_users, d, generator=gen) * 0.1)
        self.item_emb = torch.nn.Parameter(torch.randn(n_items, d, generator=gen) * 0.1)
        self.item_bias = torch.nn.Parameter(torch.zeros(n_items))
        opt = torch.optim.Adam([self.user_emb, self.item_emb, self.item_bias], lr=cfg.lr)
        n = len(users)
        epochs = range(cfg.epochs)
        if self.progress:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc="bpr", unit="epoch", leave=False)
        self.losses = []
        for _ in epochs:
            order = torch.randperm(n, generator=gen)
            negatives = rng.integers(0, n_items, size=n)
            # Resample the (rare, ~6% on ML-100K) negatives that are actually positives.
            u_np = users.numpy()
            for _retry in range(10):
                bad = _is_member(u_np * n_items + negatives, positive_keys)
                if not bad.any():
                    break
                negatives[bad] = rng.integers(0, n_items, size=int(bad.sum()))
            neg = torch.from_numpy(negatives)
            total = 0.0
            for start in range(0, n, cfg.batch_size):
                idx = order[start: start + cfg.batch_size]
                u, i, j = users[idx], items[idx], neg[idx]
                pu, qi, qj = self.user_emb[u], self.item_emb[i], self.item_emb[j]
                x = (pu * (qi - qj)).sum(1) + self.item_bias[i] - self.item_bias[j]
                loss = -torch.nn.functional.logsigmoid(x).mean()
                reg = cfg.reg * (pu.pow(2).sum() + qi.pow(2).sum() + qj.pow(2).sum()) / len(idx)
                opt.zero_grad()
                (loss + reg).backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
            self.losses.append(total / n)

    def score(self, user_indices) -> np.ndarray:
        import torch

        self._data()
        with torch.no_grad():
            u = torch.as_tensor(np.asarray(user_indices, dtype=np.int64))
            out = self.user_emb[u] @ self.item_emb.T + self.item_bias[None, :]
        return out.numpy().astype(np.float64)


def _is_member(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return sorted_keys[pos] == keys if len(sorted_keys) else np.zeros(len(keys), dtype=bool)


def _profile_scores(data: InteractionData, item_matrix, user_indices) -> np.ndarray:
    """Cosine between each user's mean item vector (train items) and every item vector.

    ``item_matrix`` rows must be L2-normalised; a user without training items scores 0 everywhere.
    """
    users = np.asarray(user_indices, dtype=np.int64)
    x = data.matrix[users].astype(np.float64)
    counts = np.asarray(x.sum(axis=1)).ravel()
    x = sp.diags(1.0 / np.maximum(counts, 1.0)) @ x
    profiles = x @ item_matrix  # mean of the train items' rows
    profiles = profiles.toarray() if sp.issparse(profiles) else np.asarray(profiles)
    norms = np.linalg.norm(profiles, axis=1, keepdims=True)
    profiles = np.divide(profiles, norms, out=np.zeros_like(profiles), where=norms > 0)
    scores = item_matrix @ profiles.T
    scores = scores.toarray() if sp.issparse(scores) else np.asarray(scores)
    return scores.T


def item_texts(items: pd.DataFrame) -> dict[str, str]:
    """item_id -> "title genres description" (genres space-separated), from an items.csv frame."""
    out = {}
    for rec in items.fillna("").astype(str).to_dict(orient="records"):
        genres = " ".join(g for g in rec.get("genres", "").split("|") if g and g != "unknown")
        out[rec["item_id"]] = " ".join(p for p in (rec.get("title", ""), genres, rec.get("description", "")) if p)
    return out


def item_genres(items: pd.DataFrame) -> dict[str, tuple[str, ...]]:
    return {rec["item_id"]: tuple(g for g in rec.get("genres", "").split("|") if g and g != "unknown")
            for rec in items.fillna("").astype(str).to_dict(orient="records")}


def genre_matrix(item_ids: Sequence[str], genres: Mapping[str, Sequence[str]]) -> np.ndarray:
    """Multi-hot [n_items, n_genres] (genres sorted); items without genres are zero rows."""
    names = sorted({g for gs in genres.values() for g in gs})
    col = {g: j for j, g in enumerate(names)}
    out = np.zeros((len(item_ids), len(names)), dtype=np.float64)
    for i, item in enumerate(item_ids):
        for g in genres.get(item, ()):
            out[i, col[g]] = 1.0
    return out


class TfidfProfile(_Base):
    """Content profile: cosine(mean TF-IDF of the user's train items, item TF-IDF).

    Text = title + genres + description; unigrams + bigrams, ``min_df=2`` (as in the DATA.md peer
    figure). The vocabulary is fitted on every catalog item's text, which uses no interaction, so a
    cold item (never in training) is scored from its content alone.
    """

    name = "tfidf"

    def __init__(self, texts: Mapping[str, str], *, min_df: int = 2, ngram_range: tuple[int, int] = (1, 2)) -> None:
        self.texts = texts
        self.min_df = min_df
        self.ngram_range = ngram_range

    def fit(self, data: InteractionData) -> "TfidfProfile":
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.data = data
        docs = [self.texts.get(i, "") for i in data.item_ids]
        vec = TfidfVectorizer(ngram_range=self.ngram_range, min_df=self.min_df, sublinear_tf=True,
                              stop_words="english")
        self.item_matrix = vec.fit_transform(docs).tocsr()  # rows L2-normalised by default
        log.info("tfidf: %d items x %d terms", *self.item_matrix.shape)
        return self

    def score(self, user_indices) -> np.ndarray:
        return _profile_scores(self._data(), self.item_matrix, user_indices)


class GenreProfile(_Base):
    """Content profile over genre multi-hot vectors: the simplest cold-start baseline."""

    name = "genre"

    def __init__(self, genres: Mapping[str, Sequence[str]]) -> None:
        self.genres = genres

    def fit(self, data: InteractionData) -> "GenreProfile":
        self.data = data
        m = genre_matrix(data.item_ids, self.genres)
        norms = np.linalg.norm(m, axis=1, keepdims=True)
        self.item_matrix = np.divide(m, norms, out=np.zeros_like(m), where=norms > 0)
        return self

    def score(self, user_indices) -> np.ndarray:
        return _profile_scores(self._data(), self.item_matrix, user_indices)
