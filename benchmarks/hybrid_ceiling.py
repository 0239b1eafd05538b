"""Where is the room for the hybrid model on MovieLens-100K? Ceilings measured on the validation splits only.

    .venv/bin/python benchmarks/hybrid_ceiling.py --data-root ../shared/data/movielens-100k \\
        --features-cache /tmp/dml/features --json hybrid_ceiling.json

Cold items (``coldval_*``: rank the validation's cold items only):

- ``zeroshot``: the content part alone, as the app serves it.
- ``oracle_popularity``: the cold items ranked by how often they appear in the validation test set
  (an oracle: no model can know it), the same list for every user.
- ``zeroshot_plus_oracle_popularity``: the content score plus w x the oracle log-popularity, both
  z-scored, for several w: what content would reach if it knew which cold items will be popular.
- ``content_predicts_popularity``: Spearman correlation between a warm item's log-popularity and
  the mean log-popularity of its 10 nearest warm items by content (5-fold over warm items), and the
  same for the cold items' content prior (``recsys_core.model.hybrid.content_prior``) against their
  true validation popularity: how much of the popularity the content carries.

Warm users (``warmval_*``):

- ``ease``: EASE lambda 300 (the reference baseline); ``hybrid``: the hybrid's chosen settings.
- ``oracle_mix_per_user``: each user gets the content share (0..0.5) that is best *for that user's
  own validation items*: an oracle bound on any rule that sets the mix per user.
- ``mix_by_history_length``: the share chosen per quartile of history length (a rule one could deploy).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import doc_parser, emit  # noqa: E402

log = logging.getLogger("benchmarks.hybrid_ceiling")
SHARES = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def _z(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    spread = values[rows].std()
    return (values - values[rows].mean()) / (spread if spread > 0 else 1.0)


def main(argv: list[str] | None = None) -> int:
    p = doc_parser("benchmarks/hybrid_ceiling.py", __doc__, "Ceilings")
    p.add_argument("--data-root", type=Path, required=True, help="MovieLens-100K folder (items.csv, splits/)")
    p.add_argument("--features-cache", type=Path, required=True, help="feature cache folder (DATA_DIR/features)")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from scipy.stats import spearmanr

    from recsys_core.config import ImageEncoderConfig, TextEncoderConfig, ZeroShotConfig
    from recsys_core.data.adapters import load_movielens_100k
    from recsys_core.data.splits import load_split
    from recsys_core.encoders.features import encode_catalog
    from recsys_core.evaluation.metrics import evaluate_scores
    from recsys_core.model.hybrid import content_prior, mixed_scores
    from recsys_core.serving.zeroshot import ZeroShotModel
    from recsys_core.training.hybrid import (catalog_genres, content_scores, fit_part, select_config,
                                             split_targets)

    started = time.perf_counter()
    catalog = load_movielens_100k(args.data_root)
    features = encode_catalog(catalog, TextEncoderConfig(), ImageEncoderConfig(), args.features_cache).features
    zs = ZeroShotModel(features, ZeroShotConfig())
    vectors = zs.item_vectors.numpy().astype(np.float64)
    out: dict[str, object] = {}

    def ndcg(scores, x, tests, cand=None) -> float:
        return round(float(evaluate_scores(scores, x, tests, [20], cand, tie_seed=args.seed)["ndcg@20"]), 4)

    def recall(scores, x, tests, cand=None) -> float:
        return round(float(evaluate_scores(scores, x, tests, [20], cand, tie_seed=args.seed)["recall@20"]), 4)

    # -- cold items -----------------------------------------------------------------------------
    x, targets, cand = split_targets(load_split(args.data_root, "cold-item", validation=True), catalog)
    rows = [r for r in range(x.shape[0]) if targets[r]]
    x, tests = x[rows], [np.asarray(targets[r]) for r in rows]
    content = content_scores(zs, x)
    truth = np.zeros(len(catalog))
    for t in tests:
        truth[t] += 1
    cand_rows = np.flatnonzero(cand)
    z_content = (content - content[:, cand_rows].mean(1, keepdims=True)) / content[:, cand_rows].std(1, keepdims=True)
    z_pop = _z(np.log1p(truth), cand_rows)
    counts = np.asarray(x.sum(0)).ravel()
    warm = np.flatnonzero(counts > 0)
    folds = np.array_split(np.random.default_rng(args.seed).permutation(warm), 5)
    predicted = np.zeros(len(catalog))
    for fold in folds:
        rest = np.setdiff1d(warm, fold)
        nearest = np.argsort(-(vectors[fold] @ vectors[rest].T), axis=1)[:, :10]
        predicted[fold] = np.log1p(counts[rest][nearest]).mean(1)
    prior = content_prior(vectors, counts, 10)
    out["cold_validation"] = {
        "recall@20": {"zeroshot": recall(content, x, tests, cand),
                      "oracle_popularity": recall(np.tile(truth, (len(rows), 1)), x, tests, cand),
                      "zeroshot_plus_oracle_popularity": {
                          f"{w:g}": recall(z_content + w * z_pop[None], x, tests, cand) for w in (0.25, 0.5, 1.0, 2.0)}},
        "content_predicts_popularity": {
            "warm_items_5fold_spearman": round(float(spearmanr(predicted[warm], np.log1p(counts[warm])).correlation), 4),
            "cold_prior_vs_true_spearman": round(float(spearmanr(prior[cand_rows], truth[cand_rows]).correlation), 4)},
        "users": len(rows), "cold_items": int(cand.sum())}
    log.info("cold: %s", out["cold_validation"])

    # -- warm users -----------------------------------------------------------------------------
    x, targets, _ = split_targets(load_split(args.data_root, "warm", validation=True), catalog)
    rows = [r for r in range(x.shape[0]) if targets[r]]
    x, tests = x[rows], [np.asarray(targets[r]) for r in rows]
    from recsys_core.evaluation.baselines import EASE, InteractionData

    data = InteractionData(tuple(map(str, range(x.shape[0]))), tuple(catalog.ids), x.tocsr(), {}, {})
    ease = EASE(300.0).fit(data).score(np.arange(x.shape[0]))
    chosen = select_config(x, tests, zs, catalog_genres(catalog), seed=args.seed).config
    part = fit_part(x, zs, catalog_genres(catalog), chosen, args.seed)
    content, collab = content_scores(zs, x), part.scores(x)
    per_user = np.zeros((len(rows), len(SHARES)))
    for j, share in enumerate(SHARES):
        scores = mixed_scores(replace(chosen, content_share=share), content, collab, part.prior)
        for r in range(len(rows)):
            per_user[r, j] = evaluate_scores(scores[r:r + 1], x[r], [tests[r]], [20], tie_seed=args.seed)["ndcg@20"]
    lengths = np.asarray(x.sum(1)).ravel()
    bucket = np.digitize(lengths, np.quantile(lengths, [0.25, 0.5, 0.75]))
    by_length = sum(per_user[bucket == b].mean(0).max() * (bucket == b).sum() for b in range(4)) / len(rows)
    out["warm_validation"] = {
        "ndcg@20": {"ease": ndcg(ease, x, tests), "hybrid": ndcg(mixed_scores(chosen, content, collab, part.prior), x, tests),
                    "fixed_share": {f"{s:g}": round(float(v), 4) for s, v in zip(SHARES, per_user.mean(0))},
                    "oracle_mix_per_user": round(float(per_user.max(1).mean()), 4),
                    "mix_by_history_length": round(float(by_length), 4)},
        "chosen": chosen.to_dict(), "users": len(rows)}
    log.info("warm: %s", out["warm_validation"]["ndcg@20"])
    out["wall_s"] = round(time.perf_counter() - started, 1)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
