"""How much could any fine-tune gain on the feedback-loop protocol? Upper bounds computed from a
finished ``benchmarks/feedback_loop.py`` work folder, on the same held-out users and the same metric.

    .venv/bin/python benchmarks/feedback_ceiling.py --work-dir /tmp/flw/s2 \\
        --data-root ../shared/data/movielens-100k --json ceiling.json

Every figure is NDCG@20 on the held-out users' eval sets computed with ``feedback_loop.ndcg_at_20``
(profile, labelled and skipped items excluded from lists and eval sets). Every list here also
leaves out the user's whole label pool, which is never in the eval set: the oracle variants read
the pool, and a list that still held those items would rank known items instead of eval items.
All variants are scored on that same footing, so ``profile`` is a little above the loop's
``ndcg_before`` (a base list there still holds unlabelled pool items).

Variants
--------
The fusion model (``<work-dir>/base``, the base checkpoint the app served):

- ``profile``: what ``/recommend(profile)`` serves (the benchmark's ``ndcg_before``, less the pool).
- ``history_likes``: the user's likes appended to the profile at serving time (no training).
- ``history_pool``: **oracle**. Every item of the user's label pool, which is on average tens of
  items the user rated (not only the few the labelling found), is appended to the profile.
- ``foldin_likes`` / ``foldin_pool``: **oracle**. Each user's query vector is optimised against
  the fixed item vectors: the softmax likelihood of the likes (or of the whole pool) and a penalty
  on the dislikes, with an L2 pull toward the served query. The best of ``--foldin-l2`` is reported,
  chosen on these same users. This is the most that any per-profile change of the query can do,
  and a fine-tuned user tower can do no more than change the query.
- ``finetune_pool``: **oracle**. The app's fine-tune (``recsys_core.training.finetune.finetune``, default
  ``FinetuneConfig``, the job's 80/20 context split) trained on the whole label pool as likes plus
  the stored dislikes. This measures the fine-tune's reach with perfect and plentiful labels.
- ``checkpoints``: the models given with ``--checkpoint NAME=DIR``. By default this is the newest
  ``<work-dir>/models/candidate-*``, the job's own candidate (its ``ndcg_after``, less the pool).

Classic collaborative filtering on the base model's training interactions
(``recsys_core.evaluation.baselines``; EASE lambda 300, ItemKNN with every neighbour), scored from the
profile:

- ``profile``, ``history_likes`` and ``history_pool`` as above.
- ``trained_with_likes``: every user's profile plus likes added as one more training user. This
  is what learning from the labels (rather than reading them at serving time) gives a model that
  can memorise item-item co-occurrence.

``ratios`` divide each figure by its model's ``profile``. The 1.10x target of the loop corresponds
to 1.10 here.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Sequence  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, doc_parser, emit, machine_facts, setup  # noqa: E402
from feedback_loop import HeldOutUser, base_frame, load_ratings, ndcg_at_20, read_users_json  # noqa: E402

log = logging.getLogger("benchmarks.feedback_ceiling")

LIST_LENGTH = 150  # long enough that 20 remain after the labelled and skipped items are removed
FOLDIN_LR = 0.05


def build_parser() -> argparse.ArgumentParser:
    p = doc_parser("benchmarks/feedback_ceiling.py", __doc__, "Variants")
    p.add_argument("--work-dir", type=Path, required=True,
                   help="a feedback_loop.py --data-dir folder (heldout_users.json, base/, features/, models/)")
    p.add_argument("--data-root", type=Path, required=True, help="the MovieLens-100k folder")
    p.add_argument("--checkpoint", action="append", default=None, metavar="NAME=DIR",
                   help="also score this checkpoint (repeatable); default: the newest <work-dir>/models/candidate-*")
    p.add_argument("--skip-finetune", action="store_true", help="leave out the finetune_pool oracle (about 1-2 min)")
    p.add_argument("--foldin-steps", type=int, default=100, help="Adam steps per user for the fold-in oracles")
    p.add_argument("--foldin-l2", type=float, nargs="+", default=[1.0, 10.0, 100.0],
                   help="L2 pulls toward the served query tried by the fold-in oracles (the best is reported)")
    add_common_args(p)
    return p


# -- helpers ------------------------------------------------------------------------------------------
def likes_of(user: HeldOutUser) -> list[str]:
    return [item for item, verdict in user.labelled.items() if verdict == "like"]


def dislikes_of(user: HeldOutUser) -> list[str]:
    return [item for item, verdict in user.labelled.items() if verdict == "dislike"]


def pool_of(user: HeldOutUser) -> list[str]:
    return sorted(user.pool, key=lambda i: (len(i), i))


def top_ids(scores, exclude: Sequence[int], item_ids: Sequence[str], n: int = LIST_LENGTH) -> list[str]:
    """The ``n`` best-scored item ids, ``exclude`` (what the user is known to have rated) left out."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64).copy()
    scores[list(exclude)] = -np.inf
    return [item_ids[i] for i in np.argsort(-scores, kind="stable")[:n]]


def score_lists(users: Sequence[HeldOutUser], item_ids: Sequence[str],
                scores_of: Callable[[HeldOutUser], Any]) -> float:
    """NDCG@20 of the lists ``scores_of(user)`` (one score per catalog item) gives, on the loop's protocol,
    with the profile and the whole label pool left out of every list (see the module docstring)."""
    index = {item: i for i, item in enumerate(item_ids)}
    lists = {u.user_id: top_ids(scores_of(u), [index[i] for i in [*u.profile, *u.pool]], item_ids) for u in users}
    return ndcg_at_20(lists, list(users), list(item_ids))[0]


# -- fusion model -------------------------------------------------------------------------------------
def fusion_scores(serving, catalog, history: Sequence[str]):
    """Scores of every item for someone who liked ``history`` (oldest first), as the app computes them."""
    import torch

    with torch.no_grad():
        return (serving.item_vectors @ serving.profile([catalog.index_of(i) for i in history])).cpu().numpy()


def foldin_scores(serving, catalog, profile: Sequence[str], positives: Sequence[str], negatives: Sequence[str],
                  l2: float, steps: int):
    """Scores after optimising the query's direction for this user (item vectors fixed).

    The served query is ``[unit user vector, 1]`` against rows ``[scale * unit item vector, bias]``;
    the user vector plus an offset is renormalised, so only the direction moves, as a fine-tuned
    user tower could move it. Loss: mean negative log-softmax of the positives over every item,
    plus softplus(dislike score - mean positive score), plus ``l2 * |offset|^2``. Written by hand:
    a per-query optimisation of a few dozen steps is not something a library offers.
    """
    import torch
    import torch.nn.functional as F

    rows = serving.item_vectors
    q0 = serving.profile([catalog.index_of(i) for i in profile])
    d = q0.shape[0] - 1
    pos = [catalog.index_of(i) for i in positives]
    neg = [catalog.index_of(i) for i in negatives]
    offset = torch.zeros(d, requires_grad=True)
    optimiser = torch.optim.Adam([offset], lr=FOLDIN_LR)

    def query() -> torch.Tensor:
        return torch.cat([F.normalize(q0[:d] + offset, dim=0), q0[d:]])

    for _ in range(steps if pos else 0):
        logits = rows @ query()
        loss = -torch.log_softmax(logits, 0)[pos].mean() + l2 * (offset ** 2).sum()
        if neg:
            loss = loss + F.softplus(logits[neg] - logits[pos].mean().detach()).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        return (rows @ query()).cpu().numpy()


def oracle_examples(users: Sequence[HeldOutUser]):
    """Label rows as the job reads them: the whole pool as likes plus the stored dislikes, per profile.

    The context is the sorted profile, as :func:`recsys_core.labels.aggregation.aggregate` stores it.
    """
    import pandas as pd

    rows = []
    for u in users:
        context = tuple(sorted(u.profile))
        rows += [(context, item, 1.0) for item in pool_of(u)]
        # An eval item disliked in a run with --eval-hits dislike is a wrong label: never train on the eval set.
        rows += [(context, item, 0.0) for item in dislikes_of(u) if item not in u.eval]
    frame = pd.DataFrame(rows, columns=["context_ids", "item_id", "label"])
    frame["context_key"] = ["|".join(c) for c in frame["context_ids"]]
    return frame


def finetune_oracle(service, catalog, users: Sequence[HeldOutUser], work_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Run the app's fine-tune on the oracle labels with the job's defaults and split; returns its facts."""
    from recsys_core.training.finetune import FinetuneConfig, finetune
    from recsys_core.labels.aggregation import LabelSet, split_heldout

    config = FinetuneConfig()
    examples = oracle_examples(users)
    train, heldout = split_heldout(LabelSet(examples, {}, "oracle", ()), config.heldout_fraction, config.seed)
    log.info("oracle fine-tune: %d train / %d held-out labels (whole label pools as likes)", len(train), len(heldout))
    result = finetune(examples=train, heldout=heldout, catalog=catalog, features=service.features,
                      text_encoder=service.text_encoder, image_encoder=service.image_encoder,
                      base_model=service.active_model, base_dir=work_dir / "base", out_dir=out_dir,
                      cache_dir=work_dir / "features", config=config)
    return {"train_labels": result.n_train, "heldout_labels": result.n_heldout, "seconds": round(result.seconds, 1),
            "epochs_run": len(result.history), "gate_passed": result.gate.passed}


def default_checkpoints(work_dir: Path) -> list[str]:
    from recsys_core.model.checkpoint import is_checkpoint

    candidates = [c for c in sorted((work_dir / "models").glob("candidate-*")) if is_checkpoint(c)]
    return [f"job_candidate={candidates[-1]}"] if candidates else []


def fusion_figures(args: argparse.Namespace, catalog, users: Sequence[HeldOutUser]) -> tuple[dict, dict]:
    from recsys_core.config import ServiceConfig
    from recsys_core.service import RecommenderService

    item_ids = list(catalog.ids)
    service = RecommenderService(catalog, ServiceConfig(cache_dir=args.work_dir / "features",
                                                        model_dir=args.work_dir / "base", device="cpu"))
    service.prepare()
    base = service.active_model
    out: dict[str, Any] = {"version": base.version}
    out["profile"] = score_lists(users, item_ids, lambda u: fusion_scores(base, catalog, u.profile))
    out["history_likes"] = score_lists(users, item_ids, lambda u: fusion_scores(base, catalog, u.profile + likes_of(u)))
    out["history_pool"] = score_lists(users, item_ids, lambda u: fusion_scores(base, catalog, u.profile + pool_of(u)))
    detail: dict[str, Any] = {}
    for name, positives in (("foldin_likes", likes_of), ("foldin_pool", pool_of)):
        tried = {}
        for l2 in args.foldin_l2:
            tried[str(l2)] = score_lists(users, item_ids, lambda u: foldin_scores(
                base, catalog, u.profile, positives(u), dislikes_of(u), l2, args.foldin_steps))
            log.info("%s, l2 %g: %.4f", name, l2, tried[str(l2)])
        out[name] = max(tried.values())
        detail[name] = {k: round(v, 5) for k, v in tried.items()}
    if not args.skip_finetune:
        with tempfile.TemporaryDirectory(prefix="ceiling-") as tmp:
            detail["finetune_pool"] = finetune_oracle(service, catalog, users, args.work_dir, Path(tmp) / "oracle")
            service.load_model(Path(tmp) / "oracle")
            tuned = service.active_model
            out["finetune_pool"] = score_lists(users, item_ids, lambda u: fusion_scores(tuned, catalog, u.profile))
    checkpoints = {}
    for spec in args.checkpoint if args.checkpoint is not None else default_checkpoints(args.work_dir):
        name, _, folder = spec.partition("=")
        if not folder:
            raise SystemExit(f"--checkpoint {spec!r}: use NAME=DIR")
        service.load_model(Path(folder))
        model = service.active_model
        ndcg = score_lists(users, item_ids, lambda u: fusion_scores(model, catalog, u.profile))
        checkpoints[name] = {"ndcg": round(ndcg, 5), "ratio": round(ndcg / out["profile"], 4) if out["profile"] else None,
                             "path": folder, "version": model.version}
    out["checkpoints"] = checkpoints
    return out, detail


# -- classic collaborative filtering --------------------------------------------------------------------
def with_pseudo_users(frame, users: Sequence[HeldOutUser]):
    """``frame`` (user_id, item_id) plus one user per held-out user: profile then likes."""
    import pandas as pd

    extra = [(f"likes-{u.user_id}", item) for u in users for item in dict.fromkeys([*u.profile, *likes_of(u)])]
    return pd.concat([frame[["user_id", "item_id"]].astype(str),
                      pd.DataFrame(extra, columns=["user_id", "item_id"])], ignore_index=True)


def cf_figures(frame, item_ids: Sequence[str], users: Sequence[HeldOutUser]) -> dict[str, dict[str, float]]:
    import numpy as np

    from recsys_core.evaluation.baselines import EASE, InteractionData, ItemKNN

    index = {item: i for i, item in enumerate(item_ids)}

    def scorer(weights):
        def scores(history: Sequence[str]):
            x = np.zeros(len(item_ids))
            x[[index[i] for i in history]] = 1.0
            return x @ weights
        return scores

    data = InteractionData.from_frame(frame, sorted(frame["user_id"].astype(str).unique()), item_ids)
    augmented = with_pseudo_users(frame, users)
    augmented_data = InteractionData.from_frame(augmented, sorted(augmented["user_id"].unique()), item_ids)
    out: dict[str, dict[str, float]] = {}
    for make in (lambda: EASE(), lambda: ItemKNN(k=None)):
        model = make()
        model.fit(data)
        score = scorer(model.weights if hasattr(model, "weights") else model.similarity)
        figures = {"profile": score_lists(users, item_ids, lambda u: score(u.profile)),
                   "history_likes": score_lists(users, item_ids, lambda u: score(u.profile + likes_of(u))),
                   "history_pool": score_lists(users, item_ids, lambda u: score(u.profile + pool_of(u)))}
        retrained = make().fit(augmented_data)
        score = scorer(retrained.weights if hasattr(retrained, "weights") else retrained.similarity)
        figures["trained_with_likes"] = score_lists(users, item_ids, lambda u: score(u.profile))
        out[model.name] = figures
        log.info("%s: %s", model.name, {k: round(v, 4) for k, v in figures.items()})
    return out


def ratios(figures: dict[str, Any]) -> dict[str, float]:
    base = figures["profile"]
    return {k: round(v / base, 4) for k, v in figures.items() if isinstance(v, float) and k != "profile" and base > 0}


def rounded(figures: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 5) if isinstance(v, float) else v for k, v in figures.items()}


# -- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.work_dir = args.work_dir.expanduser().resolve()
    args.data_root = args.data_root.expanduser().resolve()
    users_file = args.work_dir / "heldout_users.json"
    from recsys_core.model.checkpoint import WEIGHTS

    for needed in (users_file, args.work_dir / "base" / WEIGHTS, args.work_dir / "features"):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: --work-dir must be a finished feedback_loop.py --data-dir folder")
    if args.foldin_steps < 1 or not args.foldin_l2:
        raise SystemExit("--foldin-steps must be >= 1 and --foldin-l2 needs at least one value")
    setup(args)
    t0 = time.perf_counter()
    from recsys_core.data.adapters import load_movielens_100k

    catalog = load_movielens_100k(args.data_root)
    item_ids = list(catalog.ids)
    users = read_users_json(users_file)
    ratings = load_ratings(args.data_root, item_ids)
    frame = base_frame(ratings, users)
    log.info("%d held-out users, %d labels (%d likes), label pools of %.1f items on average", len(users),
             sum(len(u.labelled) for u in users), sum(len(likes_of(u)) for u in users),
             sum(len(u.pool) for u in users) / len(users))
    fusion, detail = fusion_figures(args, catalog, users)
    cf = cf_figures(frame, item_ids, users)
    result = {
        "benchmark": "feedback_ceiling",
        "work_dir": str(args.work_dir),
        "users": len(users),
        "labels": sum(len(u.labelled) for u in users),
        "likes": sum(len(likes_of(u)) for u in users),
        "mean_pool_items": round(sum(len(u.pool) for u in users) / len(users), 1),
        "fusion": rounded(fusion),
        "fusion_ratios": ratios(fusion),
        "fusion_detail": detail,
        "cf": {name: rounded(figures) for name, figures in cf.items()},
        "cf_ratios": {name: ratios(figures) for name, figures in cf.items()},
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine_facts(args),
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
