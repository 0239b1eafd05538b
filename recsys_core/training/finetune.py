"""Fine-tune a model on the labels people gave, and gate the candidate (the job that runs it: ``python -m studio.finetune_job --help``).

The loop: judgements (like/dislike or graded 0-3, from the app's database) are aggregated into
labels (:mod:`recsys_core.labels.aggregation`), split by context into train and held-out parts, and the base
model (a fine-tuned checkpoint, or none = a new fusion model) is trained further: the base model's
own training interactions are replayed, and each training context's likes join them as a pseudo-user
(the context's items, then the liked items) in the same softmax; binary cross-entropy on likes and
dislikes is available (``--label-weight``) but off by default. The candidate and the base are then
scored on the held-out labels with the same code; the candidate passes the gate when it is not worse
(AUC, pairwise accuracy and the held-out likes' NDCG@20 over the whole catalog; on MovieLens also the
offline NDCG@20). Registering and promoting is the app's job (``studio.jobs``): this module never touches the registry.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from recsys_core.data.catalog import Catalog
from recsys_core.errors import RecsysError
from recsys_core.training.config import TrainConfig
from recsys_core.training.data import LIKE_USER_PREFIX, LabelData, like_interactions, to_label_data  # noqa: F401 (re-exported)
from recsys_core.training.gate import (GateResult, bootstrap_worse, gate, label_metrics, likes_ndcg_by_context,
                                        offline_ndcg, score_labels)

log = logging.getLogger(__name__)
ProgressFn = Callable[[float, str], None]


class FinetuneError(RecsysError, ValueError):
    """The fine-tune cannot run (too few labels, unknown base...): the message says what to do."""


@dataclass(frozen=True)
class FinetuneConfig:
    epochs: int = 15
    # Low: the base model is already at its best validation epoch, and continuing its training at 5e-4
    # (even on its own interactions, no labels) lost 6% benchmark NDCG@20; 1e-4 keeps what it knows.
    lr: float = 1e-4
    # A new model (no base checkpoint: the app serves the zero-shot model) starts from random weights, and
    # 1e-4 barely moves it in 15 epochs; it trains at the rate python -m recsys_core.train uses.
    new_model_lr: float = 2e-3
    heldout_fraction: float = 0.2
    min_labels: int = 20  # below this a fine-tune learns noise: refuse with a clear message
    min_heldout: int = 5
    patience: int = 4
    batch_labels: int = 32  # small batches: label sets are small, and each step is one catalog pass
    seed: int = 0
    tolerance: float = 0.0  # the gate: candidate metric >= base metric - tolerance
    # The held-out labels are few (tens of profiles), so their AUC and pairwise accuracy move by a few
    # points between two equally good models. The gate calls the candidate worse on them only when a
    # paired bootstrap over held-out profiles is this confident it is (0 = any drop at all is "worse").
    # The offline protocol (hundreds of users) stays strict.
    gate_confidence: float = 0.95
    bootstrap_samples: int = 1000
    # Each training context's liked items also train the interaction softmax, as a pseudo-user whose
    # interactions are the context's items followed by the likes: "given C, X is next" is what the base
    # model learnt from interactions, so a like teaches it in the same terms (see like_interactions).
    likes_as_interactions: bool = True
    # Weight of the binary cross-entropy on likes and dislikes. Off by default: on the feedback-loop
    # benchmark (selection seed 1) even 0.3 lowered NDCG@20 (0.304 -> 0.286) and failed the offline gate;
    # likes still train through the softmax (likes_as_interactions).
    label_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.lr <= 0 or self.new_model_lr <= 0 or not 0 < self.heldout_fraction < 1:
            raise ValueError("epochs >= 1, lr > 0, new_model_lr > 0 and 0 < heldout_fraction < 1 are required")
        if self.label_weight < 0:
            raise ValueError(f"label_weight is {self.label_weight}; it must be >= 0")
        if not 0 <= self.gate_confidence < 1 or self.bootstrap_samples < 1:
            raise ValueError(f"gate_confidence is {self.gate_confidence} (allowed 0 <= c < 1) and bootstrap_samples "
                             f"{self.bootstrap_samples} (>= 1)")


@dataclass(frozen=True)
class FinetuneResult:
    out_dir: Path
    gate: GateResult
    n_train: int
    n_heldout: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)


def movielens_offline_split(data_root: Path, catalog: Catalog) -> tuple[list[list[int]], list[list[int]]]:
    """The warm *validation* split (never the test split) as (oldest-first histories, targets) in catalog indices."""
    from recsys_core.data.splits import load_split

    split = load_split(Path(data_root), "warm", validation=True)
    train = split.train.sort_values("timestamp", kind="stable")
    hist = train.groupby(train["user_id"].astype(str))["item_id"].apply(
        lambda s: [catalog.index_of(str(i)) for i in s if str(i) in catalog])
    test = split.test.groupby(split.test["user_id"].astype(str))["item_id"].apply(
        lambda s: [catalog.index_of(str(i)) for i in s if str(i) in catalog])
    users = sorted(set(hist.index) & set(test.index))
    return [hist[u] for u in users], [test[u] for u in users]


# -- the job ---------------------------------------------------------------------------------------
def finetune(*, examples: pd.DataFrame, heldout: pd.DataFrame, catalog: Catalog, features, text_encoder, image_encoder,
             base_model, base_dir: Path | None, out_dir: Path, cache_dir: Path | None,
             config: FinetuneConfig = FinetuneConfig(), extra_metrics: dict | None = None,
             progress: ProgressFn | None = None,
             offline: tuple[Sequence[Sequence[int]], Sequence[Sequence[int]]] | None = None) -> FinetuneResult:
    """Train a candidate from ``base_dir`` (None: a new fusion model) on ``examples``; gate it on ``heldout``.

    ``base_model`` is the model the app serves now (zero-shot or a FusionServing): the gate
    compares the candidate against exactly what users get today. ``offline``: (histories,
    targets) of an offline split; when given, its NDCG@20 joins the gate.
    """
    from recsys_core.model.checkpoint import (HYBRID, checkpoint_kind, checkpoint_version, load_checkpoint,
                                              read_interactions, read_items, save_checkpoint)
    from recsys_core.model.content import build_content, media_dims
    from recsys_core.model.fusion import FusionConfig, make_tops
    from recsys_core.serving.finetuned import FusionServing
    from recsys_core.training.loop import TrainedModel, fit

    start = time.perf_counter()
    train_data, _ = to_label_data(examples, catalog)
    held_data, _ = to_label_data(heldout, catalog)
    if len(train_data.items) < config.min_labels:
        raise FinetuneError(f"{len(train_data.items)} usable training labels; at least {config.min_labels} are needed "
                            "(collect more judgements first)")
    if len(held_data.items) < config.min_heldout:
        raise FinetuneError(f"{len(held_data.items)} held-out labels; at least {config.min_heldout} are needed to gate a "
                            "candidate (collect more judgements, from more profiles)")
    report = progress or (lambda fraction, message: None)
    report(0.02, "preparing")

    def metrics_of(model) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
        """Held-out label metrics, and the per-label scores and per-context likes NDCG behind them
        (the gate's bootstrap resamples both)."""
        scores = score_labels(model, held_data)
        out = label_metrics(scores, held_data)
        likes = likes_ndcg_by_context(model, held_data)
        out["likes_ndcg@20"] = float(np.nanmean(likes)) if (~np.isnan(likes)).any() else float("nan")
        return out, scores, likes

    base_metrics, base_scores, base_likes = metrics_of(base_model)
    if offline is not None:
        base_metrics["offline_ndcg@20"] = offline_ndcg(base_model, *offline)

    if base_dir is None or checkpoint_kind(Path(base_dir)) == HYBRID:
        return _finetune_hybrid(examples=examples, catalog=catalog, features=features, base_model=base_model,
                                base_dir=base_dir, out_dir=out_dir, config=config, train_data=train_data,
                                held_data=held_data, base=(base_metrics, base_scores, base_likes),
                                metrics_of=metrics_of, offline=offline, extra_metrics=extra_metrics,
                                report=report, start=start, text_encoder=text_encoder, image_encoder=image_encoder)
    known = torch.zeros(len(catalog), dtype=torch.bool)
    init_state = None
    if base_dir is not None:
        model, saved = load_checkpoint(base_dir, text_encoder, image_encoder)
        fusion = model.config
        init_state = model.state_dict()
        saved_items = read_items(base_dir)
        saved_known = saved_items.known_for(catalog.ids) if saved_items is not None else None
        if saved_known is not None:
            known = saved_known
        parent = checkpoint_version(Path(base_dir))
    else:
        fusion = FusionConfig(text_dim=features.text.shape[1], image_dim=features.image.shape[1], n_items=len(catalog),
                              **media_dims(features))
        parent = getattr(base_model, "version", None)
        known[sorted(set(train_data.items) | {i for h in train_data.histories for i in h})] = True
    content = build_content(catalog, text_encoder, features.regions, features.has_image, fusion, cache_dir,
                            text_pooled=features.text, image_pooled=features.image, progress=False,
                            image_encoder=image_encoder if fusion.image_top else None, audio=features.audio,
                            video=features.video)
    lr = config.lr if base_dir is not None else config.new_model_lr
    train_cfg = TrainConfig(epochs=config.epochs, lr=lr, warmup_epochs=1, patience=config.patience,
                            seed=config.seed, label_weight=config.label_weight, batch_labels=config.batch_labels)

    def validate(trained: TrainedModel) -> float:
        # Early stopping on the held-out labels (the gate's own measure, so no separate split is wasted).
        serving = FusionServing(trained.model, trained.content, trained.interactions.known_items, "candidate",
                                split_modalities=False)
        # Only the label metrics: the likes NDCG (a full-catalog ranking per context) is the gate's, not this.
        metrics = label_metrics(score_labels(serving, held_data), held_data)
        log.info("held-out: pairwise accuracy %.4f, AUC %.4f", metrics["pairwise_accuracy"], metrics["auc"])
        value = metrics["pairwise_accuracy"] if not math.isnan(metrics["pairwise_accuracy"]) else metrics["auc"]
        return 0.0 if math.isnan(value) else value

    def on_epoch(record: dict[str, float]) -> None:
        report(0.05 + 0.9 * record["epoch"] / config.epochs, f"epoch {int(record['epoch'])}/{config.epochs}: "
               f"loss {record['loss']:.4f}, held-out {record['val_ndcg@20']:.4f}")

    replay = pd.DataFrame({"user_id": pd.Series(dtype=str), "item_id": pd.Series(dtype=str),
                           "timestamp": pd.Series(dtype=float)})
    saved_replay = read_interactions(base_dir) if base_dir is not None else None
    if saved_replay is not None:
        # Replay the base model's own training interactions beside the labels (softmax + BCE every step).
        replay = saved_replay
        report(0.04, f"replaying the base model's {len(replay):,} training interactions beside the labels")
        train_cfg = TrainConfig(**{**asdict(train_cfg), "batch_labels": max(config.batch_labels, 256)})
    # Pseudo-users a parent fine-tune saved with its interactions come from labels, which are read afresh.
    replay = replay[~replay["user_id"].astype(str).str.startswith(LIKE_USER_PREFIX)]
    if not config.likes_as_interactions and config.label_weight == 0:
        log.warning("likes_as_interactions off and label_weight 0: the labels train nothing (a replay-only control)")
    if config.likes_as_interactions:
        likes = like_interactions(examples, catalog)
        report(0.045, f"{len(likes):,} interactions of {likes['user_id'].nunique()} liked-in-context pseudo-users "
                      "join the softmax")
        replay = pd.concat([replay, likes], ignore_index=True)
    text_top, image_top = make_tops(fusion, text_encoder, image_encoder if fusion.image_top else None)
    trained = fit(replay, catalog, content, fusion, train_cfg, progress=False, text_top=text_top, image_top=image_top,
                  labels=train_data if config.label_weight > 0 else None, init_state=init_state, known_items=known,
                  validate=validate, on_epoch=on_epoch)
    candidate_serving = FusionServing(trained.model.cpu(), trained.content.to("cpu"), known, "candidate",
                                      split_modalities=False)
    cand_metrics, result = _gate_candidate(candidate_serving, (base_metrics, base_scores, base_likes), held_data,
                                           config, metrics_of, offline, report)
    save_checkpoint(trained, Path(out_dir), metrics={
        "heldout_base": base_metrics, "heldout_candidate": cand_metrics, "gate_passed": result.passed,
        "gate_reason": result.reason, "parent": parent, "n_train_labels": len(train_data.items),
        "n_heldout_labels": len(held_data.items), "finetune": asdict(config), **(extra_metrics or {}),
    }, fingerprint_info={"labels": len(train_data.items), "catalog": catalog.name, "items": len(catalog)},
        encoders={"text": text_encoder.weights_id, "image": image_encoder.weights_id})
    report(1.0, "done")
    return FinetuneResult(Path(out_dir), result, len(train_data.items), len(held_data.items),
                          time.perf_counter() - start, trained.history)


def _gate_candidate(candidate, base, held_data, config: FinetuneConfig, metrics_of, offline, report
                    ) -> tuple[dict[str, float], GateResult]:
    """The candidate's held-out metrics and the gate's verdict against the base's (``base``: metrics, per-label
    scores, per-context likes NDCG), the same for the fusion and the hybrid candidates."""
    base_metrics, base_scores, base_likes = base
    cand_metrics, cand_scores, cand_likes = metrics_of(candidate)
    if offline is not None:
        report(0.93, "offline evaluation")
        cand_metrics["offline_ndcg@20"] = offline_ndcg(candidate, *offline)
    p_worse = bootstrap_worse(base_scores, cand_scores, held_data, samples=config.bootstrap_samples,
                              seed=config.seed, base_likes=base_likes, cand_likes=cand_likes)
    cand_metrics.update({f"p_worse_{name}": value for name, value in p_worse.items()})
    result = gate(base_metrics, cand_metrics, config.tolerance, p_worse, config.gate_confidence)
    report(0.97, "saving the candidate")
    return cand_metrics, result


def _finetune_hybrid(*, examples, catalog, features, base_model, base_dir, out_dir, config: FinetuneConfig, train_data,
                     held_data, base, metrics_of, offline, extra_metrics, report, start, text_encoder,
                     image_encoder) -> FinetuneResult:
    """The hybrid candidate (:mod:`recsys_core.training.finetune_hybrid`), gated as the fusion one is."""
    from recsys_core.model.checkpoint import checkpoint_version, save_hybrid
    from recsys_core.training.finetune_hybrid import base_of, fit_candidate

    base_metrics, base_scores, base_likes = base
    origin = base_of(base_model, Path(base_dir) if base_dir is not None else None)
    parent = checkpoint_version(Path(base_dir)) if base_dir is not None else getattr(base_model, "version", None)
    candidate, hybrid, zs_config, frame, table = fit_candidate(origin, examples, catalog, features, data=train_data,
                                                               seed=config.seed, progress=report)
    cand_metrics, result = _gate_candidate(candidate, base, held_data, config, metrics_of, offline, report)
    seconds = time.perf_counter() - start
    save_hybrid(Path(out_dir), config=hybrid, zeroshot=zs_config.to_dict(), collab=candidate.collab,
                item_ids=catalog.ids, frame=frame, metrics={
                    "heldout_base": base_metrics, "heldout_candidate": cand_metrics, "gate_passed": result.passed,
                    "gate_reason": result.reason, "parent": parent, "n_train_labels": len(train_data.items),
                    "n_heldout_labels": len(held_data.items), "finetune": asdict(config), "selection": table,
                    "train_seconds": seconds, **(extra_metrics or {})},
                fingerprint_info={"labels": len(train_data.items), "catalog": catalog.name, "items": len(catalog)},
                encoders={"text": text_encoder.weights_id, "image": image_encoder.weights_id})
    report(1.0, "done")
    history = [{"epoch": 1.0, "val_ndcg@20": float(max((r["cv_likes_ndcg@20"] for r in table
                                                         if not math.isnan(r["cv_likes_ndcg@20"])), default=0.0))}]
    return FinetuneResult(Path(out_dir), result, len(train_data.items), len(held_data.items), seconds, history)
