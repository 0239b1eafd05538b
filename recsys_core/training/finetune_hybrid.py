"""Fine-tune the hybrid model from labels: what the labels teach, chosen so a few dozen cannot make it worse.

The base is the model served now: a hybrid checkpoint, or the zero-shot model (which *is* the hybrid
with nothing collaborative). The labels add, per labelled profile, a pseudo-user who interacted with
the profile's items and then with the items liked for it
(:func:`recsys_core.training.finetune.like_interactions`), so the collaborative part learns
"people who like these also like that" from the judgements, on top of the base's own interactions.

What is learnt besides: the mix of content and collaborative parts, the text/image weights of the
content part and EASE's regularisation, each chosen by k-fold cross-validation over the *training*
labels' profiles (the collaborative part of each fold is solved without that fold's likes, so a
like never predicts itself). The base's own settings are one of the candidates and win ties, so a
candidate moves away from the base only where the training labels say it ranks their likes
better; the gate then checks it on the held-out labels it never saw.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from recsys_core.config import ZeroShotConfig
from recsys_core.data.catalog import Catalog
from recsys_core.model.hybrid import HybridConfig, with_scales
from recsys_core.serving.hybrid import HybridServing
from recsys_core.serving.zeroshot import ZeroShotModel
from recsys_core.training.data import LabelData
from recsys_core.training.gate import likes_ndcg_by_context
from recsys_core.training.hybrid import catalog_genres, content_scores, fit_part, interaction_matrix

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]

MODALITY_GRID: tuple[tuple[float, float], ...] = ((0.8, 0.2), (1.0, 0.0), (0.6, 0.4), (0.4, 0.6))
LAMBDA_GRID: tuple[float, ...] = (20.0, 100.0, 500.0)
SHARES: tuple[float, ...] = (1.0, 0.9, 0.7, 0.5, 0.3, 0.1)


@dataclass(frozen=True)
class HybridBase:
    """What the candidate starts from."""

    config: HybridConfig
    zeroshot: ZeroShotConfig
    interactions: pd.DataFrame  # the base's own training interactions (empty for the zero-shot model)


def _folds(data: LabelData, k: int, seed: int) -> list[np.ndarray]:
    """Label rows grouped by profile, the profiles dealt into ``k`` folds (seeded)."""
    contexts: dict[tuple[int, ...], list[int]] = {}
    for row, hist in enumerate(data.histories):
        contexts.setdefault(tuple(hist), []).append(row)
    keys = list(contexts)
    order = np.random.default_rng(seed).permutation(len(keys))
    folds: list[list[int]] = [[] for _ in range(k)]
    for rank, key in enumerate(order):
        folds[rank % k].extend(contexts[keys[key]])
    return [np.asarray(sorted(f), dtype=np.int64) for f in folds if f]


def _subset(data: LabelData, rows: np.ndarray) -> LabelData:
    return LabelData([data.histories[r] for r in rows], [data.items[r] for r in rows], [data.labels[r] for r in rows])


def _examples_subset(examples: pd.DataFrame, data_rows: set[tuple[tuple[int, ...], int]], catalog: Catalog
                     ) -> pd.DataFrame:
    """The examples whose (context, item) is among ``data_rows`` (catalog indices, context most recent first)."""
    keep = []
    for context, item in zip(examples["context_ids"], examples["item_id"]):
        ids = [str(i) for i in context]
        if str(item) in catalog and ids and all(i in catalog for i in ids):
            key = (tuple(catalog.index_of(i) for i in reversed(ids)), catalog.index_of(str(item)))
            keep.append(key in data_rows)
        else:
            keep.append(False)
    return examples[np.asarray(keep, dtype=bool)] if len(examples) else examples


def fit_candidate(base: HybridBase, examples: pd.DataFrame, catalog: Catalog, features, *, data: LabelData,
                  folds: int = 3, seed: int = 0, progress: ProgressFn | None = None
                  ) -> tuple[HybridServing, HybridConfig, ZeroShotConfig, pd.DataFrame, list[dict]]:
    """Choose settings by cross-validation over ``data``'s profiles, then fit on every training label.

    Returns (candidate, its config, its zero-shot config, the interactions it was solved on, the table tried).
    """
    from recsys_core.training.data import LIKE_USER_PREFIX, like_interactions

    report = progress or (lambda fraction, message: None)
    own = base.interactions
    if len(own):
        own = own[~own["user_id"].astype(str).str.startswith(LIKE_USER_PREFIX)]
    genres = catalog_genres(catalog)
    parts = _folds(data, folds, seed)
    zs_grid = [(base.zeroshot.text_weight, base.zeroshot.image_weight)] + [
        w for w in MODALITY_GRID if w != (base.zeroshot.text_weight, base.zeroshot.image_weight)]
    lambdas = [base.config.lambda_] + [lam for lam in LAMBDA_GRID if lam != base.config.lambda_]
    table: list[dict] = []
    scores: dict[tuple, list[float]] = {}
    total = len(zs_grid) * len(lambdas)
    step = 0
    for weights in zs_grid:
        zs_config = replace(base.zeroshot, text_weight=weights[0], image_weight=weights[1])
        zeroshot = ZeroShotModel(features, zs_config)
        for lam in lambdas:
            step += 1
            report(0.1 + 0.75 * step / total, f"cross-validating: text/image {weights[0]:.1f}/{weights[1]:.1f}, "
                                              f"lambda {lam:g} ({step}/{total})")
            for held in parts:
                train_rows = np.setdiff1d(np.arange(len(data.items)), held)
                train_keys = {(tuple(data.histories[r]), data.items[r]) for r in train_rows}
                frame = pd.concat([own, like_interactions(_examples_subset(examples, train_keys, catalog), catalog)],
                                  ignore_index=True)
                config = replace(base.config, lambda_=lam)
                x, _ = interaction_matrix(frame, catalog) if len(frame) else (None, None)
                collab = fit_part(x, zeroshot, genres, config, seed) if x is not None else None
                fold = _subset(data, held)
                for share in SHARES:
                    trial = replace(config, content_share=share)
                    if collab is not None and x is not None and x.nnz:
                        trial = with_scales(trial, content_scores(zeroshot, x), collab.scores(x))
                        trial = replace(trial, content_share=share)
                        model = HybridServing(zeroshot, collab, trial, version="cv")
                    else:
                        model = HybridServing(zeroshot, _empty(len(catalog)), HybridConfig(), version="cv")
                    value = likes_ndcg_by_context(model, fold)
                    key = (weights, lam, share)
                    scores.setdefault(key, []).extend(v for v in value.tolist() if not np.isnan(v))
    base_key = ((base.zeroshot.text_weight, base.zeroshot.image_weight), base.config.lambda_,
                base.config.content_share)
    best_key, best_value = None, -np.inf
    for key, values in scores.items():
        value = float(np.mean(values)) if values else float("nan")
        table.append({"text_weight": key[0][0], "image_weight": key[0][1], "lambda": key[1], "content_share": key[2],
                      "cv_likes_ndcg@20": round(value, 5)})
        if not np.isnan(value) and value > best_value + 1e-9:
            best_key, best_value = key, value
    base_value = float(np.mean(scores.get(base_key, []))) if scores.get(base_key) else float("nan")
    if best_key is None or (not np.isnan(base_value) and best_value <= base_value):
        best_key = base_key  # nothing beats the base's own settings: keep them
    (text_w, image_w), lam, share = best_key
    log.info("hybrid fine-tune: cross-validated likes NDCG@20 %.4f (base settings %.4f) with text/image %.1f/%.1f, "
             "lambda %g, content share %.2f", best_value, base_value, text_w, image_w, lam, share)
    report(0.88, "solving the candidate on every training label")
    zs_config = replace(base.zeroshot, text_weight=text_w, image_weight=image_w)
    zeroshot = ZeroShotModel(features, zs_config)
    frame = pd.concat([own, like_interactions(examples, catalog)], ignore_index=True)
    config = replace(base.config, lambda_=lam, content_share=share, selected_on="labels (cross-validation)")
    x, _ = interaction_matrix(frame, catalog)
    collab = fit_part(x, zeroshot, genres, config, seed)
    if x.nnz:
        config = replace(with_scales(config, content_scores(zeroshot, x), collab.scores(x)), content_share=share)
    return HybridServing(zeroshot, collab, config), config, zs_config, frame, table


def _empty(n: int):
    from recsys_core.model.hybrid import CollaborativePart

    return CollaborativePart.empty(n)


def base_of(base_model, base_dir: Path | None) -> HybridBase:
    """The starting point: a hybrid checkpoint's settings and interactions, or the zero-shot model's."""
    from recsys_core.model.checkpoint import load_hybrid, read_interactions

    empty = pd.DataFrame({"user_id": pd.Series(dtype=str), "item_id": pd.Series(dtype=str),
                          "timestamp": pd.Series(dtype=float)})
    if base_dir is None:
        zs = getattr(base_model, "config", None)
        return HybridBase(HybridConfig(), zs if isinstance(zs, ZeroShotConfig) else ZeroShotConfig(), empty)
    saved = load_hybrid(Path(base_dir))
    frame = read_interactions(Path(base_dir))
    return HybridBase(saved.config, ZeroShotConfig.from_dict(saved.zeroshot), frame if frame is not None else empty)


def seconds_since(start: float) -> float:
    return time.perf_counter() - start
