"""How much could the hybrid fine-tune gain on the demo session's held-out likes? Ceilings computed from a
finished ``benchmarks/demo_session.py`` work folder, on the same labels, split and metric as its fine-tune job.

    .venv/bin/python benchmarks/demo_session.py --data-dir /tmp/demo1 --json demo_session.json
    .venv/bin/python benchmarks/demo_ceiling.py --data-dir /tmp/demo1 --json demo_ceiling.json

The labels are read from ``<data-dir>/recsys.sqlite3`` and aggregated and split into train and held-out
profiles exactly as ``python -m studio.finetune_job`` does with its defaults (the job's own parser gives
them). Every figure is the gate's held-out likes NDCG@20 (``recsys_core.training.gate.likes_ndcg_by_context``:
each held-out profile's liked items when the whole catalog is ranked), and ``ratio`` is over the zero-shot
model's.

Ceilings
--------
- ``zeroshot``: the model the session served (the base).
- ``job``: the job's candidate (``fit_candidate``: settings chosen by cross-validation on the training labels,
  moved only at a paired t of ``CVGrid.min_t``), recomputed here.
- ``grid_oracle``: **oracle**. Every setting of the job's grid (``CVGrid``: text/image weights, EASE lambda,
  genre side weight, content share), each solved on all the training labels, *chosen on the held-out labels
  themselves*: the best that choosing better within this design could give on these labels.
- ``wide_grid_oracle``: the same over a wider grid (four text/image weightings, shares down to 0, lambdas 1 to 2000,
  genre side 0 to 200).
- ``rule``: **oracle**. The annotators' own rule (an item scores the number of genres it shares with the
  profile's items; ties broken at random, seeded): how high the likes can be ranked by the very rule that
  made them, noise and all.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import doc_parser, emit  # noqa: E402

log = logging.getLogger("benchmarks.demo_ceiling")

WIDE = {"modality": ((0.8, 0.2), (1.0, 0.0), (0.6, 0.4), (0.4, 0.6)),
        "shares": (1.0, 0.97, 0.94, 0.9, 0.8, 0.7, 0.5, 0.3, 0.1, 0.0), "lambdas": (1.0, 5.0, 20.0, 100.0, 500.0, 2000.0),
        "side_genres": (0.0, 5.0, 20.0, 50.0, 200.0)}


class _GenreRule:
    """The annotators' rule as a served model: an item's row is its genre indicators and a seeded random number
    below 1e-3 (the tie-break), a profile the union of its items' genres and a 1, so a score is the number of
    genres an item shares with the profile, ties in random order."""

    def __init__(self, genres: np.ndarray, seed: int) -> None:
        import torch

        self.genres = torch.from_numpy(genres.astype(np.float32))
        jitter = torch.from_numpy(np.random.default_rng(seed).random((len(genres), 1)).astype(np.float32)) * 1e-3
        self.item_vectors = torch.cat([self.genres, jitter], dim=1)

    def profile(self, indices):
        import torch

        return torch.cat([(self.genres[list(indices)].sum(0) > 0).to(torch.float32), torch.ones(1)])


def build_parser() -> argparse.ArgumentParser:
    p = doc_parser("benchmarks/demo_ceiling.py", __doc__, "Ceilings")
    p.add_argument("--data-dir", type=Path, required=True,
                   help="a finished demo_session.py work folder (recsys.sqlite3, features/)")
    p.add_argument("--catalog", default="demo", help="the catalog the session labelled")
    p.add_argument("--seed", type=int, default=0, help="tie-breaking of the rule's scores; solves")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import torch

    from recsys_core.config import ImageEncoderConfig, TextEncoderConfig, ZeroShotConfig
    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.encoders.features import encode_catalog
    from recsys_core.serving.zeroshot import ZeroShotModel
    from recsys_core.training.finetune import to_label_data
    from recsys_core.training.finetune_hybrid import CVGrid, base_of, fit_candidate, solve_setting
    from recsys_core.training.gate import likes_ndcg_by_context
    from recsys_core.training.hybrid import catalog_genres
    from studio.finetune_job import build_parser as job_parser
    from studio.finetune_job import labels_and_split, read_judgements

    torch.set_num_threads(2)
    started = time.perf_counter()
    db = args.data_dir / "recsys.sqlite3"
    if not db.is_file():
        raise SystemExit(f"error: no database at {db}: give a finished demo_session.py --data-dir")
    job = job_parser().parse_args(["--db", f"sqlite:///{db}", "--out", str(args.data_dir / "unused")])
    labels, train_part, held_part = labels_and_split(read_judgements(job.db), job)
    catalog = resolve_catalog(args.catalog)
    features = encode_catalog(catalog, TextEncoderConfig(model=job.text_encoder),
                              ImageEncoderConfig(model=job.image_encoder), args.data_dir / "features").features
    train_data, _ = to_label_data(train_part, catalog)
    held_data, _ = to_label_data(held_part, catalog)

    def likes(model) -> float:
        values = likes_ndcg_by_context(model, held_data)
        return round(float(np.nanmean(values)), 4)

    zeroshot = ZeroShotModel(features, ZeroShotConfig())
    base = base_of(zeroshot, None)
    out: dict[str, object] = {"labels": len(labels.examples), "n_train": len(train_data.items),
                              "n_heldout": len(held_data.items),
                              "heldout_profiles": int(held_part["context_key"].nunique())}
    figures = {"zeroshot": likes(zeroshot)}
    candidate, config, zs_config, _, _ = fit_candidate(base, train_part, catalog, features, data=train_data,
                                                       seed=job.seed)
    figures["job"] = likes(candidate)
    out["job_setting"] = {"text_weight": zs_config.text_weight, "lambda": config.lambda_,
                          "side_genre": config.side_genre, "content_share": config.content_share}

    def oracle(modality, lambdas, side_genres, shares) -> tuple[float, dict]:
        best, where = -1.0, {}
        for (tw, iw), lam, side, share in itertools.product(modality, lambdas, side_genres, shares):
            model, *_ = solve_setting(base, train_part, catalog, features, text_weight=tw, image_weight=iw,
                                      lambda_=lam, side_genre=side, content_share=share, seed=job.seed)
            value = likes(model)
            if value > best:
                best, where = value, {"text_weight": tw, "image_weight": iw, "lambda": lam, "side_genre": side,
                                      "content_share": share}
        return best, where

    grid = CVGrid()
    own = (base.zeroshot.text_weight, base.zeroshot.image_weight)
    # The job's grid, the base's own settings included (the cross-validation always tries them first).
    figures["grid_oracle"], out["grid_oracle_setting"] = oracle(
        (own, *[w for w in grid.modality if w != own]), (base.config.lambda_, *grid.lambdas),
        (base.config.side_genre, *grid.side_genres), (base.config.content_share, *grid.shares))
    figures["wide_grid_oracle"], out["wide_grid_oracle_setting"] = oracle(WIDE["modality"], WIDE["lambdas"],
                                                                          WIDE["side_genres"], WIDE["shares"])
    figures["rule"] = likes(_GenreRule(catalog_genres(catalog), args.seed))
    out["likes_ndcg@20"] = figures
    out["ratio"] = {k: round(v / figures["zeroshot"], 4) for k, v in figures.items()}
    out["target_ratio"] = 1.05
    out["seconds"] = round(time.perf_counter() - started, 1)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
