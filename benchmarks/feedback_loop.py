"""Does the product's feedback loop improve recommendations? Simulated annotators label MovieLens
users' recommendations through the app's API, the app's own fine-tune job trains on the labels, and
NDCG@20 on the users' unseen ratings is measured before and after, with the likes and dislikes read
at serving time, learnt by the fine-tune, or both.

    .venv/bin/python benchmarks/feedback_loop.py --data-root ../shared/data/movielens-100k --labels 1000 \\
        --features-cache /tmp/dml/features --json feedback_loop.json
    .venv/bin/python benchmarks/feedback_loop.py --data-root ../shared/data/movielens-100k --users 30 --labels 150
                                                     # a quick end-to-end check

Protocol
--------
1. All MovieLens ratings (the warm split's train + test files together). ``--users`` held-out users
   are drawn (seeded) among users with >= 40 ratings; each one's ratings are shuffled (seeded) into
   a *profile* (the first ``--profile-size`` items: what they "liked" in the app), a *label pool*
   (half of the rest) and an *eval set* (the other half).
2. Base model: the product's hybrid (``recsys_core.training.hybrid``: zero-shot content + EASE with
   side information) fitted in this process on every rating of the other users plus only the
   profile items of the held-out users. Its settings are chosen by ``select_config`` on a
   validation carve of that training data alone: a seeded ``--val-fraction`` of each other user's
   ratings is held out as targets (``--base-validation ratings``), or a seeded ``--val-fraction``
   of the other users keep only ``--profile-size`` ratings and the rest are their targets
   (``profiles``: the held-out users' situation). The held-out users' label pools and eval sets
   are never read. Saved with ``save_hybrid`` to ``<data-dir>/base``.
3. ``python app.py --catalog movielens-100k --model <data-dir>/base --auth-file users.csv`` runs as a
   subprocess, with three annotator accounts (ann1..ann3) and one admin; every call below goes
   through ``gradio_client`` with a login.
4. Before: ``/recommend(profile, k=20 + labelled budget)`` per held-out user; the items that user
   labels in step 5 are removed from the list and from the eval set, the list is cut at 20 and
   NDCG@20 against the eval set is computed with ``recsys_core.evaluation.metrics.evaluate_scores``.
5. Labelling: the annotators take the held-out users round-robin; per user
   ``/recommend(profile, k=--k-label)`` and ``/feedback(profile, item, like|dislike, request_id)`` per
   result: "like" when the item is in the user's label pool, else "dislike"; items of the user's eval
   set (which a real user would have liked) are skipped (default ``--eval-hits skip``; ``dislike``
   labels them "dislike" as the first runs did). Users are
   visited again (a larger k, already labelled items skipped) until ``--labels`` labels were stored.
   ``--labelling session`` (not the protocol's default, ``static``) shows each round the list the app
   would show after the user's earlier judgements: ``/recommend(profile + likes so far,
   disliked_ids=dislikes so far)``, the feedback stored for that profile.
6. Serving only: ``/recommend(profile + likes, disliked_ids=dislikes)`` per user with the base model
   still served (the likes after the profile, in labelling order). An app whose ``/recommend`` does
   not take ``disliked_ids`` yet gets the likes only (``dislikes_at_serving`` false in the JSON).
   Then a ceiling, an **oracle** and no product figure: ``/recommend(profile + the whole label pool)``
   (``oracle`` in the JSON): what reading labels at serving time could give if labelling had found
   every rating of the pool.
7. Fine-tune with the app's job: admin ``/finetune``, then ``/finetune_status`` until it ends
   (``python -m studio.finetune_job`` with its ``FinetuneConfig`` defaults; for a hybrid base it adds
   the labelled profiles as pseudo-users to the EASE solve and cross-validates the mix on the training
   labels; ``--finetune-epochs`` reaches the job through the app's own ``--finetune-epochs``). A candidate
   the gate rejected is promoted with ``/promote(version, override=True)``, so that the last two lists
   always come from the fine-tuned model; ``gate_passed``/``gate_reason`` say what the gate decided.
8. Fine-tune only: step 4's ``/recommend(profile)`` with the now-served candidate.
   After: step 6's ``/recommend(profile + likes, disliked_ids=dislikes)`` with the candidate.
   The app is stopped.

Every list is scored as in step 4: the profile, the labelled and the skipped items are removed from
the list and from the eval set, so the four figures are on the same eval items.

After labelling, ``<data-dir>/heldout_users.json`` holds every held-out user's profile, label pool,
eval set, labels and skipped items, so a checkpoint can be scored by hand on the same protocol
(:func:`ndcg_at_20`).

Output: one JSON object on stdout (logs on stderr) with ``labels``, ``ndcg_before`` (step 4),
``ndcg_serving_only`` (6), ``ndcg_finetune_only`` and ``ndcg_after`` (8), ``finetune_seconds``,
``ratio`` (after / before), ``ratio_serving_only`` and ``ratio_finetune_only`` (each over before),
``gate_passed``, ``gate_reason``, ``base_train_seconds``, ``candidate_version``, ``oracle`` and more detail.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    READY_TIMEOUT_S, REPO_ROOT, AppProcess, add_common_args, app_env, connect, doc_parser, emit, free_port,
    machine_facts, setup, write_users_csv,
)

log = logging.getLogger("benchmarks.feedback_loop")

MIN_RATINGS = 40  # held-out users need enough ratings for a profile, a label pool and an eval set
EVAL_K = 20
DEFAULT_FINETUNE_EPOCHS = 15  # recsys_core.training.finetune.FinetuneConfig.epochs (not imported: --help stays cheap)
ANNOTATORS = ("ann1", "ann2", "ann3")
ADMIN = "admin"
MAX_ROUNDS = 10
POLL_S = 2.0


def build_parser() -> argparse.ArgumentParser:
    p = doc_parser("benchmarks/feedback_loop.py", __doc__, "Protocol")
    p.add_argument("--data-root", type=Path, required=True,
                   help="the MovieLens-100k folder (items.csv, posters/, ratings.csv, splits/)")
    p.add_argument("--labels", type=int, default=1000, help="labels to store through /feedback before fine-tuning")
    p.add_argument("--users", type=int, default=150, help="held-out users (drawn among users with >= 40 ratings)")
    p.add_argument("--profile-size", type=int, default=10, help="profile items per held-out user (the /recommend input)")
    p.add_argument("--k-label", type=int, default=7,
                   help="recommendations each simulated user labels per round")
    p.add_argument("--labelling", choices=("static", "session"), default="static",
                   help="what each labelling round shows a simulated user: 'static' (the protocol's step 5) the "
                        "list for the profile alone, every round; 'session' the list the app would show after the "
                        "user's earlier judgements, /recommend(profile + likes so far, disliked_ids=dislikes so "
                        "far), the feedback stored for that profile (use a small --k-label, e.g. 3, so that each "
                        "user sees several rounds)")
    p.add_argument("--eval-hits", choices=("dislike", "skip"), default="skip",
                   help="what a simulated user does with a recommended item of their own eval set: skip it (no "
                        "label), or label it 'dislike' (only label-pool items are 'like'). skip is the default "
                        "because the user did rate those items: with 'dislike', 60%% of the dislikes of a run "
                        "(seed 0) were such items, i.e. wrong labels that teach the model to bury what the eval "
                        "set rewards")
    p.add_argument("--seed", type=int, default=0, help="user draw, rating shuffles, the base's validation carve")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="work folder: the app's data dir (database, features, models), the base checkpoint "
                        "and users.csv (default: a fresh temp dir, removed afterwards unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir")
    p.add_argument("--features-cache", type=Path, default=None,
                   help="a folder holding an existing MovieLens feature cache (e.g. an app's <data-dir>/features), "
                        "copied to <data-dir>/features; without it the features are extracted (minutes)")
    p.add_argument("--val-fraction", type=float, default=0.2,
                   help="share of the other users' ratings (--base-validation ratings) or of the other users "
                        "(profiles) held out to choose the base hybrid's settings")
    p.add_argument("--base-validation", choices=("ratings", "profiles"), default="ratings",
                   help="the base model's validation carve (protocol step 2)")
    p.add_argument("--dislike-weight", type=float, default=None,
                   help="the base's ZeroShotConfig.dislike_weight (how far a dislike pushes its neighbours down; "
                        "saved in the checkpoint, so the app serves it; default: the product's default)")
    p.add_argument("--finetune-epochs", type=int, default=DEFAULT_FINETUNE_EPOCHS,
                   help="epochs of the app's fine-tune job (the job's own default is 15; a hybrid base has none)")
    p.add_argument("--port", type=int, default=None, help="port of the started app (default: a free one)")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for the app's first page")
    p.add_argument("--finetune-timeout", type=float, default=7200.0, help="seconds to wait for the fine-tune job")
    add_common_args(p)
    return p


# -- data ---------------------------------------------------------------------------------------------
@dataclass
class HeldOutUser:
    user_id: str
    profile: list[str]
    pool: set[str]
    eval: set[str]
    labelled: dict[str, str] = field(default_factory=dict)  # item -> like/dislike, in labelling order
    skipped: set[str] = field(default_factory=set)  # eval items not labelled (--eval-hits skip)


def load_ratings(data_root: Path, item_ids: Sequence[str] | None = None):
    """Every MovieLens rating (warm split train + test, one per user and item); with ``item_ids``, only the
    ratings of those items (the catalog's)."""
    import pandas as pd

    from recsys_core.data.splits import load_split

    split = load_split(data_root, "warm")
    ratings = pd.concat([split.train, split.test], ignore_index=True)
    ratings = ratings.drop_duplicates(["user_id", "item_id"]).reset_index(drop=True)
    if item_ids is not None:
        ratings = ratings[ratings["item_id"].astype(str).isin(set(item_ids))].reset_index(drop=True)
    return ratings


def pick_users(ratings, n_users: int, profile_size: int, seed: int) -> list[HeldOutUser]:
    import numpy as np

    counts = ratings.groupby("user_id").size()
    eligible = sorted((str(u) for u, c in counts.items() if c >= max(MIN_RATINGS, profile_size + 4)), key=_id_key)
    if len(eligible) < n_users:
        raise SystemExit(f"only {len(eligible)} users have >= {MIN_RATINGS} ratings; --users {n_users} is too many")
    rng = np.random.default_rng(seed)
    chosen = sorted((eligible[i] for i in rng.choice(len(eligible), n_users, replace=False)), key=_id_key)
    by_user = {str(u): sorted(map(str, g["item_id"]), key=_id_key) for u, g in ratings.groupby("user_id")}
    users = []
    for user_id in chosen:
        items = [by_user[user_id][i] for i in rng.permutation(len(by_user[user_id]))]
        profile, rest = items[:profile_size], items[profile_size:]
        half = len(rest) // 2
        users.append(HeldOutUser(user_id, profile, set(rest[:half]), set(rest[half:])))
    return users


def _id_key(value: str):
    return (0, int(value), "") if str(value).isdigit() else (1, 0, str(value))


def base_frame(ratings, users: list[HeldOutUser]):
    """Every rating of the other users plus only the profile ratings of the held-out users."""
    held = {u.user_id for u in users}
    profile_pairs = {(u.user_id, i) for u in users for i in u.profile}
    keep = [(uid not in held) or ((uid, iid) in profile_pairs)
            for uid, iid in zip(ratings["user_id"].astype(str), ratings["item_id"].astype(str))]
    return ratings[keep].reset_index(drop=True)


def prepare_features(args: argparse.Namespace, data_dir: Path) -> None:
    target = data_dir / "features"
    if args.features_cache is None:
        return
    source = args.features_cache.expanduser().resolve()
    if not source.is_dir():
        raise SystemExit(f"--features-cache {source}: not a folder")
    if target.exists():
        log.info("%s exists; not copying %s", target, source)
        return
    # A copy, not a link: the app and the fine-tune job may write new cache files; the source stays untouched.
    log.info("copying the feature cache %s -> %s", source, target)
    shutil.copytree(source, target)


def validation_carve(frame, users: list[HeldOutUser], args: argparse.Namespace):
    """(train, targets): the base model's validation split, carved from its own training data ``frame``
    (:func:`base_frame`) and nothing else. Only the other users' ratings become targets: ``ratings``
    holds out a seeded ``--val-fraction`` of each one's ratings, ``profiles`` a seeded ``--val-fraction``
    of them keep ``--profile-size`` ratings and the rest are their targets. The held-out users' profile
    rows stay in train, and their label pools and eval sets are not in ``frame`` at all."""
    import numpy as np

    held = {u.user_id for u in users}
    users_col = frame["user_id"].astype(str)
    groups = sorted(((u, np.asarray(sorted(rows))) for u, rows in frame[~users_col.isin(held)].groupby(
        users_col[~users_col.isin(held)]).groups.items()), key=lambda g: _id_key(g[0]))
    rng = np.random.default_rng([args.seed, 2])  # its own stream: the held-out users' draw is unchanged
    targets: list[np.ndarray] = []
    if args.base_validation == "ratings":
        for _, rows in groups:
            n = min(int(round(args.val_fraction * len(rows))), len(rows) - 1)  # one rating at least stays a profile
            if n > 0:
                targets.append(rng.choice(rows, n, replace=False))
    else:
        eligible = [rows for _, rows in groups if len(rows) > args.profile_size]
        for g in rng.choice(len(eligible), int(round(args.val_fraction * len(eligible))), replace=False):
            targets.append(rng.permutation(eligible[g])[args.profile_size:])
    is_target = frame.index.isin(np.concatenate(targets) if targets else [])
    return frame[~is_target], frame[is_target]


def train_base(args: argparse.Namespace, frame, users: list[HeldOutUser], catalog, data_dir: Path
               ) -> tuple[Path, float, dict]:
    """The hybrid base model: settings chosen on :func:`validation_carve`, fitted on all of ``frame``."""
    from types import SimpleNamespace

    from recsys_core.config import ImageEncoderConfig, TextEncoderConfig, ZeroShotConfig
    from recsys_core.encoders.features import encode_catalog
    from recsys_core.model.checkpoint import fingerprint, save_hybrid
    from recsys_core.serving.zeroshot import ZeroShotModel
    from recsys_core.training.hybrid import catalog_genres, fit_hybrid, select_config, split_targets

    out = data_dir / "base"
    t0 = time.perf_counter()
    # The app's default encoders and cache folder, so the app reads the same vectors.
    features = encode_catalog(catalog, TextEncoderConfig(), ImageEncoderConfig(), data_dir / "features",
                              device=args.device).features
    features_s = time.perf_counter() - t0
    zs_config = ZeroShotConfig() if args.dislike_weight is None else ZeroShotConfig(dislike_weight=args.dislike_weight)
    zeroshot = ZeroShotModel(features, zs_config)
    started = time.perf_counter()
    train, targets = validation_carve(frame, users, args)
    log.info("base hybrid: %d interactions of %d users; choosing its settings on a %s carve (%d of them held out, "
             "%d users)", len(frame), frame.user_id.nunique(), args.base_validation, len(targets),
             targets.user_id.nunique())
    x, tests, _ = split_targets(SimpleNamespace(train=train, test=targets, candidate_items=None), catalog)
    selection = select_config(x, tests, zeroshot, catalog_genres(catalog), seed=args.seed,
                              label=f"feedback-loop base validation ({args.base_validation}, "
                                    f"{args.val_fraction:g}, seed {args.seed})")
    fitted = fit_hybrid(frame, catalog, zeroshot, selection.config, selection=selection, seed=args.seed,
                        started=started)
    seconds = time.perf_counter() - started
    save_hybrid(out, config=fitted.config, zeroshot=zs_config.to_dict(), collab=fitted.collab, item_ids=catalog.ids,
                frame=frame, metrics={"best_val_ndcg@20": selection.ndcg, "protocol": "feedback-loop base",
                                      "selection": list(selection.table), "train_seconds": seconds},
                fingerprint_info=fingerprint(frame, catalog), encoders={"text": "minilm", "image": "efficientnet-lite0"})
    config = fitted.config
    log.info("base model saved to %s (validation NDCG@20 %.4f, content share %.2f, lambda %g, %.0f s fit, "
             "%.0f s features)", out, selection.ndcg, config.content_share, config.lambda_, seconds, features_s)
    return out, seconds, {"kind": "hybrid", "val_ndcg@20": round(selection.ndcg, 4),
                          "validation": {"carve": args.base_validation, "fraction": args.val_fraction,
                                         "targets": int(len(targets)), "users": int(targets.user_id.nunique())},
                          "config": {k: config.to_dict()[k] for k in ("lambda_", "side_content", "side_genre",
                                                                     "content_share", "prior_weight")},
                          "dislike_weight": zs_config.dislike_weight, "interactions": int(len(frame)),
                          "features_seconds": round(features_s, 1)}


# -- the app ------------------------------------------------------------------------------------------
def app_cmd(args: argparse.Namespace, data_dir: Path, base: Path, users_csv: Path, port: int) -> list[str]:
    app_args = ["--catalog", "movielens-100k", "--data-root", str(args.data_root), "--data-dir", str(data_dir),
                "--model", str(base), "--auth-file", str(users_csv), "--port", str(port), "--host", "127.0.0.1",
                "--device", args.device,
                # Simulated annotators label far faster than people: the per-person label limit is off.
                "--feedback-rate-limit", "0",
                # The app hands it to its fine-tune jobs (studio.finetune_job.JobOptions).
                "--finetune-epochs", str(args.finetune_epochs)]
    return [sys.executable, str(REPO_ROOT / "app.py"), *app_args]


def recommend(client, liked: list[str], k: int, disliked: list[str] | None = None) -> list[str]:
    """``/recommend``; ``disliked`` goes in ``disliked_ids`` (None: the call has no such argument)."""
    extra = {} if disliked is None else {"disliked_ids": list(disliked)}
    return [r["item_id"] for r in client.predict(list(liked), int(k), api_name="/recommend", **extra)]


def takes_dislikes(client) -> bool:
    """Whether the app's ``/recommend`` has a ``disliked_ids`` argument (apps before commit 64029fb have none)."""
    endpoint = client.view_api(print_info=False, return_format="dict")["named_endpoints"].get("/recommend", {})
    return any(p.get("parameter_name") == "disliked_ids" for p in endpoint.get("parameters", []))


# -- measuring ----------------------------------------------------------------------------------------
def likes_of(user: HeldOutUser) -> list[str]:
    return [item for item, verdict in user.labelled.items() if verdict == "like"]


def dislikes_of(user: HeldOutUser) -> list[str]:
    return [item for item, verdict in user.labelled.items() if verdict == "dislike"]


def profile_of(user: HeldOutUser) -> list[str]:
    return user.profile


def profile_and_likes(user: HeldOutUser) -> list[str]:
    """What the user liked at serving time after labelling: the profile, then the likes in labelling order."""
    return [*user.profile, *likes_of(user)]


def profile_and_pool(user: HeldOutUser) -> list[str]:
    """**Oracle**: the profile and the user's whole label pool (every one of those ratings, found by labelling or not)."""
    return [*user.profile, *sorted(user.pool, key=_id_key)]


def k_after(user: HeldOutUser) -> int:
    """A list long enough that 20 remain once the user's labelled and skipped items are cut from it."""
    return min(100, EVAL_K + len(user.labelled) + len(user.skipped))


def fetch_lists(client, users: list[HeldOutUser], k_of, desc: str, liked_of=profile_of,
                disliked_of=None) -> dict[str, list[str]]:
    """Each user's ``/recommend(liked_of(user), k_of(user))`` list, with ``disliked_ids=disliked_of(user)``
    when ``disliked_of`` is given."""
    from tqdm.auto import tqdm

    return {u.user_id: recommend(client, liked_of(u), k_of(u), disliked_of(u) if disliked_of else None)
            for u in tqdm(users, desc=desc, unit="user")}


def ndcg_at_20(lists: dict[str, list[str]], users: list[HeldOutUser], item_ids: list[str]) -> tuple[float, int]:
    """NDCG@20 with the product's metric code: each list becomes a score row (earlier = higher), the
    profile and the labelled (and skipped) items are excluded from both the list and the eval set."""
    import numpy as np

    from recsys_core.evaluation.metrics import evaluate_scores

    index = {item: i for i, item in enumerate(item_ids)}
    scores = np.full((len(users), len(item_ids)), -np.inf)
    excluded = np.zeros_like(scores, dtype=bool)
    tests = []
    for row, u in enumerate(users):
        removed = set(u.profile) | set(u.labelled) | u.skipped
        excluded[row, [index[i] for i in removed]] = True
        ranked = [i for i in lists[u.user_id] if i not in removed][:EVAL_K]
        if len(ranked) < EVAL_K:
            raise RuntimeError(f"user {u.user_id}: only {len(ranked)} recommendations left after removing the "
                               "labelled items; the fetched list was too short")
        scores[row, [index[i] for i in ranked]] = -np.arange(len(ranked), dtype=float)
        tests.append([index[i] for i in u.eval])
    metrics = evaluate_scores(scores, excluded, tests, [EVAL_K], tie_seed=None)
    return float(metrics[f"ndcg@{EVAL_K}"]), int(metrics["users"])


def label(clients: list, users: list[HeldOutUser], args: argparse.Namespace) -> dict[str, int]:
    """Round-robin labelling until ``--labels`` labels are stored; returns counts."""
    from tqdm.auto import tqdm

    stored = likes = dislikes = duplicates = skipped = rounds = 0
    bar = tqdm(total=args.labels, desc="labelling", unit="label")
    for round_no in range(MAX_ROUNDS):
        if stored >= args.labels:
            break
        rounds += 1
        progressed = False
        for n, u in enumerate(users):
            if stored >= args.labels:
                break
            client = clients[n % len(clients)]
            k = min(100, args.k_label + len(u.labelled) + len(u.skipped))
            # session: the list after the user's earlier judgements, as the Recommend tab shows it
            liked = profile_and_likes(u) if args.labelling == "session" else u.profile
            disliked = dislikes_of(u) if args.labelling == "session" else None
            new = [i for i in recommend(client, liked, k, disliked) if i not in u.labelled and i not in u.skipped]
            for item in new[: args.k_label]:
                if stored >= args.labels:
                    break
                if item in u.eval and args.eval_hits == "skip":
                    u.skipped.add(item)
                    skipped += 1
                    continue
                verdict = "like" if item in u.pool else "dislike"
                request_id = hashlib.sha256(f"feedback-loop|{args.seed}|{u.user_id}|{item}".encode()).hexdigest()[:32]
                result = client.predict(list(liked), item, verdict, request_id, api_name="/feedback")
                u.labelled[item] = verdict
                progressed = True
                if result.get("stored"):
                    stored += 1
                    likes += verdict == "like"
                    dislikes += verdict == "dislike"
                    bar.update(1)
                else:
                    duplicates += 1
            bar.set_postfix(round=round_no + 1, likes=likes)
        if not progressed:
            log.warning("round %d stored nothing new; stopping at %d labels", round_no + 1, stored)
            break
    bar.close()
    if stored < args.labels:
        log.warning("stored %d labels, fewer than --labels %d", stored, args.labels)
    return {"stored": stored, "likes": likes, "dislikes": dislikes, "not_stored": duplicates,
            "eval_hits_skipped": skipped, "rounds": rounds}


def run_finetune(admin, timeout_s: float) -> dict[str, Any]:
    started = admin.predict("", api_name="/finetune")
    log.info("fine-tune job started: %s", started)
    t0 = time.perf_counter()
    last = ""
    while True:
        status = admin.predict(api_name="/finetune_status")
        if status["state"] in ("succeeded", "failed"):
            log.info("fine-tune job %s: %s after %.0f s (%s)", status["job_id"], status["state"], status["seconds"],
                     status["message"])
            return status
        text = f"{100 * status['fraction']:.0f}% {status['message']}"
        if text != last:
            log.info("fine-tune: %s", text)
            last = text
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"the fine-tune job did not finish within {timeout_s:.0f} s (last: {text})")
        time.sleep(POLL_S)


def candidate_metrics(data_dir: Path, job_id: str) -> dict[str, Any]:
    """Held-out label metrics and history the job wrote next to the candidate (for the report)."""
    from recsys_core.model.checkpoint import read_metrics

    candidate = data_dir / "models" / f"candidate-{job_id}"
    try:
        metrics = read_metrics(candidate)
    except (OSError, ValueError):
        return {}
    out = {k: metrics.get(k) for k in ("heldout_base", "heldout_candidate", "n_train_labels", "n_heldout_labels",
                                       "finetune", "train_seconds")}
    out["epochs_run"] = len(metrics.get("history", []))
    out["history"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()}
                      for h in metrics.get("history", [])]
    out["path"] = str(candidate)
    return out


def write_users_json(path: Path, users: list[HeldOutUser]) -> None:
    """The held-out users as labelled (profile, eval set, labels, skipped items): enough to score a
    checkpoint by hand on the same protocol (:func:`ndcg_at_20`) without rerunning the benchmark."""
    path.write_text(json.dumps([{"user_id": u.user_id, "profile": u.profile, "pool": sorted(u.pool, key=_id_key),
                                 "eval": sorted(u.eval, key=_id_key), "labelled": u.labelled,
                                 "skipped": sorted(u.skipped, key=_id_key)} for u in users]))


def read_users_json(path: Path) -> list[HeldOutUser]:
    """The held-out users :func:`write_users_json` wrote, in the same order."""
    return [HeldOutUser(str(u["user_id"]), list(u["profile"]), set(u["pool"]), set(u["eval"]), dict(u["labelled"]),
                        set(u["skipped"])) for u in json.loads(Path(path).read_text())]


# -- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.labels < 1 or args.users < 1 or args.k_label < 1 or args.profile_size < 1:
        raise SystemExit("--labels, --users, --k-label and --profile-size must be >= 1")
    if args.finetune_epochs < 1:
        raise SystemExit("--finetune-epochs must be >= 1")
    if not 0 < args.val_fraction < 1:
        raise SystemExit(f"--val-fraction is {args.val_fraction}; allowed 0 < f < 1")
    args.data_root = args.data_root.expanduser().resolve()
    setup(args)
    wall0 = time.perf_counter()
    temp = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="bench-feedback-")) if temp else args.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    log.info("work folder: %s", data_dir)
    try:
        result = run(args, data_dir)
    except Exception as exc:
        log.error("benchmark failed: %s: %s (work folder kept: %s)", type(exc).__name__, exc, data_dir)
        return 1
    result["wall_seconds"] = round(time.perf_counter() - wall0, 1)
    result["data_dir"] = str(data_dir) if not temp or args.keep else None
    emit(result, args.json)
    if temp and not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    return 0


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    from recsys_core.data.adapters import load_movielens_100k

    catalog = load_movielens_100k(args.data_root)
    item_ids = list(catalog.ids)
    ratings = load_ratings(args.data_root, item_ids)
    users = pick_users(ratings, args.users, args.profile_size, args.seed)
    log.info("%d held-out users; profile %d, label pool %d, eval %d items on average", len(users), args.profile_size,
             round(sum(len(u.pool) for u in users) / len(users)), round(sum(len(u.eval) for u in users) / len(users)))
    if sum(min(len(u.pool) + len(u.eval), 100 - EVAL_K) for u in users) < args.labels:
        log.warning("--labels %d may be more than these users can give", args.labels)

    prepare_features(args, data_dir)
    base, base_seconds, base_info = train_base(args, base_frame(ratings, users), users, catalog, data_dir)

    passwords = write_users_csv(data_dir / "users.csv", {**{name: "annotator" for name in ANNOTATORS}, ADMIN: "admin"})
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    app = AppProcess(app_cmd(args, data_dir, base, data_dir / "users.csv", port), data_dir / "app.log",
                     app_env(args.threads))
    try:
        app.start()
        ready_s = app.wait_ready(url, timeout_s=args.timeout)
        log.info("app ready after %.1f s", ready_s)
        admin = connect(url, (ADMIN, passwords[ADMIN]))
        annotators = [connect(url, (name, passwords[name])) for name in ANNOTATORS]
        served_base = admin.predict(api_name="/finetune_status")["serving"]
        dislikes = takes_dislikes(annotators[0])
        log.info("serving %s; /recommend %s disliked_ids", served_base, "takes" if dislikes else "does NOT take")

        # Before: lists long enough that the items labelled later can be cut and 20 remain.
        planned_rounds = max(1, math.ceil(args.labels / (len(users) * args.k_label)))
        budget = args.k_label * planned_rounds
        before = fetch_lists(annotators[0], users, lambda u: min(100, EVAL_K + budget), "before")

        t0 = time.perf_counter()
        counts = label(annotators, users, args)
        label_seconds = time.perf_counter() - t0
        short = [u for u in users if len(u.labelled) + len(u.skipped) > budget]
        if short:  # more rounds than planned: the base model is still served, fetch those lists again
            before.update(fetch_lists(annotators[0], short, k_after, "before (again)"))
        ndcg_before, n_eval = ndcg_at_20(before, users, item_ids)
        write_users_json(data_dir / "heldout_users.json", users)
        log.info("NDCG@20 before: %.4f over %d users", ndcg_before, n_eval)
        with_dislikes = dislikes_of if dislikes else None
        serving_only = fetch_lists(annotators[0], users, k_after, "serving only", profile_and_likes, with_dislikes)
        ndcg_serving, _ = ndcg_at_20(serving_only, users, item_ids)
        log.info("NDCG@20 serving only (base model, profile + likes%s): %.4f", " + dislikes" if dislikes else "",
                 ndcg_serving)
        # The ceiling of reading labels at serving time: every rating of the label pool joins the profile.
        oracle_pool = fetch_lists(annotators[0], users, k_after, "oracle: whole pool", profile_and_pool)
        ndcg_oracle_pool, _ = ndcg_at_20(oracle_pool, users, item_ids)
        log.info("NDCG@20 oracle (base model, profile + whole label pool): %.4f", ndcg_oracle_pool)

        status = run_finetune(admin, args.finetune_timeout)
        if status["state"] != "succeeded":
            raise RuntimeError(f"the fine-tune job failed: {status['error']}")
        version = status["version"]
        if status["serving"] != version:
            log.info("gate: %s; promoting %s with override", status["gate_reason"], version)
            promoted = admin.predict(version, True, api_name="/promote")
            if promoted["serving"] != version:
                raise RuntimeError(f"promoted {version} but the app serves {promoted['serving']}")
        finetune_only = fetch_lists(annotators[0], users, k_after, "fine-tune only")
        ndcg_finetune, _ = ndcg_at_20(finetune_only, users, item_ids)
        after = fetch_lists(annotators[0], users, k_after, "after", profile_and_likes, with_dislikes)
        ndcg_after, _ = ndcg_at_20(after, users, item_ids)
        log.info("NDCG@20 before %.4f, serving only %.4f, fine-tune only %.4f, after %.4f", ndcg_before, ndcg_serving,
                 ndcg_finetune, ndcg_after)
        for client in (admin, *annotators):
            if hasattr(client, "close"):
                client.close()
    except BaseException:
        log.error("last lines of %s:\n%s", app.log_path, app.log_tail())
        raise
    finally:
        app.stop()

    changed = sum(before[u.user_id][:EVAL_K] != after[u.user_id][:EVAL_K] for u in users)

    def over_before(value: float) -> float | None:
        return round(value / ndcg_before, 4) if ndcg_before > 0 else None

    return {
        "benchmark": "feedback_loop",
        "labels": counts["stored"],
        "ndcg_before": round(ndcg_before, 5),
        "ndcg_after": round(ndcg_after, 5),
        "finetune_seconds": round(float(status["seconds"]), 1),
        "ratio": over_before(ndcg_after),
        "ndcg_serving_only": round(ndcg_serving, 5),
        "ndcg_finetune_only": round(ndcg_finetune, 5),
        "ratio_serving_only": over_before(ndcg_serving),
        "ratio_finetune_only": over_before(ndcg_finetune),
        "dislikes_at_serving": dislikes,
        "oracle": {"ndcg_pool_at_serving": round(ndcg_oracle_pool, 5), "ratio": over_before(ndcg_oracle_pool),
                   "what": "base model, /recommend(profile + the user's whole label pool): not a product figure"},
        "users": len(users),
        "users_evaluated": n_eval,
        "gate_passed": status["gate_passed"],
        "gate_reason": status["gate_reason"],
        "base_train_seconds": round(base_seconds, 1),
        "candidate_version": version,
        "base_version": served_base,
        "label_counts": counts,
        "labelling_seconds": round(label_seconds, 1),
        "lists_changed": changed,
        "base": base_info,
        "candidate": candidate_metrics(data_dir, status["job_id"]),
        "settings": {"profile_size": args.profile_size, "k_label": args.k_label, "eval_hits": args.eval_hits,
                     "labelling": args.labelling,
                     "seed": args.seed, "base_validation": args.base_validation, "val_fraction": args.val_fraction,
                     "finetune_epochs": args.finetune_epochs,
                     "eval_k": EVAL_K, "min_ratings": MIN_RATINGS},
        "app_ready_s": round(ready_s, 1),
        "machine": machine_facts(args),
    }


if __name__ == "__main__":
    sys.exit(main())
