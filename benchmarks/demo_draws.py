"""The demo session's fine-tune over many simulated sessions: how often does the gate pass, and by how much does
the candidate rank held-out likes better than the zero-shot model, across campaign draws?

    .venv/bin/python benchmarks/demo_draws.py --draws 1-10 --data-dir bench-out/demo2 --json demo_draws.json

``benchmarks/demo_session.py`` runs one session through the app (campaign seed 0, four held-out profiles), so
its ratio is one noisy draw. This script runs the same session in-process for each campaign seed of
``--draws``, so that a change to the fine-tune can be judged on draws other than the one the closing note
reports (tune on 1-10, report draw 0 through the app).

Protocol
--------
Per draw ``d``: the campaign of ``demo_session.py`` (``studio.campaigns.build_tasks`` from the served zero-shot
model: 19 profiles of 3 items drawn with seed ``d`` from one genre each, 5 recommendations + 2 random items + 1
control per profile, overlap 1); the three annotators take the tasks in turn and follow its rule (like when the
item shares a genre with a profile item) with 10% of answers reversed (seeded by ``d`` and the annotator); the
judgements are aggregated, split and fine-tuned exactly as ``python -m studio.finetune_job`` does with its
defaults (``recsys_core.labels.aggregate``, ``split_heldout``, ``recsys_core.training.finetune.finetune``), and
the gate's held-out likes NDCG@20 of the base and the candidate are read from its result.

``--rule random`` replaces the rule by a coin flip on every task but the controls: labels that teach nothing,
on which a fine-tune that moves is chasing noise.

Output: per draw the gate's verdict, base / candidate likes NDCG@20 and their ratio, whether the candidate moved
from the base, and over all draws the mean and worst ratio and the share of draws whose gate passed.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, doc_parser, emit, setup  # noqa: E402

log = logging.getLogger("benchmarks.demo_draws")

ANNOTATORS = ("ann1", "ann2", "ann3")


def parse_draws(text: str) -> list[int]:
    """``1-10`` or ``0,3,5``: the campaign seeds to simulate."""
    out: list[int] = []
    try:
        for part in text.split(","):
            low, _, high = part.strip().partition("-")
            out.extend(range(int(low), int(high) + 1) if high else [int(low)])
    except ValueError:
        raise argparse.ArgumentTypeError(f"--draws {text!r}: use a range such as 1-10 or a list such as 0,3,5")
    if not out or min(out) < 0:
        raise argparse.ArgumentTypeError(f"--draws {text!r}: give at least one seed, each >= 0")
    return out


def build_parser() -> argparse.ArgumentParser:
    p = doc_parser("benchmarks/demo_draws.py", __doc__, "Protocol")
    p.add_argument("--draws", type=parse_draws, default=parse_draws("1-10"), help="campaign seeds (e.g. 1-10 or 0,4)")
    p.add_argument("--profiles", type=int, default=19, help="campaign profiles (as demo_session.py)")
    p.add_argument("--noise", type=float, default=0.1, help="share of answers against the rule (as demo_session.py)")
    p.add_argument("--rule", choices=("genre", "random"), default="genre",
                   help="genre: demo_session.py's rule; random: a coin flip per task (labels that teach nothing, "
                        "which the fine-tune should leave alone)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="a folder whose features/ holds the demo catalog's feature cache (written there if absent; "
                        "default: a temp dir, about 25 s of extraction)")
    p.add_argument("--catalog", default="demo", help="the catalog to label")
    add_common_args(p)
    return p


def simulate(service, draw: int, profiles: int, noise: float, rule: str = "genre"):
    """The judgements frame (``recsys_core.labels.aggregate``'s input) of one simulated session."""
    import pandas as pd

    from studio.campaigns import CampaignSpec, build_tasks, draw_profiles

    catalog = service.catalog
    spec = CampaignSpec(name=f"draw-{draw}", profiles=profiles, overlap=1, scale="binary", seed=draw)
    tasks = build_tasks(service, spec, draw_profiles(catalog, spec.profiles, spec.profile_size, spec.seed))
    genres = {item.item_id: frozenset(item.genres) for item in catalog.items}
    rngs = {name: random.Random(f"demo-session|{draw}|{name}") for name in ANNOTATORS}
    rows = []
    for n, task in enumerate(tasks):  # build_tasks shuffled them; the annotators take turns
        name = ANNOTATORS[n % len(ANNOTATORS)]
        like = bool(frozenset().union(*(genres[i] for i in task.context_ids)) & genres[task.item_id])
        if rule == "random" and task.kind != "control":  # controls stay right, so no annotator is excluded
            like = rngs[name].random() < 0.5
        elif rngs[name].random() < noise:
            like = not like
        rows.append({"feedback_id": n + 1, "annotator": name, "context_ids": tuple(task.context_ids),
                     "item_id": task.item_id, "label": "like" if like else "dislike", "grade": None,
                     "is_control": task.kind == "control",
                     "expected": float(task.expected_grade) if task.kind == "control" else float("nan"),
                     "model_version": task.model_version, "task_id": n + 1, "campaign": spec.name,
                     "created_at": pd.Timestamp("2026-01-01") + pd.Timedelta(seconds=n)})
    return pd.DataFrame(rows)


def run_draw(service, draw: int, args: argparse.Namespace, out_root: Path) -> dict[str, Any]:
    import json

    from recsys_core.training.finetune import FinetuneConfig, FinetuneError, finetune
    from studio.finetune_job import build_parser as job_parser
    from studio.finetune_job import labels_and_split

    job = job_parser().parse_args(["--db", "sqlite:///unused", "--out", str(out_root / "unused")])
    labels, train_part, held_part = labels_and_split(simulate(service, draw, args.profiles, args.noise, args.rule), job)
    started = time.perf_counter()
    try:
        result = finetune(examples=train_part, heldout=held_part, catalog=service.catalog,
                          features=service.features, text_encoder=service.text_encoder,
                          image_encoder=service.image_encoder, base_model=service.active_model, base_dir=None,
                          out_dir=out_root / f"draw-{draw}", cache_dir=None,
                          config=FinetuneConfig(heldout_fraction=job.heldout, seed=job.seed,
                                                gate_confidence=job.gate_confidence))
    except FinetuneError as exc:  # what the app's job would say: too few labels (e.g. annotators excluded)
        log.info("draw %d: no candidate: %s", draw, exc)
        return {"draw": draw, "labels": len(labels.examples), "gate_passed": False, "ratio": None, "moved": False,
                "error": str(exc), "excluded_annotators": dict(labels.excluded_annotators)}
    seconds = time.perf_counter() - started
    base = result.gate.base.get("likes_ndcg@20")
    cand = result.gate.candidate.get("likes_ndcg@20")
    metrics = json.loads((Path(result.out_dir) / "metrics.json").read_text(encoding="utf-8"))
    chosen = next((r for r in metrics.get("selection", []) if r.get("chosen")), {})
    row = {"draw": draw, "labels": len(labels.examples), "heldout_profiles": int(held_part["context_key"].nunique()),
           "gate_passed": bool(result.gate.passed), "base": base, "candidate": cand,
           "ratio": round(cand / base, 4) if base and cand is not None else None,
           "moved": not chosen.get("base_settings", True), "chosen": chosen, "seconds": round(seconds, 1)}
    log.info("draw %d: gate %s, likes NDCG@20 %.4f -> %.4f (%.4fx), moved %s", draw,
             "passed" if row["gate_passed"] else "failed", base or 0.0, cand or 0.0, row["ratio"] or 0.0, row["moved"])
    return row


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    import numpy as np
    import torch

    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.service import RecommenderService, ServiceConfig

    torch.set_num_threads(args.threads)
    wall0 = time.perf_counter()
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="bench-demo-draws-"))
    service = RecommenderService(resolve_catalog(args.catalog),
                                 ServiceConfig(device="cpu" if args.device == "auto" else args.device,
                                               cache_dir=data_dir / "features"))
    service.prepare()
    with tempfile.TemporaryDirectory(prefix="demo-draws-") as out_root:
        rows = [run_draw(service, d, args, Path(out_root)) for d in args.draws]
    ratios = [r["ratio"] for r in rows if r["ratio"] is not None]
    emit({"benchmark": "demo_draws", "draws": args.draws, "rows": rows,
          "mean_ratio": round(float(np.mean(ratios)), 4) if ratios else None,
          "worst_ratio": round(float(np.min(ratios)), 4) if ratios else None,
          "gate_passed": f"{sum(r['gate_passed'] for r in rows)}/{len(rows)}",
          "no_candidate": sum(1 for r in rows if "error" in r),
          "moved": f"{sum(r['moved'] for r in rows)}/{len(rows)}",
          "wall_seconds": round(time.perf_counter() - wall0, 1)}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
