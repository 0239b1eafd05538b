"""Fit the hybrid model (:mod:`recsys_core.model.hybrid`) and choose its weights on a validation split.

Selection reads only what it is given: :func:`select_on_validation` loads the protocol's
*validation* split (``warmval_*`` / ``coldval_*``, carved from the training part), never the test
files, fits the collaborative part for each solve setting there, mixes it with the content part
at each share and keeps the setting with the best validation NDCG@20. The chosen config (and the
table of everything tried) is what the evaluation, the trainer and the checkpoint carry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_core.data.catalog import Catalog
from recsys_core.model.hybrid import (CollaborativePart, HybridConfig, fit_collaborative, genre_rows, mixed_scores,
                                      with_scales)
from recsys_core.serving.hybrid import HybridServing
from recsys_core.serving.zeroshot import ZeroShotModel

log = logging.getLogger(__name__)

# The solve settings tried on validation (lambda_, side_content, side_genre), and the mixes.
SOLVE_GRID: tuple[tuple[float, float, float], ...] = tuple(
    (lam, content, genre) for lam in (300.0, 500.0, 800.0) for content in (0.0, 10.0, 30.0) for genre in (0.0, 5.0))
SHARE_GRID: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
COARSE_SHARES: tuple[float, ...] = (0.0, 0.1, 0.2, 0.5)
PRIOR_GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4)
Fixed = dict  # field name -> value held fixed during selection (the ablations)


def interaction_matrix(frame: pd.DataFrame, catalog: Catalog) -> tuple[sp.csr_matrix, list[str]]:
    """Binary users x catalog-items matrix of ``frame`` (user_id, item_id); items outside the catalog are dropped."""
    index = {item_id: i for i, item_id in enumerate(catalog.ids)}
    items = frame["item_id"].astype(str).map(index)
    keep = items.notna().to_numpy()
    users = frame["user_id"].astype(str)[keep]
    user_ids = sorted(users.unique())
    rows = users.map({u: i for i, u in enumerate(user_ids)}).to_numpy(np.int64)
    m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, items[keep].to_numpy(np.int64))),
                      shape=(len(user_ids), len(catalog)))
    m.sum_duplicates()
    m.data[:] = 1.0
    return m, user_ids


def content_scores(zeroshot: ZeroShotModel, matrix: sp.spmatrix) -> np.ndarray:
    """The zero-shot score of every item for every row of ``matrix`` (a profile per row) [rows, n]."""
    queries = zeroshot.profiles(sp.csr_matrix(matrix))
    return (queries.numpy() @ zeroshot.item_vectors.numpy().T).astype(np.float64)


def catalog_genres(catalog: Catalog) -> np.ndarray:
    return genre_rows([item.genres for item in catalog.items])


def fit_part(matrix: sp.spmatrix, zeroshot: ZeroShotModel, genres: np.ndarray, config: HybridConfig,
             seed: int = 0) -> CollaborativePart:
    return fit_collaborative(matrix, zeroshot.item_vectors.numpy(), genres, config, seed=seed)


@dataclass(frozen=True)
class Selection:
    config: HybridConfig
    ndcg: float  # validation NDCG@20 of the chosen config
    table: tuple[dict, ...]  # every setting tried with its validation NDCG@20


def select_config(train: sp.csr_matrix, targets: Sequence[Sequence[int]], zeroshot: ZeroShotModel, genres: np.ndarray,
                  *, candidates: np.ndarray | None = None, fixed: Fixed | None = None, seed: int = 0,
                  label: str = "validation", progress: Callable[[float, str], None] | None = None) -> Selection:
    """Choose the hybrid's settings by NDCG@20 of ``targets`` given ``train`` (one row per user, same rows).

    ``candidates`` [n] bool: rank only these (the cold protocol). ``fixed``: settings held fixed (ablations).
    """
    from recsys_core.evaluation.metrics import evaluate_scores

    fixed = dict(fixed or {})
    rows = [r for r in range(train.shape[0]) if len(targets[r])]
    x = train[rows]
    tests = [np.asarray(targets[r], dtype=np.int64) for r in rows]
    content = content_scores(zeroshot, x)
    cand_rows = np.flatnonzero(candidates) if candidates is not None else None
    table: list[dict] = []

    def ndcg(config: HybridConfig, collab: np.ndarray, prior: np.ndarray) -> float:
        scores = mixed_scores(config, content, collab, prior)
        return float(evaluate_scores(scores, x, tests, [20], candidates, tie_seed=seed)["ndcg@20"])

    solves = [s for s in SOLVE_GRID if all(fixed.get(k, v) == v for k, v in
                                           zip(("lambda_", "side_content", "side_genre"), s))] or [
        (fixed.get("lambda_", 500.0), fixed.get("side_content", 10.0), fixed.get("side_genre", 5.0))]
    shares = [fixed["content_share"]] if "content_share" in fixed else list(SHARE_GRID)
    coarse = [s for s in COARSE_SHARES if s in shares] or shares
    priors = [fixed["prior_weight"]] if "prior_weight" in fixed else list(PRIOR_GRID)
    best: tuple[float, HybridConfig, np.ndarray, np.ndarray] | None = None
    for step, (lam, side_c, side_g) in enumerate(solves):
        if progress is not None:
            progress(step / (len(solves) + 1), f"{label}: solve {step + 1}/{len(solves)}")
        config = HybridConfig(lambda_=lam, side_content=side_c, side_genre=side_g)
        part = fit_part(x, zeroshot, genres, config, seed)
        collab = part.scores(x)
        config = with_scales(config, content, collab, cand_rows)
        for share in coarse:
            trial = replace(config, content_share=share, prior_weight=priors[0])
            value = ndcg(trial, collab, part.prior)
            table.append({"lambda": lam, "side_content": side_c, "side_genre": side_g, "content_share": share,
                          "prior_weight": trial.prior_weight, "ndcg@20": round(value, 5)})
            if best is None or value > best[0]:
                best = (value, trial, collab, part.prior)
    assert best is not None
    _, config, collab, prior = best
    for share in shares:  # refine the mix (and the prior) around the best solve
        for weight in priors:
            trial = replace(config, content_share=share, prior_weight=weight)
            value = ndcg(trial, collab, prior)
            table.append({"lambda": trial.lambda_, "side_content": trial.side_content,
                          "side_genre": trial.side_genre, "content_share": share, "prior_weight": weight,
                          "ndcg@20": round(value, 5)})
            if value > best[0]:
                best = (value, trial, collab, prior)
    value, config, _, _ = best
    config = replace(config, **{k: v for k, v in fixed.items() if k not in ("lambda_", "side_content", "side_genre")},
                     selected_on=label)
    log.info("hybrid selection on %s: NDCG@20 %.4f with %s", label, value, config.to_json())
    return Selection(config, value, tuple(table))


def split_targets(split, catalog: Catalog) -> tuple[sp.csr_matrix, list[list[int]], np.ndarray | None]:
    """A split as (train matrix, per-row test items, candidate mask) in catalog index space."""
    x, users = interaction_matrix(split.train, catalog)
    where = {u: r for r, u in enumerate(users)}
    index = {item_id: i for i, item_id in enumerate(catalog.ids)}
    targets: list[list[int]] = [[] for _ in users]
    for u, i in zip(split.test["user_id"].astype(str), split.test["item_id"].astype(str)):
        if u in where and i in index:
            targets[where[u]].append(index[i])
    cand = None
    if split.candidate_items is not None:
        cand = np.zeros(len(catalog), dtype=bool)
        cand[[index[i] for i in split.candidate_items if i in index]] = True
    return x, targets, cand


def select_on_validation(data_root: Path, protocol: str, catalog: Catalog, zeroshot: ZeroShotModel, *,
                         fixed: Fixed | None = None, seed: int = 0) -> Selection:
    """:func:`select_config` on the protocol's validation split under ``data_root`` (never its test split)."""
    from recsys_core.data.splits import load_split

    val = load_split(Path(data_root), protocol, validation=True, seed=seed)
    x, targets, cand = split_targets(val, catalog)
    return select_config(x, targets, zeroshot, catalog_genres(catalog), candidates=cand, fixed=fixed, seed=seed,
                         label=f"{val.name} ({val.source})")


@dataclass(frozen=True)
class HybridFit:
    serving: HybridServing
    config: HybridConfig
    collab: CollaborativePart
    frame: pd.DataFrame  # the interactions it was fitted on (saved with the checkpoint)
    selection: Selection | None
    seconds: float
    matrix: sp.csr_matrix  # ``frame`` as users x catalog items (rows in ``users`` order)
    users: list[str]


def fit_hybrid(frame: pd.DataFrame, catalog: Catalog, zeroshot: ZeroShotModel, config: HybridConfig, *,
               selection: Selection | None = None, seed: int = 0, started: float | None = None) -> HybridFit:
    """Fit the collaborative part of ``config`` on ``frame`` (all its interactions) for ``catalog``."""
    started = time.perf_counter() if started is None else started
    x, users = interaction_matrix(frame, catalog)
    part = fit_part(x, zeroshot, catalog_genres(catalog), config, seed)
    serving = HybridServing(zeroshot, part, config)
    return HybridFit(serving, config, part, frame, selection, time.perf_counter() - started, x, users)
