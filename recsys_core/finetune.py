"""The CLI reads judgements straight from the database (``--db URL``) through pandas and SQLAlchemy:
``recsys_core`` does not depend on the ``storage`` package, so the table and column names of
``storage.models`` (feedback, annotator, labeltask) are the contract here.

This module is the fine-tune job's entry point (``python -m recsys_core.finetune``, started by
``studio.jobs``); the fine-tune itself, its gate and label metrics are :mod:`recsys_core.training.finetune`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from recsys_core.cli_args import add_catalog_arguments
from recsys_core.errors import RecsysError
from recsys_core.training import finetune as finetune_module
from recsys_core.training.finetune import FinetuneConfig, FinetuneError, finetune, movielens_offline_split

log = logging.getLogger(__name__)


# -- reading judgements from the app's database ------------------------------------------------------
JUDGEMENTS_SQL = """
SELECT f.id AS feedback_id, COALESCE(a.username, 'anonymous') AS annotator, f.context_ids, f.item_id, f.label,
       f.grade, f.model_version, t.kind AS task_kind, t.expected_grade, t.campaign
FROM feedback f
LEFT JOIN annotator a ON a.id = f.annotator_id
LEFT JOIN labeltask t ON t.id = f.task_id
ORDER BY f.id
"""


def read_judgements(database_url: str, campaign: str | None = None) -> pd.DataFrame:
    """All judgements in the database as the frame :func:`recsys_core.labels.aggregation.aggregate` reads."""
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql_query(JUDGEMENTS_SQL, conn)
    finally:
        engine.dispose()
    if campaign is not None:
        frame = frame[frame["campaign"] == campaign]
    frame["context_ids"] = [json.loads(c) if isinstance(c, str) else list(c or []) for c in frame["context_ids"]]
    frame["is_control"] = frame["task_kind"].eq("control").fillna(False).astype(bool)
    scale = np.where(frame["label"].eq("graded"), 3.0, 1.0)
    frame["expected"] = [float(e) / s if frame_is_control and not pd.isna(e) else None
                         for e, s, frame_is_control in zip(frame["expected_grade"], scale, frame["is_control"])]
    frame["grade"] = [None if pd.isna(g) else int(g) for g in frame["grade"]]
    return frame.reset_index(drop=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recsys_core.finetune",
                                     description=f"{finetune_module.__doc__}\n{__doc__}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default=os.environ.get("DATABASE_URL"),
                        help="database URL of the app (e.g. sqlite:///data/recsys.sqlite3); default: env DATABASE_URL, "
                             "which keeps a password out of the process list")
    parser.add_argument("--base", type=Path, default=None,
                        help="checkpoint folder to start from; default: a new fusion model (the app's zero-shot model is the gate's baseline)")
    parser.add_argument("--out", type=Path, required=True, help="candidate checkpoint folder to write")
    add_catalog_arguments(parser, helps={"catalog": "as for app.py: demo, movielens-100k or a folder",
                                         "data_root": None, "text_encoder": "as for app.py (must match the app's)",
                                         "image_encoder": "as for app.py (must match the app's)", "device": None})
    parser.add_argument("--campaign", default=None, help="only judgements from this labelling campaign")
    parser.add_argument("--method", default="majority", choices=["majority", "soft"], help="label aggregation")
    parser.add_argument("--min-control-accuracy", type=float, default=0.7)
    parser.add_argument("--epochs", type=int, default=FinetuneConfig.epochs)
    parser.add_argument("--lr", type=float, default=None,
                        help=f"learning rate (default: {FinetuneConfig.lr} when continuing --base, "
                             f"{FinetuneConfig.new_model_lr} for a new model)")
    parser.add_argument("--label-weight", type=float, default=FinetuneConfig.label_weight,
                        help="weight of the binary cross-entropy on likes and dislikes")
    parser.add_argument("--no-likes-as-interactions", action="store_true",
                        help="do not add likes to the softmax as interactions of a pseudo-user per context "
                             "(context items, then the liked items); labels then train only through "
                             "--label-weight > 0")
    parser.add_argument("--heldout", type=float, default=FinetuneConfig.heldout_fraction, help="fraction of contexts held out for the gate")
    parser.add_argument("--gate-confidence", type=float, default=FinetuneConfig.gate_confidence,
                        help="call the candidate worse on held-out labels only when a paired bootstrap over held-out "
                             "profiles says so with this confidence (0 = any drop rejects; the offline protocol "
                             "is always strict)")
    parser.add_argument("--min-agreement", type=float, default=0.4,
                        help="drop annotators whose agreement with the majority of the others is below this (0..1); "
                             "annotators with no overlapping judgements are kept")
    parser.add_argument("--no-offline-gate", action="store_true",
                        help="MovieLens: do not add the offline protocol (warm validation split NDCG@20) to the gate")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the result (gate, snapshot, timings) here")
    parser.add_argument("--progress-file", type=Path, default=None, help="append JSON progress lines here (the app reads them)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="stop when this process (the app that started the job) is gone")
    args = parser.parse_args(argv)
    if not args.db:
        parser.error("give the app's database: --db URL or env DATABASE_URL")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.parent_pid:
        _exit_with_parent(args.parent_pid)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        result = run_cli(args)
    except RecsysError as exc:
        _write_json(args.json, {"ok": False, "error": str(exc)})
        raise SystemExit(f"error: {exc}") from None
    _write_json(args.json, result)
    log.info("candidate %s: gate %s (%s)", result["out_dir"], "passed" if result["gate"]["passed"] else "failed",
             result["gate"]["reason"])


def _exit_with_parent(parent_pid: int, every_s: float = 1.0) -> None:
    """End this job when the app that started it dies (e.g. SIGKILL), instead of training on as an orphan.

    A polling thread rather than Linux's PR_SET_PDEATHSIG: that needs ``preexec_fn``, which is unsafe in
    the app's multi-threaded server. The candidate is written to a temporary folder and renamed last, so
    an exit at any moment leaves no checkpoint that could be registered or served.
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(every_s)
        log.warning("the app (pid %d) is gone: stopping the fine-tune; nothing is registered", parent_pid)
        os._exit(3)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def _write_json(path: Path | None, value: dict) -> None:
    if path is None:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, default=str))
    os.replace(tmp, path)


def run_cli(args: argparse.Namespace) -> dict:
    from recsys_core.config import ImageEncoderConfig, TextEncoderConfig, ZeroShotConfig
    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.encoders.features import encode_catalog
    from recsys_core.labels.aggregation import AggregationConfig, aggregate, split_heldout
    from recsys_core.serving.finetuned import load_serving
    from recsys_core.serving.protocol import ServingModel
    from recsys_core.serving.zeroshot import ZeroShotModel

    def progress(fraction: float, message: str) -> None:
        log.info("%3.0f%% %s", 100 * fraction, message)
        if args.progress_file is not None:
            with open(args.progress_file, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"fraction": round(fraction, 4), "message": message, "time": time.time()}) + "\n")

    progress(0.0, "reading judgements")
    judgements = read_judgements(args.db, args.campaign)
    agg_config = AggregationConfig(method=args.method, min_control_accuracy=args.min_control_accuracy,
                                   min_majority_agreement=args.min_agreement)
    labels = aggregate(judgements, agg_config)
    if labels.examples.empty:
        raise FinetuneError(f"no usable labels in the database ({len(judgements)} judgements; "
                            f"{len(labels.excluded_annotators)} annotator(s) excluded)")
    train_part, heldout_part = split_heldout(labels, args.heldout, args.seed)
    progress(0.01, f"{len(labels.examples)} labels from {len(judgements)} judgements "
                   f"({len(train_part)} train / {len(heldout_part)} held out); loading the catalog")
    catalog = resolve_catalog(args.catalog, data_root=args.data_root)
    cache_dir = Path(args.data_dir) / "features"
    encoded = encode_catalog(catalog, TextEncoderConfig(model=args.text_encoder),
                             ImageEncoderConfig(model=args.image_encoder), cache_dir, device=args.device)
    # What the app serves from this base (the zero-shot model without one): the gate's baseline.
    state_model: ServingModel = ZeroShotModel(encoded.features, ZeroShotConfig())
    if args.base is not None:
        state_model = load_serving(args.base, catalog, encoded.features, encoded.text_encoder,
                                   encoded.image_encoder, cache_dir)
    offline = None
    if args.catalog == "movielens-100k" and args.data_root is not None and not args.no_offline_gate:
        offline = movielens_offline_split(args.data_root, catalog)
    result = finetune(examples=train_part, heldout=heldout_part, catalog=catalog, features=encoded.features,
                      text_encoder=encoded.text_encoder, image_encoder=encoded.image_encoder, base_model=state_model,
                      base_dir=args.base, out_dir=args.out, cache_dir=cache_dir,
                      config=FinetuneConfig(epochs=args.epochs,
                                            lr=FinetuneConfig.lr if args.lr is None else args.lr,
                                            new_model_lr=FinetuneConfig.new_model_lr if args.lr is None else args.lr,
                                            heldout_fraction=args.heldout, seed=args.seed,
                                            label_weight=args.label_weight,
                                            likes_as_interactions=not args.no_likes_as_interactions,
                                            gate_confidence=args.gate_confidence),
                      extra_metrics={"label_snapshot": labels.snapshot_id}, progress=progress, offline=offline)
    from recsys_core.model.checkpoint import checkpoint_version

    return {
        "ok": True,
        "out_dir": str(result.out_dir),
        "version": checkpoint_version(result.out_dir),
        "parent": getattr(state_model, "version", None),
        "gate": asdict(result.gate),
        "n_train": result.n_train,
        "n_heldout": result.n_heldout,
        "seconds": round(result.seconds, 2),
        "history": result.history,
        "snapshot": {"id": labels.snapshot_id, "n_examples": int(len(labels.examples)),
                     "n_judgements": int(len(judgements)), "config": json.loads(agg_config.to_json()),
                     "feedback_ids": [int(i) for i in labels.feedback_ids],
                     "excluded_annotators": labels.excluded_annotators},
    }


if __name__ == "__main__":
    main()
