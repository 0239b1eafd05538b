"""Does the product's feedback loop improve recommendations? Simulated annotators label MovieLens
users' recommendations through the app's API, the app's own fine-tune job trains on the labels, and
NDCG@20 on the users' unseen ratings is measured before and after.

    .venv/bin/python benchmarks/feedback_loop.py --data-root ../shared/data/movielens-100k --labels 1000 \\
        --features-cache /tmp/dml/features --json feedback_loop.json
    .venv/bin/python benchmarks/feedback_loop.py --data-root ../shared/data/movielens-100k --users 30 --labels 150 \\
        --base-epochs 3 --finetune-epochs 3          # a quick end-to-end check

Protocol
--------
1. All MovieLens ratings (the warm split's train + test files together). ``--users`` held-out users
   are drawn (seeded) among users with >= 40 ratings; each one's ratings are shuffled (seeded) into
   a *profile* (the first ``--profile-size`` items: what they "liked" in the app), a *label pool*
   (half of the rest) and an *eval set* (the other half).
2. Base model: the fusion model trained in this process (``recsys_core.training.loop.fit``, frozen encoders,
   ``--base-epochs``) on every rating of the other users plus only the profile items of the
   held-out users, saved with ``save_checkpoint`` to ``<data-dir>/base``.
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
6. Fine-tune with the app's job: admin ``/finetune``, then ``/finetune_status`` until it ends
   (``python -m studio.finetune_job`` with its ``FinetuneConfig`` defaults; ``--finetune-epochs``
   reaches the job as its ``JobOptions(epochs=N)`` through the app's own ``--finetune-epochs``). A candidate the gate
   rejected is promoted with ``/promote(version, override=True)``, so that "after" always measures
   the fine-tuned model; ``gate_passed``/``gate_reason`` say what the gate decided.
7. After: step 4 again with the now-served candidate. The app is stopped.

After labelling, ``<data-dir>/heldout_users.json`` holds every held-out user's profile, label pool,
eval set, labels and skipped items, so a checkpoint can be scored by hand on the same protocol
(:func:`ndcg_at_20`).

Output: one JSON object on stdout (logs on stderr) with ``labels``, ``ndcg_before``, ``ndcg_after``,
``finetune_seconds``, ``ratio`` (after / before), ``gate_passed``, ``gate_reason``,
``base_train_seconds``, ``candidate_version`` and more detail.
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
    p.add_argument("--eval-hits", choices=("dislike", "skip"), default="skip",
                   help="what a simulated user does with a recommended item of their own eval set: skip it (no "
                        "label), or label it 'dislike' (only label-pool items are 'like'). skip is the default "
                        "because the user did rate those items: with 'dislike', 60%% of the dislikes of a run "
                        "(seed 0) were such items, i.e. wrong labels that teach the model to bury what the eval "
                        "set rewards")
    p.add_argument("--seed", type=int, default=0, help="user draw, rating shuffles, base training")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="work folder: the app's data dir (database, features, models), the base checkpoint "
                        "and users.csv (default: a fresh temp dir, removed afterwards unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir")
    p.add_argument("--features-cache", type=Path, default=None,
                   help="a folder holding an existing MovieLens feature cache (e.g. an app's <data-dir>/features), "
                        "copied to <data-dir>/features; without it the features are extracted (minutes)")
    p.add_argument("--base-epochs", type=int, default=20, help="epochs of the base model (in this process)")
    p.add_argument("--finetune-epochs", type=int, default=DEFAULT_FINETUNE_EPOCHS,
                   help="epochs of the app's fine-tune job (the job's own default is 15)")
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


def train_base(args: argparse.Namespace, frame, data_dir: Path) -> tuple[Path, float, dict]:
    from types import SimpleNamespace

    from recsys_core.model.checkpoint import fingerprint, save_checkpoint
    from recsys_core.training.config import TrainConfig
    from recsys_core.training.loop import fit_for_split

    out = data_dir / "base"
    log.info("training the base model: %d interactions, %d users, %d epochs", len(frame), frame.user_id.nunique(),
             args.base_epochs)
    t0 = time.perf_counter()
    trained, catalog = fit_for_split(SimpleNamespace(train=frame), args.data_root, data_dir,
                                     train=TrainConfig(epochs=args.base_epochs, seed=args.seed, device=args.device),
                                     progress=True)
    seconds = time.perf_counter() - t0
    best = max(h["val_ndcg@20"] for h in trained.history)
    save_checkpoint(trained, out, metrics={"best_val_ndcg@20": best, "protocol": "feedback-loop base"},
                    fingerprint_info=fingerprint(frame, catalog),
                    encoders={"text": "minilm", "image": "efficientnet-lite0"})
    log.info("base model saved to %s (best val NDCG@20 %.4f, %.0f s training, %.0f s with features)", out, best,
             trained.seconds, seconds)
    return out, trained.seconds, {"best_val_ndcg@20": round(best, 4), "epochs_run": len(trained.history),
                                  "interactions": int(len(frame))}


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


def recommend(client, profile: list[str], k: int) -> list[str]:
    return [r["item_id"] for r in client.predict(profile, int(k), api_name="/recommend")]


# -- measuring ----------------------------------------------------------------------------------------
def fetch_lists(client, users: list[HeldOutUser], k_of, desc: str) -> dict[str, list[str]]:
    from tqdm.auto import tqdm

    return {u.user_id: recommend(client, u.profile, k_of(u)) for u in tqdm(users, desc=desc, unit="user")}


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
            new = [i for i in recommend(client, u.profile, k) if i not in u.labelled and i not in u.skipped]
            for item in new[: args.k_label]:
                if stored >= args.labels:
                    break
                if item in u.eval and args.eval_hits == "skip":
                    u.skipped.add(item)
                    skipped += 1
                    continue
                verdict = "like" if item in u.pool else "dislike"
                request_id = hashlib.sha256(f"feedback-loop|{args.seed}|{u.user_id}|{item}".encode()).hexdigest()[:32]
                result = client.predict(u.profile, item, verdict, request_id, api_name="/feedback")
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
    if args.base_epochs < 1 or args.finetune_epochs < 1:
        raise SystemExit("--base-epochs and --finetune-epochs must be >= 1")
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
    base, base_seconds, base_info = train_base(args, base_frame(ratings, users), data_dir)

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
        log.info("serving %s", served_base)

        # Before: lists long enough that the items labelled later can be cut and 20 remain.
        planned_rounds = max(1, math.ceil(args.labels / (len(users) * args.k_label)))
        budget = args.k_label * planned_rounds
        before = fetch_lists(annotators[0], users, lambda u: min(100, EVAL_K + budget), "before")

        t0 = time.perf_counter()
        counts = label(annotators, users, args)
        label_seconds = time.perf_counter() - t0
        short = [u for u in users if len(u.labelled) + len(u.skipped) > budget]
        if short:  # more rounds than planned: the base model is still served, fetch those lists again
            before.update(fetch_lists(annotators[0], short,
                                      lambda u: min(100, EVAL_K + len(u.labelled) + len(u.skipped)), "before (again)"))
        ndcg_before, n_eval = ndcg_at_20(before, users, item_ids)
        write_users_json(data_dir / "heldout_users.json", users)
        log.info("NDCG@20 before: %.4f over %d users", ndcg_before, n_eval)

        status = run_finetune(admin, args.finetune_timeout)
        if status["state"] != "succeeded":
            raise RuntimeError(f"the fine-tune job failed: {status['error']}")
        version = status["version"]
        if status["serving"] != version:
            log.info("gate: %s; promoting %s with override", status["gate_reason"], version)
            promoted = admin.predict(version, True, api_name="/promote")
            if promoted["serving"] != version:
                raise RuntimeError(f"promoted {version} but the app serves {promoted['serving']}")
        after = fetch_lists(annotators[0], users,
                            lambda u: min(100, EVAL_K + len(u.labelled) + len(u.skipped)), "after")
        ndcg_after, _ = ndcg_at_20(after, users, item_ids)
        log.info("NDCG@20 after: %.4f (before %.4f)", ndcg_after, ndcg_before)
        for client in (admin, *annotators):
            if hasattr(client, "close"):
                client.close()
    except BaseException:
        log.error("last lines of %s:\n%s", app.log_path, app.log_tail())
        raise
    finally:
        app.stop()

    changed = sum(before[u.user_id][:EVAL_K] != after[u.user_id][:EVAL_K] for u in users)
    return {
        "benchmark": "feedback_loop",
        "labels": counts["stored"],
        "ndcg_before": round(ndcg_before, 5),
        "ndcg_after": round(ndcg_after, 5),
        "finetune_seconds": round(float(status["seconds"]), 1),
        "ratio": round(ndcg_after / ndcg_before, 4) if ndcg_before > 0 else None,
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
                     "seed": args.seed, "base_epochs": args.base_epochs, "finetune_epochs": args.finetune_epochs,
                     "eval_k": EVAL_K, "min_ratings": MIN_RATINGS},
        "app_ready_s": round(ready_s, 1),
        "machine": machine_facts(args),
    }


if __name__ == "__main__":
    sys.exit(main())
