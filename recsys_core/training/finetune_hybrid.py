"""Fine-tune the hybrid model from labels: what the labels teach, chosen so a few dozen cannot make it worse.

The base is the model served now: a hybrid checkpoint, or the zero-shot model (which *is* the hybrid
with nothing collaborative). The labels add, per labelled profile, a pseudo-user who interacted with
the profile's items and then with the items liked for it
(:func:`recsys_core.training.data.like_interactions`), so the collaborative part learns
"people who like these also like that" from the judgements, on top of the base's own interactions.

What is learnt besides: the mix of content and collaborative parts and the weight of the genre Gram in
the EASE solve (and, where :class:`CVGrid` lists them, the text/image weights and EASE's regularisation),
chosen by k-fold cross-validation over the *training* labels' profiles (the collaborative part of each fold is
solved without that fold's likes, so a like never predicts itself). The measure is the gate's own:
the NDCG@20 of each profile's likes when the whole catalog is ranked.

Why a few dozen labels cannot make it worse: the base *as it is served* (its settings, scales and
interactions, without the new labels) is one of the candidates, and the candidate moves away from it
only when the best setting beats it by more than the noise of the cross-validation; when it does not
move, the candidate is the base, score for score. (The pseudo-users can hurt: on MovieLens, each one
also says "this profile did not lead to" every item it lacks, so the base's own settings *with* the
labels lowered held-out users' NDCG@20 to 0.975x in ``benchmarks/feedback_loop.py``.) Per profile, the difference between the best setting's NDCG and the base's is a
paired sample; the best is taken only when the mean difference is at least :attr:`CVGrid.min_t`
standard errors above zero. The best of several settings always looks a little better on
noise; with labels that say nothing (random likes) this keeps the base, and the gate then checks
whatever was chosen on the held-out labels it never saw.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from recsys_core.config import ZeroShotConfig
from recsys_core.data.catalog import Catalog
from recsys_core.labels.aggregation import nested_groups
from recsys_core.model.hybrid import CollaborativePart, HybridConfig, with_scales
from recsys_core.serving.hybrid import HybridServing
from recsys_core.serving.zeroshot import ZeroShotModel
from recsys_core.training.data import LIKE_USER_PREFIX, LabelData, like_interactions
from recsys_core.training.hybrid import catalog_genres, content_scores, fit_part, interaction_matrix

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]

NDCG_K = 20  # the gate's likes NDCG@20 (recsys_core.training.gate.likes_ndcg_by_context)


@dataclass(frozen=True)
class CVGrid:
    """What the cross-validation over the training labels' profiles tries, and how sure it must be to move."""

    # What is tried besides the base's own settings, which always come first (so a tie keeps them). Few settings on
    # purpose: the choice is made on some 15 profiles, and every extra setting is one more chance that noise wins.
    # Measured with benchmarks/demo_draws.py (the demo session's campaign and rule; chosen on campaign seeds 1-20 and
    # checked on fresh seeds 21-40, never on the seed 0 that benchmarks/demo_session.py reports; held-out likes
    # NDCG@20 over the zero-shot model's, mean of seeds 1-20 / 21-40): the earlier grid (4 text/image weightings
    # x 3 lambdas x 2 genre weights x 8 shares, min_t 1.5) 1.007x / 1.033x; these shares alone at lambda 500 and
    # genre weight 20 (and the base's own 5): min_t 1.5 1.028x / 1.029x, 1.2 1.040x / 1.031x, 1.0 1.047x / 1.039x.
    # Adding text-only weights lowered 1-20 to 1.017x, adding lambda 100 to 1.026x. With random likes
    # (--rule random, seeds 1-24) min_t 1.0 moved 1 of 19 candidates (0.995x); so did the tiny catalog's
    # pure-noise test (tests/test_demo_session.py, t 1.0), which 1.2 keeps.
    modality: tuple[tuple[float, float], ...] = ()  # text/image weights of the content part (empty: the base's)
    lambdas: tuple[float, ...] = (500.0,)  # EASE's L2 weight
    # Weight of the genre Gram H H^T in the solve. With a few dozen pseudo-users X^T X is almost empty and
    # the item-item weights come mostly from the side information, so this decides whether the
    # collaborative part reads "same genre" or "similar text and image".
    side_genres: tuple[float, ...] = (20.0,)
    # Content shares. Fine steps near 1: the base's own top items were what the labelled tasks showed,
    # so a small collaborative term that reorders the top is what a few labels can support; most
    # settings far from 1 lose the content model's ordering.
    shares: tuple[float, ...] = (1.0, 0.95, 0.9, 0.8, 0.7)
    folds: int = 5  # profiles dealt into this many folds (fewer when there are fewer profiles)
    # Move away from the base's settings only when the best setting's mean per-profile gain is at least this
    # many standard errors above zero (a one-sided paired t, about 88% at 1.2; see the measurements above).
    min_t: float = 1.2

    def __post_init__(self) -> None:
        if not self.lambdas or not self.side_genres or not self.shares:
            raise ValueError("lambdas, side_genres and shares need at least one value (modality may be empty)")
        if any(not 0.0 <= s <= 1.0 for s in self.shares):
            raise ValueError(f"shares are {self.shares}; each must be in 0..1")
        if any(lam <= 0 for lam in self.lambdas) or any(g < 0 for g in self.side_genres):
            raise ValueError("lambdas must be > 0 and side_genres >= 0")
        if self.folds < 2:
            raise ValueError(f"folds is {self.folds}; at least 2 are needed")
        if self.min_t < 0:
            raise ValueError(f"min_t is {self.min_t}; it must be >= 0")


@dataclass(frozen=True)
class HybridBase:
    """What the candidate starts from."""

    config: HybridConfig
    zeroshot: ZeroShotConfig
    interactions: pd.DataFrame  # the base's own training interactions (empty for the zero-shot model)
    served: object  # the model the app serves now (HybridServing or ZeroShotModel): the base's own scores


@dataclass(frozen=True)
class Choice:
    """What cross-validation chose and why (saved in the candidate's metrics.json)."""

    text_weight: float
    image_weight: float
    lambda_: float
    side_genre: float
    content_share: float
    cv_ndcg: float  # mean per-profile likes NDCG@20 of the choice over the CV folds
    base_cv_ndcg: float  # the same for the base's own settings
    best_t: float  # paired t of the best setting against the base's (NaN: nothing to compare)
    moved: bool  # False: the base was kept as it is served (settings, scales, interactions; no new labels)
    profiles: int  # profiles with a like that could be ranked (the CV's sample size)
    table: list[dict] = field(default_factory=list)  # every setting tried with its CV NDCG


@dataclass(frozen=True)
class _Contexts:
    """The training labels grouped by profile, in catalog indices."""

    keys: list[tuple[int, ...]]  # most recent first, as LabelData.histories
    matrix: sp.csr_matrix  # [contexts, n] 1 for the profile's items
    liked: list[list[int]]  # rankable likes per context (not in the profile)
    fold: np.ndarray  # [contexts] fold number

    @property
    def usable(self) -> np.ndarray:
        return np.asarray([bool(items) for items in self.liked])


def _contexts(data: LabelData, n_items: int, folds: int, seed: int) -> _Contexts:
    """Contexts in first-seen order (as the gate groups them), their likes, and the seeded fold of each."""
    keys: list[tuple[int, ...]] = []
    liked: dict[tuple[int, ...], list[int]] = {}
    for hist, item, label in zip(data.histories, data.items, data.labels):
        key = tuple(hist)
        if key not in liked:
            keys.append(key)
            liked[key] = []
        if label >= 0.5 and item not in key and item not in liked[key]:
            liked[key].append(item)
    rows = [r for r, key in enumerate(keys) for _ in key]
    cols = [i for key in keys for i in key]
    matrix = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(keys), n_items))
    matrix.data[:] = 1.0
    # Folds deal out groups of nested contexts (one session's growing profile), not single contexts, so
    # that no fold is scored on a profile whose own continuation it was solved on.
    group = nested_groups(keys)
    n_groups = int(group.max(initial=-1)) + 1
    order = np.random.default_rng(seed).permutation(n_groups)
    group_fold = np.empty(n_groups, dtype=np.int64)
    group_fold[order] = np.arange(n_groups) % max(1, min(folds, n_groups))
    return _Contexts(keys, matrix, [liked[k] for k in keys], group_fold[group])


def _example_keys(examples: pd.DataFrame, catalog: Catalog) -> list[tuple[int, ...] | None]:
    """Each example's context as a LabelData history (catalog indices, most recent first); None if unservable."""
    out: list[tuple[int, ...] | None] = []
    for context, item in zip(examples["context_ids"], examples["item_id"]):
        ids = [str(i) for i in context]
        ok = str(item) in catalog and ids and all(i in catalog for i in ids)
        out.append(tuple(catalog.index_of(i) for i in reversed(ids)) if ok else None)
    return out


def _likes_ndcg(scores: np.ndarray, contexts: _Contexts, rows: np.ndarray) -> np.ndarray:
    """Per context of ``rows``: the NDCG@20 of its likes with ``scores`` [len(rows), n] ranking the whole
    catalog, the profile's own items excluded; exactly what the gate computes for a held-out profile."""
    from recsys_core.evaluation.metrics import evaluate_scores

    out = np.full(len(rows), np.nan)
    for pos, c in enumerate(rows):
        if not contexts.liked[c]:
            continue
        mask = np.zeros((1, scores.shape[1]), dtype=bool)
        mask[0, list(contexts.keys[c])] = True
        out[pos] = evaluate_scores(scores[pos][None], mask, [contexts.liked[c]], [NDCG_K])[f"ndcg@{NDCG_K}"]
    return out


def _solve(frame: pd.DataFrame, catalog: Catalog, zeroshot: ZeroShotModel, genres: np.ndarray, config: HybridConfig,
           seed: int) -> tuple[CollaborativePart | None, HybridConfig, sp.csr_matrix | None]:
    """The collaborative part of ``frame`` and ``config`` with both parts' scales set on it (None: no interactions)."""
    if not len(frame):
        return None, config, None
    x, _ = interaction_matrix(frame, catalog)
    if not x.nnz:
        return None, config, None
    collab = fit_part(x, zeroshot, genres, config, seed)
    return collab, replace(with_scales(config, content_scores(zeroshot, x), collab.scores(x)),
                           content_share=config.content_share), x


def _served_scores(base: HybridBase, keys: list[tuple[int, ...]]) -> np.ndarray:
    """What the served base scores for each context (most recent item first, as :class:`_Contexts` keys)."""
    served = base.served
    if not keys:
        return np.zeros((0, served.item_vectors.shape[0]))
    queries = torch.stack([served.profile(list(reversed(key))) for key in keys])
    return (queries.to(served.item_vectors.dtype) @ served.item_vectors.T).numpy().astype(np.float64)


def _mix(config: HybridConfig, share: float, content: np.ndarray, collab: np.ndarray | None,
         prior: np.ndarray | None) -> np.ndarray:
    """The hybrid's scores at content share ``share`` (recsys_core.model.hybrid.mixed_scores, written out so
    the content rows are computed once per text/image weighting rather than once per setting)."""
    out = (share / config.content_scale) * content
    if collab is not None:
        out = out + ((1.0 - share) / config.collab_scale) * collab
        if config.prior_weight and prior is not None:
            out = out + config.prior_weight * prior[None, :]
    return out


def cross_validate(base: HybridBase, examples: pd.DataFrame, catalog: Catalog, features, *, data: LabelData,
                   grid: CVGrid = CVGrid(), seed: int = 0, progress: ProgressFn | None = None) -> Choice:
    """Choose the candidate's settings on the training labels' profiles (see the module doc)."""
    report = progress or (lambda fraction, message: None)
    own = _own_interactions(base)
    genres = catalog_genres(catalog)
    contexts = _contexts(data, len(catalog), grid.folds, seed)
    example_keys = _example_keys(examples, catalog)
    n_folds = int(contexts.fold.max()) + 1 if len(contexts.keys) else 0
    base_weights = (base.zeroshot.text_weight, base.zeroshot.image_weight)
    modality = [base_weights] + [w for w in grid.modality if w != base_weights]
    lambdas = [base.config.lambda_] + [lam for lam in grid.lambdas if lam != base.config.lambda_]
    side_genres = [base.config.side_genre] + [g for g in grid.side_genres if g != base.config.side_genre]
    shares = [base.config.content_share] + [s for s in grid.shares if s != base.config.content_share]
    # The base as it is served: its own settings and scales over its own interactions, the new labels left out.
    # It is the key to beat, and it comes first, so a tie keeps it.
    base_key = (base_weights, base.config.lambda_, base.config.side_genre, base.config.content_share, False)
    values: dict[tuple, np.ndarray] = {base_key: _likes_ndcg(_served_scores(base, contexts.keys), contexts,
                                                             np.arange(len(contexts.keys)))}
    total, step = len(modality) * len(lambdas) * len(side_genres), 0
    # Each fold's training examples and interactions, once: the solve settings reuse them.
    fold_frames = []
    for f in range(n_folds):
        held_keys = {contexts.keys[c] for c in np.flatnonzero(contexts.fold == f)}
        keep = np.asarray([k is not None and k not in held_keys for k in example_keys], dtype=bool)
        fold_frames.append(pd.concat([own, like_interactions(examples[keep], catalog)], ignore_index=True))
    for weights in modality:
        zeroshot = ZeroShotModel(features, replace(base.zeroshot, text_weight=weights[0], image_weight=weights[1]))
        content = content_scores(zeroshot, contexts.matrix)  # every profile's content scores [contexts, n]
        for lam in lambdas:
            for side_genre in side_genres:
                step += 1
                report(0.05 + 0.8 * step / total, f"cross-validating: text/image {weights[0]:.1f}/{weights[1]:.1f}, "
                                                  f"lambda {lam:g}, genre side {side_genre:g} ({step}/{total})")
                config = replace(base.config, lambda_=lam, side_genre=side_genre)
                for f in range(n_folds):
                    held = np.flatnonzero(contexts.fold == f)
                    collab, scaled, _ = _solve(fold_frames[f], catalog, zeroshot, genres, config, seed)
                    collab_rows = collab.scores(contexts.matrix[held]) if collab is not None else None
                    for share in shares:
                        key = (weights, lam, side_genre, share, True)
                        row = values.setdefault(key, np.full(len(contexts.keys), np.nan))
                        # Nothing collaborative in this fold: the model is its content part at any share.
                        scores = content[held] if collab is None else _mix(scaled, share, content[held],
                                                                            collab_rows, collab.prior)
                        row[held] = _likes_ndcg(scores, contexts, held)
    return _choose(values, base_key, contexts, grid.min_t)


def _choose(values: dict[tuple, np.ndarray], base_key: tuple, contexts: _Contexts, min_t: float) -> Choice:
    """The best setting by mean CV NDCG, kept only when it beats the base's by ``min_t`` paired standard errors."""
    usable = contexts.usable
    table, best_key, best_value = [], base_key, -math.inf
    for key, row in values.items():
        value = float(np.mean(row[usable])) if usable.any() and not np.isnan(row[usable]).any() else math.nan
        (text_w, image_w), lam, side_genre, share, labels = key
        table.append({"text_weight": text_w, "image_weight": image_w, "lambda": lam, "side_genre": side_genre,
                      "content_share": share, "new_labels": labels, "cv_likes_ndcg@20": round(value, 5)})
        if not math.isnan(value) and value > best_value + 1e-12:
            best_key, best_value = key, value
    base_row = values.get(base_key)
    base_value = float(np.mean(base_row[usable])) if base_row is not None and usable.any() else math.nan
    t = math.nan
    if best_key != base_key and base_row is not None and usable.sum() >= 2:
        diff = values[best_key][usable] - base_row[usable]
        spread = float(diff.std(ddof=1))
        t = float(diff.mean()) / (spread / math.sqrt(len(diff))) if spread > 0 else (math.inf if diff.mean() > 0
                                                                                     else 0.0)
    moved = best_key != base_key and not math.isnan(t) and t >= min_t
    chosen = best_key if moved else base_key
    for row, key in zip(table, values):
        # The table is what metrics.json keeps of the selection ("selection"): mark what was chosen and why.
        row.update(base_settings=key == base_key, best=key == best_key, chosen=key == chosen)
        if key == best_key:
            row.update(paired_t_vs_base=round(t, 3) if not math.isnan(t) else None, min_t=min_t)
    (text_w, image_w), lam, side_genre, share, _ = chosen
    log.info("hybrid fine-tune: best cross-validated likes NDCG@20 %.4f vs the base settings' %.4f over %d profiles "
             "(paired t %.2f, needs %.1f): %s text/image %.1f/%.1f, lambda %g, genre side %g, content share %.2f",
             best_value, base_value, int(usable.sum()), t, min_t, "moving to" if moved else "keeping the base's",
             text_w, image_w, lam, side_genre, share)
    return Choice(text_w, image_w, lam, side_genre, share, best_value if moved else base_value, base_value, t, moved,
                  int(usable.sum()), table)


def fit_candidate(base: HybridBase, examples: pd.DataFrame, catalog: Catalog, features, *, data: LabelData,
                  grid: CVGrid = CVGrid(), seed: int = 0, progress: ProgressFn | None = None
                  ) -> tuple[HybridServing, HybridConfig, ZeroShotConfig, pd.DataFrame, list[dict]]:
    """Choose settings by cross-validation over ``data``'s profiles, then fit on every training label.

    Returns (candidate, its config, its zero-shot config, the interactions it was solved on, the table of every
    setting tried: :attr:`Choice.table`, whose rows say which was the base's, the best and the chosen one).
    """
    report = progress or (lambda fraction, message: None)
    choice = cross_validate(base, examples, catalog, features, data=data, grid=grid, seed=seed, progress=report)
    text_w, image_w, lam, side_genre, share = (choice.text_weight, choice.image_weight, choice.lambda_,
                                               choice.side_genre, choice.content_share)
    moved = choice.moved
    if not moved:
        report(0.88, "keeping the base as it is served (the labels did not move the cross-validation)")
        if isinstance(base.served, HybridServing):
            return base.served, base.served.config, base.zeroshot, base.interactions, choice.table
        candidate, config = _content_only(ZeroShotModel(features, base.zeroshot), base.config, len(catalog))
        return candidate, config, base.zeroshot, base.interactions, choice.table
    report(0.88, "solving the candidate on every training label")
    candidate, config, zs_config, frame = solve_setting(base, examples, catalog, features, text_weight=text_w,
                                                        image_weight=image_w, lambda_=lam, side_genre=side_genre,
                                                        content_share=share, seed=seed)
    return candidate, config, zs_config, frame, choice.table


def solve_setting(base: HybridBase, examples: pd.DataFrame, catalog: Catalog, features, *, text_weight: float,
                  image_weight: float, lambda_: float, side_genre: float, content_share: float, seed: int = 0
                  ) -> tuple[HybridServing, HybridConfig, ZeroShotConfig, pd.DataFrame]:
    """The candidate at one setting, solved on the base's own interactions plus every label of ``examples``.

    Returns (candidate, its config, its zero-shot config, the interactions it was solved on)."""
    zs_config = replace(base.zeroshot, text_weight=text_weight, image_weight=image_weight)
    zeroshot = ZeroShotModel(features, zs_config)
    frame = pd.concat([_own_interactions(base), like_interactions(examples, catalog)], ignore_index=True)
    config = replace(base.config, lambda_=lambda_, side_genre=side_genre, content_share=content_share,
                     selected_on="labels (cross-validation)")
    collab, config, _ = _solve(frame, catalog, zeroshot, catalog_genres(catalog), config, seed)
    if collab is None or (config.content_share == 1.0 and config.prior_weight == 0.0):
        # Nothing collaborative counts (no interactions, or a content-only setting).
        candidate, config = _content_only(zeroshot, config, len(catalog))
        return candidate, config, zs_config, frame
    return HybridServing(zeroshot, collab, config), config, zs_config, frame


def _content_only(zeroshot: ZeroShotModel, config: HybridConfig, n_items: int) -> tuple[HybridServing, HybridConfig]:
    """The hybrid with nothing collaborative, at scale 1: it scores exactly as ``zeroshot`` does."""
    config = replace(config, content_share=1.0, content_scale=1.0, collab_scale=1.0)
    return HybridServing(zeroshot, CollaborativePart.empty(n_items), config), config


def _own_interactions(base: HybridBase) -> pd.DataFrame:
    """The base's own interactions, without the pseudo-users of labels a parent fine-tune saw (read afresh)."""
    own = base.interactions
    if len(own):
        own = own[~own["user_id"].astype(str).str.startswith(LIKE_USER_PREFIX)]
    return own


def base_of(base_model, base_dir: Path | None) -> HybridBase:
    """The starting point: a hybrid checkpoint's settings and interactions, or the zero-shot model's."""
    from recsys_core.model.checkpoint import load_hybrid, read_interactions

    empty = pd.DataFrame({"user_id": pd.Series(dtype=str), "item_id": pd.Series(dtype=str),
                          "timestamp": pd.Series(dtype=float)})
    if base_dir is None:
        zs = getattr(base_model, "config", None)
        return HybridBase(HybridConfig(), zs if isinstance(zs, ZeroShotConfig) else ZeroShotConfig(), empty,
                          base_model)
    saved = load_hybrid(Path(base_dir))
    frame = read_interactions(Path(base_dir))
    return HybridBase(saved.config, ZeroShotConfig.from_dict(saved.zeroshot), frame if frame is not None else empty,
                      base_model)
