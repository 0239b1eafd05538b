"""Offline evaluation CLI: fit every listed model on one protocol's training split, rank, score.

    python -m recsys_core.evaluate --dataset movielens-100k --data-root ../shared/data/movielens-100k \\
        --protocol warm --models pop,itemknn,ease,bpr,tfidf,zeroshot --k 10,20 --json out.json

Why one run for all models: they then share the exact split, candidate set and metric code, so the
table compares models and nothing else. The protocol, split source and candidate set are printed
above the table and stored in the JSON, because a number without them is meaningless (sampled
candidates inflate metrics about 3x).

Models come from a registry (name -> factory). Other modules add theirs with
:func:`register_model` (e.g. ``multimodal``), and ``--models`` can then name them.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from recsys_core.cli_args import add_catalog_arguments
from recsys_core.evaluation.baselines import (
    BPR,
    EASE,
    BPRConfig,
    GenreProfile,
    InteractionData,
    ItemKNN,
    Popularity,
    RandomScorer,
    Recommender,
    TfidfProfile,
    genre_matrix,
    item_genres,
    item_texts,
)
from recsys_core.evaluation.metrics import evaluate_scores
from recsys_core.evaluation.zeroshot_scorer import ZeroShotScorer
from recsys_core.data.splits import PROTOCOLS, Split, load_split

log = logging.getLogger(__name__)

DATASETS: tuple[str, ...] = ("movielens-100k",)
SCORE_BATCH = 256  # users scored at once: bounds memory for catalogs much larger than ML-100K


@dataclass(frozen=True)
class ModelContext:
    """Everything a model factory may need; built once per run."""

    split: Split
    data_root: Path
    data_dir: Path
    seed: int
    items: pd.DataFrame  # items.csv (item_id, title, genres, description, ...) or an empty frame


ModelFactory = Callable[[ModelContext], Recommender]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory, *, replace: bool = False) -> None:
    """Make ``name`` usable in ``--models``; ``factory(context)`` returns an unfitted model."""
    if not name or "," in name:
        raise ValueError(f"model name {name!r} must be non-empty and contain no comma")
    if name in _REGISTRY and not replace:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = factory


def known_models() -> tuple[str, ...]:
    return tuple(_REGISTRY)


register_model("pop", lambda ctx: Popularity())
register_model("random", lambda ctx: RandomScorer(seed=ctx.seed))
register_model("itemknn", lambda ctx: ItemKNN(k=None))  # all neighbours, as the reference implementations
register_model("ease", lambda ctx: EASE(lambda_=300.0))
register_model("bpr", lambda ctx: BPR(BPRConfig(seed=ctx.seed), progress=True))
register_model("tfidf", lambda ctx: TfidfProfile(item_texts(ctx.items)))
register_model("genre", lambda ctx: GenreProfile(item_genres(ctx.items)))
register_model("zeroshot", lambda ctx: ZeroShotScorer(ctx.data_root, ctx.data_dir / "features"))


def _fusion(name: str, **options: object) -> ModelFactory:
    def factory(ctx: ModelContext) -> Recommender:
        from recsys_core.evaluation.multimodal_scorer import FusionScorer  # torch-heavy: imported only when asked for

        return FusionScorer(ctx.split, ctx.data_root, ctx.data_dir, seed=ctx.seed, name=name, **options)  # type: ignore[arg-type]

    return factory


def _hybrid(name: str, fixed: dict | None = None, zeroshot: dict | None = None) -> ModelFactory:
    def factory(ctx: ModelContext) -> Recommender:
        from recsys_core.evaluation.multimodal_scorer import HybridScorer

        return HybridScorer(ctx.split, ctx.data_root, ctx.data_dir, seed=ctx.seed, name=name, fixed=fixed,
                            zeroshot=zeroshot)

    return factory


# The product's model: content + collaborative hybrid, settings chosen on the validation split.
register_model("multimodal", _hybrid("multimodal"))
# Its ablations: one part only, no side information in the solve, one modality in the content part.
register_model("multimodal-content", _hybrid("multimodal-content", fixed={"content_share": 1.0, "prior_weight": 0.0}))
register_model("multimodal-collab", _hybrid("multimodal-collab", fixed={"content_share": 0.0}))
register_model("multimodal-noside", _hybrid("multimodal-noside", fixed={"side_content": 0.0, "side_genre": 0.0}))
register_model("multimodal-text", _hybrid("multimodal-text", zeroshot={"text_weight": 1.0, "image_weight": 0.0}))
register_model("multimodal-image", _hybrid("multimodal-image", zeroshot={"text_weight": 0.0, "image_weight": 1.0}))
# One modality only, for audio and video (a catalog with interactions and that modality; refused otherwise).
register_model("multimodal-audio", _hybrid("multimodal-audio", zeroshot={"text_weight": 0.0, "image_weight": 0.0,
                                                                         "audio_weight": 1.0, "video_weight": 0.0}))
register_model("multimodal-video", _hybrid("multimodal-video", zeroshot={"text_weight": 0.0, "image_weight": 0.0,
                                                                         "audio_weight": 0.0, "video_weight": 1.0}))
# The two-tower fusion model trained on interactions (the previous ``multimodal``) and its variants.
register_model("fusion", _fusion("fusion"))
register_model("fusion-text", _fusion("fusion-text", modalities="text"))
register_model("fusion-image", _fusion("fusion-image", modalities="image"))
register_model("fusion-mean", _fusion("fusion-mean", fusion="mean"))  # ablation: no attention
register_model("fusion-noid", _fusion("fusion-noid", use_ids=False))  # ablation: content only
register_model("fusion-top", _fusion("fusion-top", strategy="top-layers"))  # + top text block, CNN head
register_model("fusion-lora", _fusion("fusion-lora", strategy="lora"))  # + LoRA on the top 2 text blocks


@dataclass(frozen=True)
class ModelResult:
    model: str
    metrics: dict[str, float]
    fit_seconds: float
    score_seconds: float
    # Models that choose their settings on the validation split (the hybrid) report the figure they chose by.
    validation_ndcg: float | None = None


@dataclass(frozen=True)
class EvaluationReport:
    protocol: str
    split: str
    candidates: str
    users: int
    ks: tuple[int, ...]
    results: tuple[ModelResult, ...]
    mmr: dict[str, object] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "protocol": self.protocol,
            "split": self.split,
            "candidates": self.candidates,
            "users": self.users,
            "results": {r.model: {**{k: round(v, 6) for k, v in r.metrics.items() if k != "users"},
                                  "fit_seconds": round(r.fit_seconds, 3),
                                  "score_seconds": round(r.score_seconds, 3),
                                  **({"validation_ndcg@20": round(r.validation_ndcg, 6)}
                                     if r.validation_ndcg is not None else {})} for r in self.results},
        }
        if self.mmr:
            out["mmr"] = self.mmr
        return out


@dataclass(frozen=True)
class EvalInputs:
    """The split turned into what models and metrics consume (index space shared by both)."""

    data: InteractionData
    test_sets: tuple[np.ndarray, ...]
    candidate_mask: np.ndarray | None
    diversity_features: np.ndarray | None


def prepare_inputs(split: Split, items: pd.DataFrame) -> EvalInputs:
    """Index the split. Users = anyone in train or test; items = the whole catalog."""
    users = sorted(set(split.train.user_id) | set(split.test.user_id),
                   key=lambda u: (0, int(u)) if u.isdigit() else (1, u))  # type: ignore[arg-type]
    data = InteractionData.from_frame(split.train, users, split.item_ids)
    test_lists: list[list[int]] = [[] for _ in users]
    for u, i in zip(split.test.user_id.map(data.user_index), split.test.item_id.map(data.item_index)):
        test_lists[u].append(i)
    cand = None
    if split.candidate_items is not None:
        cand = np.zeros(data.n_items, dtype=bool)
        cand[[data.item_index[i] for i in split.candidate_items]] = True
    # ILD/MMR use genre vectors: interpretable, available for every item (title+genres are always there).
    div = genre_matrix(data.item_ids, item_genres(items)) if len(items) else None
    return EvalInputs(data, tuple(np.asarray(t, dtype=np.int64) for t in test_lists), cand, div)


def score_all(model: Recommender, n_users: int, batch: int = SCORE_BATCH) -> np.ndarray:
    return np.vstack([model.score(np.arange(s, min(s + batch, n_users))) for s in range(0, n_users, batch)])


def run_evaluation(split: Split, models: Sequence[str], ks: Sequence[int], *, data_root: Path, data_dir: Path,
                   seed: int = 0, items: pd.DataFrame | None = None,
                   mmr_lambdas: Sequence[float] = ()) -> EvaluationReport:
    """Fit and evaluate ``models`` on ``split``; optional MMR trade-off for the best model by NDCG."""
    items = items if items is not None else pd.DataFrame(columns=["item_id", "title", "genres", "description"])
    inputs = prepare_inputs(split, items)
    ctx = ModelContext(split=split, data_root=data_root, data_dir=data_dir, seed=seed, items=items)
    train_mask = inputs.data.matrix
    results: list[ModelResult] = []
    best: tuple[float, str, np.ndarray] | None = None
    kmax = max(ks)
    users = 0
    from tqdm.auto import tqdm

    for name in tqdm(models, desc="models", unit="model", disable=len(models) < 2):
        np.random.seed(seed)
        model = _REGISTRY[name](ctx)
        start = time.perf_counter()
        model.fit(inputs.data)
        fit_s = time.perf_counter() - start
        start = time.perf_counter()
        scores = score_all(model, inputs.data.n_users)
        score_s = time.perf_counter() - start
        metrics = evaluate_scores(scores, train_mask, inputs.test_sets, ks, inputs.candidate_mask,
                                  inputs.diversity_features, tie_seed=seed)
        users = int(metrics["users"])
        log.info("%s: recall@%d %.4f ndcg@%d %.4f (fit %.1fs)", name, kmax, metrics[f"recall@{kmax}"], kmax,
                 metrics[f"ndcg@{kmax}"], fit_s)
        selection = getattr(model, "selection", None)
        results.append(ModelResult(name, metrics, fit_s, score_s,
                                   validation_ndcg=float(selection.ndcg) if selection is not None else None))
        if mmr_lambdas and (best is None or metrics[f"ndcg@{kmax}"] > best[0]):
            best = (metrics[f"ndcg@{kmax}"], name, scores)
    mmr: dict[str, object] = {}
    if mmr_lambdas and best is not None and inputs.diversity_features is not None:
        _, name, scores = best
        per_lambda = {}
        for lam in mmr_lambdas:
            m = evaluate_scores(scores, train_mask, inputs.test_sets, ks, inputs.candidate_mask,
                                inputs.diversity_features, mmr_lambda=lam, tie_seed=seed)
            per_lambda[f"{lam:g}"] = {k: round(v, 6) for k, v in m.items() if k != "users"}
        mmr = {"model": name, "diversity_features": "genre multi-hot", "lambda_is": "diversity weight (0 = none)",
               "by_lambda": per_lambda}
    elif mmr_lambdas:
        log.warning("MMR skipped: no item genres to measure diversity with")
    return EvaluationReport(protocol=split.protocol, split=f"{split.name} ({split.source})",
                            candidates=split.candidates, users=users, ks=tuple(sorted(set(ks))),
                            results=tuple(results), mmr=mmr)


def format_table(report: EvaluationReport) -> str:
    """Plain-text table: a header block naming protocol/split/candidates, one row per model."""
    cols = [f"{m}@{k}" for k in report.ks for m in ("recall", "ndcg", "precision", "hitrate")]
    kmax = report.ks[-1]
    cols += [f"coverage@{kmax}", f"ild@{kmax}"]
    lines = [f"protocol:   {report.protocol}", f"split:      {report.split}",
             f"candidates: {report.candidates}", f"users:      {report.users:,} with >= 1 test item", ""]
    width = max([12] + [len(r.model) + 1 for r in report.results])
    header = f"{'model':<{width}}" + "".join(f"{c:>13}" for c in cols) + f"{'fit s':>9}" + f"{'val ndcg@20':>13}"
    lines += [header, "-" * len(header)]
    for r in report.results:
        cells = "".join(f"{r.metrics[c]:>13.4f}" if c in r.metrics else f"{'-':>13}" for c in cols)
        val = f"{r.validation_ndcg:>13.4f}" if r.validation_ndcg is not None else f"{'-':>13}"
        lines.append(f"{r.model:<{width}}{cells}{r.fit_seconds:>9.1f}{val}")
    if report.mmr:
        lines += ["", f"MMR re-ranking of {report.mmr['model']} (lambda = diversity weight, genre vectors):"]
        for lam, m in report.mmr["by_lambda"].items():  # type: ignore[union-attr]
            lines.append(f"  lambda {lam:>4}: recall@{kmax} {m[f'recall@{kmax}']:.4f}  ndcg@{kmax} "
                         f"{m[f'ndcg@{kmax}']:.4f}  ild@{kmax} {m.get(f'ild@{kmax}', float('nan')):.4f}  "
                         f"coverage@{kmax} {m[f'coverage@{kmax}']:.4f}")
    return "\n".join(lines)


def _csv(kind: Callable[[str], object]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        if not values:
            raise argparse.ArgumentTypeError("give at least one value")
        return values
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recsys_core.evaluate",
        description="Full-ranking offline evaluation of recommenders on a fixed or generated split.",
    )
    p.add_argument("--dataset", default="movielens-100k", choices=DATASETS)
    add_catalog_arguments(p, only=("data_root",), required=("data_root",),
                          helps={"data_root": "dataset folder (ratings.csv, items.csv, optional splits/)"})
    p.add_argument("--protocol", default="warm", choices=PROTOCOLS)
    p.add_argument("--validation", action="store_true", help="evaluate on the validation split carved from train")
    p.add_argument("--models", type=_csv(str), default=["pop", "itemknn", "ease"],
                   help="comma-separated model names (default pop,itemknn,ease); unknown names list the known ones")
    p.add_argument("--k", type=_csv(int), default=[10, 20], help="cut-offs, comma-separated (default 10,20)")
    p.add_argument("--seed", type=int, default=0, help="seed for generated splits and stochastic models")
    p.add_argument("--json", type=Path, default=None, help="write the results JSON here")
    add_catalog_arguments(p, only=("data_dir",),
                          helps={"data_dir": "app data dir; zeroshot reads/writes cached features under DATA_DIR/features"})
    p.add_argument("--mmr", type=_csv(float), default=[],
                   help="MMR diversity weights to try on the best model, e.g. 0.0,0.5,0.8")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    unknown = [m for m in args.models if m not in _REGISTRY]
    if unknown:
        print(f"error: unknown model(s) {', '.join(unknown)}; known: {', '.join(known_models())}", file=sys.stderr)
        return 2
    if any(k < 1 for k in args.k):
        print("error: --k values must be >= 1", file=sys.stderr)
        return 2
    if any(not 0.0 <= lam <= 1.0 for lam in args.mmr):
        print("error: --mmr values must lie in 0..1", file=sys.stderr)
        return 2
    root: Path = args.data_root
    if not root.is_dir():
        print(f"error: --data-root {root} is not a folder", file=sys.stderr)
        return 2
    try:
        split = load_split(root, args.protocol, validation=args.validation, seed=args.seed)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items_csv = root / "items.csv"
    items = pd.read_csv(items_csv, dtype=str, keep_default_na=False) if items_csv.is_file() else None
    started = time.perf_counter()
    report = run_evaluation(split, args.models, args.k, data_root=root, data_dir=args.data_dir, seed=args.seed,
                            items=items, mmr_lambdas=args.mmr)
    print(format_table(report))
    print(f"\nwall time {time.perf_counter() - started:.1f}s")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        payload = report.to_json()
        payload["dataset"] = args.dataset
        payload["seed"] = args.seed
        args.json.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
