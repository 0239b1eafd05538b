"""Fine-tune the multimodal fusion recommender on interactions (``python -m recsys_core.train --help``).

Strategy ``frozen``: the pretrained encoders are frozen and their outputs cached (text token states,
pooled image regions), so only the fusion model trains: fast on a CPU. Training samples, per user,
one held-out training item as the target and the user's other training items (most recent first)
as history; the loss is a full softmax over the items seen in training, with the user's other
positives masked out. AdamW, weight decay, dropout, linear warm-up then cosine decay, gradient
clipping, early stopping on validation NDCG@20 (validation carved per user from the training
split), seeded. The checkpoint folder is written by :mod:`recsys_core.model.checkpoint`.

Multi-process / multi-GPU fine-tuning: the same command runs data-parallel under Hugging Face
Accelerate (:mod:`recsys_core.training.distributed`), e.g. on one machine with 4 GPUs
``accelerate launch --multi_gpu --num_processes 4 -m recsys_core.train --data-root ... --out DIR``
(bf16 autocast through Accelerate's mixed precision on CUDA), or with 2 CPU processes (gloo)
``accelerate launch --multi_gpu --num_processes 2 -m recsys_core.train --device cpu --threads 1 ...``
(``accelerate launch --cpu`` starts several processes only through MPI, ``--mpirun_hostfile``);
``torchrun --nproc_per_node N -m recsys_core.train ...`` works too. ``--batch-users`` is the global
batch: every process draws the same users and targets for a step (same seed) and computes the loss of
its 1/N of the rows, DistributedDataParallel averages the gradients, and the shares are weighted so
that the step is the single-process step; with dropout off the two agree to float rounding
(tests/recsys_core/training/test_distributed.py). With dropout each process draws its own masks, so results match in
distribution, not bit for bit. Every process runs the item tower over the whole catalog (the softmax
needs all items), so only the user tower and softmax are split. The main process alone validates,
logs, shows progress and writes the checkpoint; the others take its validation metric, so all stop
at the same epoch. One process without a launcher runs the plain PyTorch loop, unchanged.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from recsys_core.data.catalog import Catalog
from recsys_core.model.content import build_content, media_dims
from recsys_core.model.fusion import FusionConfig, FusionRecommender, ItemContent, ItemVectors, make_tops
from recsys_core.training.config import TrainConfig
from recsys_core.training.data import Interactions, LabelData, pad_histories
from recsys_core.training.step import _sample_examples, _StepShare, _TrainStep

if TYPE_CHECKING:
    from recsys_core.training.distributed import Runtime

log = logging.getLogger(__name__)


def validation_ndcg(scores: torch.Tensor, seen: Sequence[Sequence[int]], targets: Sequence[set[int]],
                    candidates: np.ndarray | None = None) -> float:
    """NDCG@20 of held-out items with the same metric code as the offline evaluation.

    ``candidates``: item indices to rank among (cold-item validation); None = every unseen item.
    """
    from recsys_core.evaluation.metrics import evaluate_scores

    if not any(targets):
        return 0.0
    mask = np.zeros(tuple(scores.shape), dtype=bool)
    for row, items in enumerate(seen):
        mask[row, list(items)] = True
    candidate_mask = None
    if candidates is not None:
        candidate_mask = np.zeros(scores.shape[1], dtype=bool)
        candidate_mask[candidates] = True
    return evaluate_scores(scores.numpy(), mask, [sorted(t) for t in targets], [20], candidate_mask=candidate_mask)["ndcg@20"]


def _validation_split(data: Interactions, train: TrainConfig, rng: random.Random):
    """(fit histories, validation targets, validation candidates or None), carved from the training data.

    warm: per user, a random ``val_fraction`` of their items (users with >= 5). cold-items: a random
    ``val_fraction`` of the items leave training entirely and users are ranked among them only, so
    early stopping selects for what the cold-item protocol measures.
    """
    if train.val_mode == "cold-items":
        seen = sorted({i for items in data.histories for i in items})
        held = set(rng.sample(seen, max(1, int(len(seen) * train.val_fraction))))
        fit_hist = [[i for i in items if i not in held] for items in data.histories]
        targets = [{i for i in items if i in held} for items in data.histories]
        return fit_hist, targets, np.array(sorted(held))
    fit_hist, targets = [], []
    for items in data.histories:
        n_val = int(len(items) * train.val_fraction) if len(items) >= 5 else 0
        val = set(rng.sample(items, n_val)) if n_val else set()
        fit_hist.append([i for i in items if i not in val])
        targets.append(val)
    return fit_hist, targets, None


@dataclass
class TrainedModel:
    model: FusionRecommender
    content: ItemContent
    interactions: Interactions
    fusion: FusionConfig
    train: TrainConfig
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    frame: object | None = None  # the interactions it was trained on (saved for replay in later fine-tunes)

    @property
    def device(self) -> torch.device:
        return self.model.log_scale.device

    @torch.no_grad()
    def item_vectors(self) -> ItemVectors:
        self.model.eval()
        n = self.content.text_tokens.shape[0]
        with _autocast(self.train, self.device):
            items = self.model.item_vectors(self.content, torch.arange(n, device=self.device),
                                            self.interactions.known_items.to(self.device))
        return ItemVectors(items.vectors.float(), items.bias.float())

    @torch.no_grad()
    def score_users(self, histories: Sequence[Sequence[int]]) -> torch.Tensor:
        """Scores [U, N] (on the CPU) of all catalog items for users given by their histories (most recent first)."""
        vectors = self.item_vectors()
        hist, mask = pad_histories(histories, self.fusion.history_len)
        users = self.model.user_vectors(vectors, hist.to(self.device), mask.to(self.device))
        return self.model.logits(users, vectors).float().cpu()


def _autocast(train: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA (or when asked); a no-op context otherwise (the one-process runtime's autocast)."""
    from recsys_core.training.distributed import LocalRuntime, wants_bf16

    return LocalRuntime(device, wants_bf16(train.precision, device)).autocast()


def fit(frame, catalog: Catalog, content: ItemContent, fusion: FusionConfig, train: TrainConfig,
        progress: bool = True, *, text_top=None, image_top=None, labels: LabelData | None = None,
        init_state: dict[str, torch.Tensor] | None = None, known_items: torch.Tensor | None = None,
        validate: Callable[["TrainedModel"], float] | None = None,
        on_epoch: Callable[[dict[str, float]], None] | None = None, runtime: "Runtime | None" = None) -> TrainedModel:
    """Train on the interactions in ``frame`` (user_id, item_id, timestamp); returns the best epoch's model.

    ``labels``: explicit like/dislike judgements, trained with binary cross-entropy beside the
    softmax on interactions. ``text_top``/``image_top``: trainable encoder tops (strategies
    top-layers and lora). ``init_state``: start from these weights (continued fine-tuning);
    ``known_items``: items that keep their ID part (default: items with interactions in ``frame``).
    ``validate``: the early-stopping score of a model (default: validation NDCG@20 carved from
    ``frame``). ``on_epoch``: called with each epoch's record (progress reporting).
    ``runtime``: one process or one of N data-parallel ones (default: :func:`recsys_core.training.distributed.runtime_for`).
    Under N processes every process returns the same model; ``validate``, ``on_epoch`` and the
    progress bar run on the main process only.
    """
    from recsys_core.training.distributed import runtime_for

    runtime = runtime or runtime_for(train.device, train.precision)
    # The same seed in every process: the same initial weights, validation split and data order.
    random.seed(train.seed)
    np.random.seed(train.seed)
    torch.manual_seed(train.seed)
    device = runtime.device
    data = Interactions.from_frame(frame, catalog)
    if known_items is not None:
        data.known_items = known_items.clone().bool()
    rng = random.Random(train.seed)
    fit_hist, val_targets, val_candidates = _validation_split(data, train, rng)
    n_items = len(catalog)
    model = FusionRecommender(fusion, text_top, image_top)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(device)
    runtime.seed_per_process(train.seed)
    content = content.to(device)
    tops = {id(p) for m in (text_top, image_top) if m is not None for p in m.parameters()}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    decay = [p for n, p in trainable if id(p) not in tops and p.ndim >= 2 and "ids" not in n and "id_bias" not in n]
    top_params = [p for n, p in trainable if id(p) in tops]
    rest = [p for n, p in trainable if id(p) not in tops and not (p.ndim >= 2 and "ids" not in n and "id_bias" not in n)]
    groups = [{"params": decay, "weight_decay": train.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if top_params:
        groups.append({"params": top_params, "weight_decay": train.weight_decay, "lr": train.tops_lr})
    optimiser = torch.optim.AdamW(groups, lr=train.lr)
    n_labels = len(labels.items) if labels is not None else 0
    steps_per_epoch = max(1, math.ceil(len(data.users) / train.batch_users), math.ceil(n_labels / train.batch_labels))
    total, warm = train.epochs * steps_per_epoch, train.warmup_epochs * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: (s + 1) / max(1, warm) if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    known_cpu = data.known_items.clone()
    if val_candidates is not None:
        known_cpu[torch.from_numpy(val_candidates)] = False  # validation items are cold: never trained on
    known = known_cpu.to(device)
    item_index = torch.arange(n_items, device=device)
    # Which parameters a step can leave out: the Transformer under fusion "mean", the projection (and encoder
    # top) of a modality the model does not read. Otherwise every step reaches every trainable parameter
    # (an empty share too: see _TrainStep).
    some_unused = fusion.fusion != "transformer" or fusion.modalities != "both"
    step_module, optimiser = runtime.prepare(_TrainStep(model, content, item_index, known, fusion, labels,
                                                        train.label_weight), optimiser,
                                             find_unused_parameters=some_unused)
    val_rows = [r for r in range(len(fit_hist)) if fit_hist[r] and val_targets[r]]
    label_order = list(range(n_labels))
    label_batch = math.ceil(n_labels / steps_per_epoch) if n_labels else 0
    n, reported = runtime.num_processes, False
    best, best_state, bad, history = -1.0, None, 0, []
    start = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(range(train.epochs), desc=f"train ({train.strategy})", unit="epoch",
               disable=not (progress and runtime.is_main))
    for epoch in bar:
        model.train()
        # Every process draws the same order and rows (same rng), then keeps its share of each step:
        # the global batch is ``batch_users`` users whatever the number of processes.
        order = list(range(len(data.users)))
        rng.shuffle(order)
        rng.shuffle(label_order)
        losses = []
        epoch_start = time.perf_counter()
        for step in range(steps_per_epoch):
            b = step * train.batch_users
            rows = [r for r in order[b : b + train.batch_users] if len(fit_hist[r]) >= 2]
            batch_labels = label_order[step * label_batch : (step + 1) * label_batch]
            if not rows and not batch_labels:
                continue
            examples = _sample_examples(fit_hist, rows, train, rng) if rows else []
            mine, my_labels = runtime.shard(examples), runtime.shard(batch_labels)
            share = _StepShare(bool(rows), mine, my_labels,
                               len(mine) * n / len(examples) if examples else 0.0,
                               len(my_labels) * n / len(batch_labels) if batch_labels else 0.0)
            if n > 1 and not reported and runtime.is_main:
                log.info("data-parallel: process 0 computes %d of the step's %d rows (%d of %d labels)", len(mine),
                         len(examples), len(my_labels), len(batch_labels))
                reported = True
            with runtime.autocast():
                loss = step_module(share)
            optimiser.zero_grad(set_to_none=True)
            runtime.backward(loss)
            runtime.clip_grad_norm_([p for _, p in trainable], train.grad_clip)
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
        train_seconds = time.perf_counter() - epoch_start
        # The mean over processes of their weighted shares is the global loss (see _StepShare).
        epoch_loss = runtime.mean(float(np.mean(losses)) if losses else float("nan"))
        val = float("nan")
        if runtime.is_main:
            trained = TrainedModel(model, content, data, fusion, train)
            val = validate(trained) if validate is not None else validation_ndcg(
                trained.score_users([fit_hist[r] for r in val_rows]), [fit_hist[r] for r in val_rows],
                [val_targets[r] for r in val_rows], val_candidates)
        # Every process takes the main process's metric, so all take the same early-stopping decision.
        val = runtime.broadcast(val)
        history.append({"epoch": epoch + 1, "loss": epoch_loss, "val_ndcg@20": val,
                        "seconds": time.perf_counter() - epoch_start, "train_seconds": train_seconds})
        bar.set_postfix(loss=f"{epoch_loss:.3f}", val=f"{val:.4f}")
        if on_epoch is not None and runtime.is_main:
            on_epoch(history[-1])
        if val > best:
            best, bad = val, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= train.patience:
                if runtime.is_main:
                    log.info("early stop at epoch %d (best val NDCG@20 %.4f)", epoch + 1, best)
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainedModel(model, content, data, fusion, train, history, time.perf_counter() - start, frame=frame)


def default_val_mode(protocol: str) -> str:
    """Early stopping on warm validation for both protocols.

    Measured on the cold-item *validation* split (coldval files), seed 0: stopping on held-out cold
    items ("cold-items") stopped at epoch 12 with recall@20 0.276, stopping on warm validation ran
    40 epochs for 0.288; the inner cold validation (a tenth of the training items) is too small and
    noisy to pick the epoch. ``--val-mode cold-items`` stays available.
    """
    return "warm"


def fit_for_split(split, data_root: Path, data_dir: Path, *, modalities: str = "both", fusion_kind: str = "transformer",
                  use_ids: bool = True, train: TrainConfig | None = None, progress: bool = True,
                  catalog: Catalog | None = None, text_encoder: str = "minilm",
                  image_encoder: str = "efficientnet-lite0", runtime: "Runtime | None" = None,
                  **fusion_options) -> tuple[TrainedModel, Catalog]:
    """Build the catalog's encoder features, then train on ``split.train``.

    ``catalog``: default the MovieLens items under ``data_root``. ``text_encoder``/``image_encoder``:
    encoder names as the app takes them. Under N processes the main process extracts (and caches) the
    features first; the others then read the cache instead of computing it again.
    """
    from recsys_core.config import ImageEncoderConfig, TextEncoderConfig
    from recsys_core.data.adapters import load_movielens_100k
    from recsys_core.encoders.features import encode_catalog
    from recsys_core.training.distributed import runtime_for

    train = train or TrainConfig()
    runtime = runtime or runtime_for(train.device, train.precision)
    catalog = catalog or load_movielens_100k(Path(data_root))
    with runtime.main_process_first():
        # The runtime's device type: "cuda" under a launcher is this process's own GPU (Accelerate selects it).
        encoded = encode_catalog(catalog, TextEncoderConfig(model=text_encoder), ImageEncoderConfig(model=image_encoder),
                                 Path(data_dir) / "features", device=runtime.device.type)
        features = encoded.features
        fusion = FusionConfig(n_items=len(catalog) if use_ids else 0, modalities=modalities, fusion=fusion_kind,  # type: ignore[arg-type]
                              text_dim=features.text.shape[1], image_dim=features.image.shape[1],
                              **media_dims(features), **{**train.fusion_overrides(), **fusion_options})
        content = build_content(catalog, encoded.text_encoder, features.regions, features.has_image, fusion,
                                Path(data_dir) / "features", text_pooled=features.text, image_pooled=features.image,
                                image_encoder=encoded.image_encoder if fusion.image_top else None,
                                progress=progress and runtime.is_main, audio=features.audio, video=features.video)
    text_top, image_top = make_tops(fusion, encoded.text_encoder, encoded.image_encoder if fusion.image_top else None)
    trained = fit(split.train, catalog, content, fusion, train, progress=progress, text_top=text_top,
                  image_top=image_top, runtime=runtime)
    return trained, catalog
