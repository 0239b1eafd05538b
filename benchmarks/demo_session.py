"""A scripted labelling session on the demo catalog, then the app's own fine-tune and gate: does a
real session of three annotators give a candidate that passes the gate and ranks held-out likes
better than the zero-shot model?

    .venv/bin/python benchmarks/demo_session.py --json demo_session.json
    .venv/bin/python benchmarks/demo_session.py --features-cache data/features --data-dir /tmp/demo-session
    .venv/bin/python benchmarks/demo_session.py --text-encoder tiny-random --image-encoder tiny-random  # smoke test

Protocol
--------
1. ``python app.py --catalog demo --auth-file users.csv`` runs as a subprocess with three annotator
   accounts (ann1..ann3) and one admin (``admin``); every call below goes through ``gradio_client``
   with a login. It serves the zero-shot model (no ``--model``).
2. Before: ``/recommend(--show-profile, k=10)``, the list of one profile fixed in advance (the
   README's board-game profile), to show in the closing note.
3. The admin creates a binary (like/dislike) campaign with ``/campaign``: ``--profiles`` profiles (the
   campaign flow draws each from one genre), each with ``--per-profile`` of the served model's
   recommendations, ``--random-per-profile`` random items and ``--controls`` control items (one of
   the profile's own items), each task for ``--overlap`` annotators. The defaults are ``/campaign``'s
   own except ``--overlap 1`` and ``--profiles 19``: 19 x 8 = 152 tasks, about 50 per annotator. With
   the default overlap of 3, 50 tasks each would cover 6 profiles, and the gate, which holds out 20%
   of the profiles, would judge the candidate on 2.
4. The three annotators take turns: each asks ``/label_next`` for a task and answers it with
   ``/label_answer`` until no task is left for anyone. The rule each follows, read from the task
   card (the genres ``/item`` returns for the profile's items and the item to judge), never from a
   model: **like the item when it shares a genre with at least one of the profile's items,
   otherwise dislike it** (an item without genres is a dislike). Each annotator answers the opposite
   of the rule on ``--noise`` of the tasks (10%, seeded per annotator and ``--seed``), as a person who
   misreads a card now and then would. This rule is also the campaign's guidelines text.
5. The admin starts ``/finetune`` on the campaign, polls ``/finetune_status`` until it ends, and reads
   the gate's verdict and the held-out label metrics the job wrote beside the candidate
   (``<data dir>/models/candidate-<job>/metrics.json``): held-out likes NDCG@20 (each held-out
   profile's likes when the whole catalog is ranked) of the zero-shot model (base) and of the
   candidate, and their ratio. The app promotes a candidate that passes the gate.
6. After: the same ``/recommend`` as in step 2, from the promoted candidate. A rejected candidate is
   promoted with ``/promote(version, override=True)`` only to show its list (``promoted_with_override``
   says so); the gate's verdict is reported as it was. The app is stopped.

Output: one JSON object on stdout (logs on stderr) with ``labels`` (judgements stored),
``n_train``/``n_heldout`` (aggregated labels the job trained and gated on), ``gate_passed``,
``gate_reason``, ``heldout_likes_ndcg@20`` (base, candidate, ratio, the 1.05x target and whether it
was met), ``finetune_seconds``, ``selection`` (the settings the fine-tune chose on the training labels),
``profile`` (its top 10 before and after, with genres and whether the annotators' rule likes each
item) and more detail.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    READY_TIMEOUT_S, REPO_ROOT, AppProcess, add_app_args, add_common_args, app_argv, app_env, connect, doc_parser,
    emit, free_port, machine_facts, setup, write_users_csv,
)

log = logging.getLogger("benchmarks.demo_session")

ANNOTATORS = ("ann1", "ann2", "ann3")
ADMIN = "admin"
CAMPAIGN = "demo-session"
TARGET_RATIO = 1.05  # issue 14: held-out likes NDCG@20 of the candidate >= 1.05x the zero-shot model's
SHOW_K = 10
POLL_S = 2.0
# The README's board-game profile (its "Zero-shot quality" paragraph): fixed before any run, not picked by result.
SHOW_PROFILE = "org.gnome.Mahjongg,org.kde.kmahjongg,pychess,org.gnome.Reversi"
GUIDELINES = """**How to judge.** Someone liked the games in the profile. Would they like the game on the card?

- **Like** when the game shares at least one genre with at least one of the profile's games.
- **Dislike** otherwise, and when the game has no genre.
"""


def build_parser() -> argparse.ArgumentParser:
    p = doc_parser("benchmarks/demo_session.py", __doc__, "Protocol")
    p.add_argument("--profiles", type=int, default=19, help="campaign profiles (/campaign profiles)")
    p.add_argument("--per-profile", type=int, default=5, help="recommendation tasks per profile (/campaign's default)")
    p.add_argument("--random-per-profile", type=int, default=2, help="random-item tasks per profile (/campaign's default)")
    p.add_argument("--controls", type=int, default=1, help="control tasks per profile (/campaign's default)")
    p.add_argument("--overlap", type=int, default=1, help="annotators per task (/campaign's default is 3; see step 3)")
    p.add_argument("--noise", type=float, default=0.1,
                   help="share of tasks on which each annotator answers against the rule (seeded)")
    p.add_argument("--seed", type=int, default=0, help="seeds each annotator's noise")
    p.add_argument("--show-profile", default=SHOW_PROFILE,
                   help="comma-separated item ids of the profile whose top 10 is shown before and after")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the app's data dir (database, features, models, users.csv; default: a fresh temp dir, "
                        "removed afterwards unless --keep)")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir")
    p.add_argument("--features-cache", type=Path, default=None,
                   help="a folder holding the catalog's feature cache (an app's <data-dir>/features), copied to "
                        "<data-dir>/features; without it the app extracts the features first (about 25 s on 2 CPUs)")
    p.add_argument("--port", type=int, default=None, help="port of the started app (default: a free one)")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for the app to be ready")
    p.add_argument("--finetune-timeout", type=float, default=1800.0, help="seconds to wait for the fine-tune job")
    add_app_args(p)
    add_common_args(p)
    return p


# -- the annotators -----------------------------------------------------------------------------------
@dataclass
class Annotator:
    """A scripted annotator: the genre rule of the module doc, answered against it on ``noise`` of the tasks."""

    name: str
    client: Any
    rng: random.Random
    noise: float
    answered: int = 0
    likes: int = 0
    against_rule: int = 0
    done: bool = False


@dataclass
class Genres:
    """Item genres as the task card shows them (``/item``), fetched once per item."""

    client: Any
    known: dict[str, frozenset[str]] = field(default_factory=dict)

    def of(self, item_id: str) -> frozenset[str]:
        if item_id not in self.known:
            self.known[item_id] = frozenset(self.client.predict(item_id, api_name="/item")["genres"] or ())
        return self.known[item_id]


def rule_likes(genres: Genres, profile: list[str], item_id: str) -> bool:
    """The annotators' rule: the item shares a genre with at least one of the profile's items."""
    wanted = frozenset().union(*(genres.of(i) for i in profile))
    return bool(wanted & genres.of(item_id))


def label_campaign(annotators: list[Annotator], genres: Genres, seed: int) -> dict[str, Any]:
    """Round-robin: each annotator in turn takes one task and answers it, until nobody gets one."""
    from tqdm.auto import tqdm

    bar = tqdm(desc="labelling", unit="task")
    while not all(a.done for a in annotators):
        for a in annotators:
            if a.done:
                continue
            task = a.client.predict(CAMPAIGN, api_name="/label_next")
            if not task:
                a.done = True
                continue
            like = rule_likes(genres, list(task["context_ids"]), task["item_id"])
            if a.rng.random() < a.noise:
                like, a.against_rule = not like, a.against_rule + 1
            request_id = hashlib.sha256(f"demo-session|{seed}|{a.name}|{task['task_id']}".encode()).hexdigest()[:32]
            result = a.client.predict(int(task["task_id"]), "like" if like else "dislike", request_id,
                                      api_name="/label_answer")
            if not result.get("stored"):
                raise RuntimeError(f"{a.name}: task {task['task_id']} was not stored: {result}")
            a.answered += 1
            a.likes += like
            bar.update(1)
    bar.close()
    return {a.name: {"answered": a.answered, "likes": a.likes, "against_rule": a.against_rule} for a in annotators}


# -- the admin ----------------------------------------------------------------------------------------
def run_finetune(admin, timeout_s: float) -> dict[str, Any]:
    started = admin.predict(CAMPAIGN, api_name="/finetune")
    log.info("fine-tune job started: %s", started)
    t0, last = time.perf_counter(), ""
    while True:
        status = admin.predict(api_name="/finetune_status")
        if status["state"] in ("succeeded", "failed"):
            log.info("fine-tune job %s: %s after %.1f s (%s)", status["job_id"], status["state"], status["seconds"],
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
    """What the job wrote beside the candidate: held-out metrics, label counts, the selection table."""
    path = data_dir / "models" / f"candidate-{job_id}" / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("could not read %s: %s", path, exc)
        return {}


def top_list(client, profile: list[str], genres: Genres) -> list[dict[str, Any]]:
    rows = client.predict(profile, SHOW_K, api_name="/recommend")
    return [{"rank": r["rank"], "item_id": r["item_id"], "title": r["title"], "score": round(float(r["score"]), 4),
             "genres": sorted(genres.of(r["item_id"])), "rule_likes": rule_likes(genres, profile, r["item_id"])}
            for r in rows]


def _ratio(candidate: float | None, base: float | None) -> float | None:
    return round(candidate / base, 4) if candidate is not None and base else None


# -- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if min(args.profiles, args.overlap) < 1 or min(args.per_profile, args.random_per_profile, args.controls) < 0:
        raise SystemExit("--profiles and --overlap must be >= 1; the task counts >= 0")
    if not 0.0 <= args.noise <= 0.5:
        raise SystemExit(f"--noise is {args.noise}; allowed 0..0.5 (above 0.5 the rule is mostly reversed)")
    setup(args)
    wall0 = time.perf_counter()
    temp = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="bench-demo-session-")) if temp else args.data_dir.expanduser().resolve()
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


def prepare_features(source: Path | None, data_dir: Path) -> None:
    target = data_dir / "features"
    if source is None or target.exists():
        return
    source = source.expanduser().resolve()
    if not source.is_dir():
        raise SystemExit(f"--features-cache {source}: not a folder")
    # A copy, not a link: the app and its fine-tune job may write to the cache; the source stays untouched.
    log.info("copying the feature cache %s -> %s", source, target)
    shutil.copytree(source, target)


def run(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    prepare_features(args.features_cache, data_dir)
    passwords = write_users_csv(data_dir / "users.csv", {**{name: "annotator" for name in ANNOTATORS}, ADMIN: "admin"})
    port = args.port or free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, str(REPO_ROOT / "app.py"), "--port", str(port), "--host", "127.0.0.1",
           *app_argv(args, data_dir), "--auth-file", str(data_dir / "users.csv"),
           # Scripted annotators answer far faster than people: the per-person label limit (60/min) is off.
           "--feedback-rate-limit", "0"]
    app = AppProcess(cmd, data_dir / "app.log", app_env(args.threads))
    profile = [i.strip() for i in args.show_profile.split(",") if i.strip()]
    try:
        app.start()
        ready_s = app.wait_ready(url, timeout_s=args.timeout)
        log.info("app ready after %.1f s", ready_s)
        admin = connect(url, (ADMIN, passwords[ADMIN]))
        genres = Genres(admin)
        base_version = admin.predict(api_name="/finetune_status")["serving"]
        log.info("serving %s", base_version)
        before = top_list(admin, profile, genres)

        created = admin.predict(CAMPAIGN, args.profiles, args.per_profile, args.random_per_profile, args.controls,
                                args.overlap, "binary", GUIDELINES, api_name="/campaign")
        log.info("campaign %s: %s", CAMPAIGN, created)
        annotators = [Annotator(name, connect(url, (name, passwords[name])),
                                random.Random(f"demo-session|{args.seed}|{name}"), args.noise) for name in ANNOTATORS]
        t0 = time.perf_counter()
        per_annotator = label_campaign(annotators, genres, args.seed)
        label_seconds = time.perf_counter() - t0
        stored = sum(v["answered"] for v in per_annotator.values())
        log.info("%d judgements stored in %.0f s: %s", stored, label_seconds, per_annotator)

        status = run_finetune(admin, args.finetune_timeout)
        if status["state"] != "succeeded":
            raise RuntimeError(f"the fine-tune job failed: {status['error']}")
        version = status["version"]
        promoted_with_override = False
        if status["serving"] != version:
            log.info("gate: %s; promoting %s with override only to show its list", status["gate_reason"], version)
            promoted = admin.predict(version, True, api_name="/promote")
            promoted_with_override = True
            if promoted["serving"] != version:
                raise RuntimeError(f"promoted {version} but the app serves {promoted['serving']}")
        after = top_list(admin, profile, genres)
        for client in (admin, *(a.client for a in annotators)):
            if hasattr(client, "close"):
                client.close()
    except BaseException:
        log.error("last lines of %s:\n%s", app.log_path, app.log_tail())
        raise
    finally:
        app.stop()

    metrics = candidate_metrics(data_dir, status["job_id"])
    base_m, cand_m = metrics.get("heldout_base", {}), metrics.get("heldout_candidate", {})
    b, c = base_m.get("likes_ndcg@20"), cand_m.get("likes_ndcg@20")
    ratio = _ratio(c, b)
    chosen = [row for row in metrics.get("selection", []) if row.get("chosen")]
    best = [row for row in metrics.get("selection", []) if row.get("best")]
    return {
        "benchmark": "demo_session",
        "labels": stored,
        "n_train": metrics.get("n_train_labels"),
        "n_heldout": metrics.get("n_heldout_labels"),
        "gate_passed": status["gate_passed"],
        "gate_reason": status["gate_reason"],
        "heldout_likes_ndcg@20": {"base": b, "candidate": c, "ratio": ratio, "target_ratio": TARGET_RATIO,
                                  "target_met": bool(status["gate_passed"] and ratio is not None
                                                     and ratio >= TARGET_RATIO)},
        "heldout_base": base_m,
        "heldout_candidate": cand_m,
        "finetune_seconds": round(float(status["seconds"]), 1),
        "selection": {"chosen": chosen[0] if chosen else None, "best": best[0] if best else None,
                      "settings_tried": len(metrics.get("selection", []))},
        "profile": {"liked": profile, "before": before, "after": after,
                    "rule_likes_before": sum(r["rule_likes"] for r in before),
                    "rule_likes_after": sum(r["rule_likes"] for r in after)},
        "candidate_version": version,
        "base_version": base_version,
        "promoted_with_override": promoted_with_override,
        "campaign": {"name": CAMPAIGN, "tasks": created.get("tasks"), "profiles": args.profiles,
                     "per_profile": args.per_profile, "random_per_profile": args.random_per_profile,
                     "controls": args.controls, "overlap": args.overlap, "scale": "binary"},
        "annotators": per_annotator,
        "noise": args.noise,
        "seed": args.seed,
        "labelling_seconds": round(label_seconds, 1),
        "app_ready_s": round(ready_s, 1),
        "machine": machine_facts(args),
    }


if __name__ == "__main__":
    sys.exit(main())
