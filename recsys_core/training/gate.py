"""The fine-tune's gate: score the base and the candidate on held-out labels with the same code, and pass
the candidate only when it is not worse (paired bootstrap over held-out profiles for the label metrics;
the offline protocol, when given, strictly)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from recsys_core.serving.protocol import ServingModel
from recsys_core.training.data import LabelData


@dataclass(frozen=True)
class GateResult:
    base: dict[str, float]
    candidate: dict[str, float]
    passed: bool
    reason: str


def label_metrics(scores: np.ndarray, data: LabelData) -> dict[str, float]:
    """How well scores order held-out labels: ROC AUC over all pairs, and pairwise accuracy within contexts.

    Within-context accuracy is what a recommendation list needs (for one profile, put the liked item
    above the disliked one); AUC adds the across-context view. Labels >= 0.5 count as positive.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(data.labels) >= 0.5
    out: dict[str, float] = {"n": float(len(y)), "positives": float(y.sum())}
    out["auc"] = float(roc_auc_score(y, scores)) if 0 < y.sum() < len(y) else float("nan")
    right, total = _pair_counts(np.asarray(scores), y, _context_rows(data)).sum(0)
    out["pairwise_accuracy"] = float(right / total) if total else float("nan")
    out["pairs"] = float(total)
    return out


def _context_rows(data: LabelData) -> list[np.ndarray]:
    """The label rows of each context (profile), in first-seen order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, hist in enumerate(data.histories):
        groups.setdefault(tuple(hist), []).append(row)
    return [np.asarray(rows) for rows in groups.values()]


def _pair_counts(scores: np.ndarray, y: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """Per context: (liked-above-disliked pairs, ties counting half; all like/dislike pairs), shape [G, 2]."""
    out = np.zeros((len(groups), 2))
    for g, rows in enumerate(groups):
        pos, neg = scores[rows][y[rows]], scores[rows][~y[rows]]
        if len(pos) and len(neg):
            diff = pos[:, None] - neg[None, :]
            out[g] = ((diff > 0).sum() + 0.5 * (diff == 0).sum(), diff.size)
    return out


def likes_ndcg_by_context(model: ServingModel, data: LabelData, k: int = 20) -> np.ndarray:
    """NDCG@k of each held-out context's liked items when the model ranks the whole catalog.

    One value per context, in the order of :func:`_context_rows` (NaN for a context without a like
    that can be ranked). This is what a person with that profile would see: the liked items near
    the top of a list drawn from every item, not just ordered among the few that were judged.
    """
    from recsys_core.evaluation.metrics import evaluate_scores

    y = np.asarray(data.labels) >= 0.5
    groups = _context_rows(data)
    out = np.full(len(groups), np.nan)
    with torch.no_grad():
        for g, rows in enumerate(groups):
            liked = [data.items[r] for r in rows if y[r]]
            history = list(reversed(data.histories[rows[0]]))  # oldest first, as profile() takes it
            if not liked:
                continue
            scores = (model.item_vectors @ model.profile(history).to(model.item_vectors.dtype)).cpu().numpy()[None]
            mask = np.zeros(scores.shape, dtype=bool)
            mask[0, history] = True
            try:
                out[g] = evaluate_scores(scores, mask, [liked], [k])[f"ndcg@{k}"]
            except ValueError:  # every liked item is in the context itself: nothing to rank
                continue
    return out


def score_labels(model: ServingModel, data: LabelData) -> np.ndarray:
    """Scores of (context, item) pairs under a served model (zero-shot or fine-tuned: both have profile/item_vectors)."""
    out = np.zeros(len(data.items), dtype=np.float64)
    cache: dict[tuple[int, ...], torch.Tensor] = {}
    with torch.no_grad():
        for row, (hist, item) in enumerate(zip(data.histories, data.items)):
            key = tuple(hist)
            if key not in cache:
                cache[key] = model.profile(list(reversed(hist)))  # profile() takes oldest first
            out[row] = float(model.item_vectors[item] @ cache[key].to(model.item_vectors.dtype))
    return out


GATE_METRICS = ("auc", "pairwise_accuracy", "likes_ndcg@20", "offline_ndcg@20")
LABEL_METRICS = ("auc", "pairwise_accuracy", "likes_ndcg@20")


def bootstrap_worse(base_scores: np.ndarray, cand_scores: np.ndarray, data: LabelData, *, samples: int = 1000,
                    seed: int = 0, base_likes: np.ndarray | None = None,
                    cand_likes: np.ndarray | None = None) -> dict[str, float]:
    """For AUC, pairwise accuracy and (given the per-context values of :func:`likes_ndcg_by_context`)
    likes NDCG@20: the share of bootstrap resamples in which the candidate scores below the base.
    Held-out profiles (contexts) are resampled with replacement, both models on the same resample
    (paired), because labels within one profile are not independent.

    Written by hand rather than with scipy.stats.bootstrap: the statistic needs both models' scores
    regrouped per resampled profile, which that API (one statistic over independent samples) cannot express.
    """
    from sklearn.metrics import roc_auc_score

    y = np.asarray(data.labels) >= 0.5
    rows_of = _context_rows(data)
    base_pairs, cand_pairs = _pair_counts(base_scores, y, rows_of), _pair_counts(cand_scores, y, rows_of)
    rng = np.random.default_rng(seed)
    worse = {name: 0 for name in LABEL_METRICS}
    counted = {name: 0 for name in LABEL_METRICS}
    for _ in range(samples):
        pick = rng.integers(0, len(rows_of), len(rows_of))
        b, c = base_pairs[pick].sum(0), cand_pairs[pick].sum(0)
        if b[1] > 0:
            counted["pairwise_accuracy"] += 1
            worse["pairwise_accuracy"] += c[0] / c[1] < b[0] / b[1]
        rows = np.concatenate([rows_of[g] for g in pick])
        if 0 < y[rows].sum() < len(rows):
            counted["auc"] += 1
            worse["auc"] += roc_auc_score(y[rows], cand_scores[rows]) < roc_auc_score(y[rows], base_scores[rows])
        if base_likes is not None and cand_likes is not None:
            b_likes, c_likes = base_likes[pick], cand_likes[pick]
            usable = ~(np.isnan(b_likes) | np.isnan(c_likes))
            if usable.any():
                counted["likes_ndcg@20"] += 1
                worse["likes_ndcg@20"] += c_likes[usable].mean() < b_likes[usable].mean()
    return {name: worse[name] / counted[name] if counted[name] else float("nan") for name in LABEL_METRICS}


def gate(base: dict[str, float], candidate: dict[str, float], tolerance: float = 0.0,
         p_worse: dict[str, float] | None = None, confidence: float = 0.0) -> GateResult:
    """Pass when the candidate is not worse on every gate metric that can be computed for both.

    ``p_worse`` (from :func:`bootstrap_worse`) with ``confidence`` > 0: a held-out label metric counts
    as worse only when the candidate is below the base in more than ``confidence`` of the resamples.
    """
    worse, noise = [], []
    for name in GATE_METRICS:
        b, c = base.get(name, float("nan")), candidate.get(name, float("nan"))
        if math.isnan(b) or math.isnan(c):
            continue
        if c < b - tolerance:
            p = (p_worse or {}).get(name, float("nan"))
            if confidence > 0 and name in LABEL_METRICS and not math.isnan(p) and p <= confidence:
                noise.append(f"{name} {c:.4f} vs {b:.4f} (lower in {p:.0%} of resamples)")
                continue
            worse.append(f"{name} {c:.4f} < base {b:.4f}" + (f" (lower in {p:.0%} of resamples)"
                                                               if p_worse and name in p_worse else ""))
    usable = [n for n in ("auc", "pairwise_accuracy") if not math.isnan(candidate.get(n, float("nan")))]
    if not usable:
        return GateResult(base, candidate, False, "held-out labels cannot rank anything (need likes and dislikes)")
    if worse:
        return GateResult(base, candidate, False, "worse than the active model: " + "; ".join(worse))
    offline = " and the offline protocol" if "offline_ndcg@20" in candidate else ""
    within = f"; within noise: {', '.join(noise)}" if noise else ""
    return GateResult(base, candidate, True, f"not worse than the active model on held-out labels{offline}{within}")


def offline_ndcg(model: ServingModel, histories: Sequence[Sequence[int]], targets: Sequence[Sequence[int]]) -> float:
    """NDCG@20 of a served model on an offline split (user histories -> held-out items), all items ranked."""
    from recsys_core.evaluation.metrics import evaluate_scores

    rows = [r for r in range(len(histories)) if histories[r] and targets[r]]
    with torch.no_grad():
        queries = torch.stack([model.profile(list(histories[r])) for r in rows])
        scores = (queries.to(model.item_vectors.dtype) @ model.item_vectors.T).cpu().numpy()
    mask = np.zeros(scores.shape, dtype=bool)
    for row, r in enumerate(rows):
        mask[row, list(histories[r])] = True
    return float(evaluate_scores(scores, mask, [list(targets[r]) for r in rows], [20])["ndcg@20"])
