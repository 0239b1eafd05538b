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

import argparse
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.data.catalog import Catalog
from recsys_core.model.content import build_content
from recsys_core.model.checkpoint import fingerprint, save_checkpoint
from recsys_core.model.fusion import FusionConfig, FusionRecommender, ItemContent, ItemVectors, make_tops

if TYPE_CHECKING:
    from recsys_core.training.distributed import Runtime

log = logging.getLogger(__name__)


STRATEGIES: tuple[str, ...] = ("frozen", "top-layers", "lora")


@dataclass(frozen=True)
class TrainConfig:
    # frozen: encoders frozen, features cached. top-layers: the top ``text_layers`` text blocks and the
    # CNN head train too. lora: LoRA adapters (peft) on the top ``text_layers`` text blocks.
    strategy: str = "frozen"
    epochs: int = 40
    batch_users: int = 512
    # The item tower runs over the whole catalog once per step whatever the batch, so each user
    # contributes several (history, target) rows per step: more signal for the same compute.
    targets_per_user: int = 4
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_epochs: int = 3
    grad_clip: float = 1.0
    patience: int = 8
    val_fraction: float = 0.1
    # What early stopping watches: "warm" (held-out interactions of known items) or "cold-items"
    # (held-out items never trained on: the cold-item protocol's question).
    val_mode: str = "warm"
    seed: int = 0
    text_layers: int = 1  # top-layers / lora: how many top text blocks train
    lora_rank: int = 8
    encoder_lr: float | None = None  # learning rate of encoder tops; None: 1e-4 (top-layers), 1e-3 (lora)
    label_weight: float = 1.0  # weight of the BCE loss on explicit like/dislike labels, when given
    batch_labels: int = 256  # explicit labels per step
    device: str = "auto"  # auto = CUDA when available
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU; or fp32 / bf16

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy {self.strategy!r} is not known; use one of: {', '.join(STRATEGIES)}")
        if self.epochs < 1 or self.batch_users < 1 or self.lr <= 0:
            raise ValueError("epochs, batch_users and lr must be positive")
        if self.text_layers < 1 or self.lora_rank < 1:
            raise ValueError("text_layers and lora_rank must be >= 1")
        if self.val_mode not in ("warm", "cold-items"):
            raise ValueError(f"val_mode {self.val_mode!r}: use warm or cold-items")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision {self.precision!r}: use auto, fp32 or bf16")

    @property
    def tops_lr(self) -> float:
        if self.encoder_lr is not None:
            return self.encoder_lr
        return 1e-3 if self.strategy == "lora" else 1e-4

    def fusion_overrides(self) -> dict[str, object]:
        """What the strategy changes in the model config."""
        if self.strategy == "top-layers":
            return {"text_top_layers": self.text_layers, "image_top": True}
        if self.strategy == "lora":
            return {"text_top_layers": self.text_layers, "lora_rank": self.lora_rank}
        return {}


@dataclass(frozen=True)
class LabelData:
    """Explicit judgements: (history before the judgement, judged item, label 1 = like / 0 = dislike)."""

    histories: list[list[int]]
    items: list[int]
    labels: list[float]

    def __post_init__(self) -> None:
        if not len(self.histories) == len(self.items) == len(self.labels):
            raise ValueError("histories, items and labels must have the same length")


@dataclass
class Interactions:
    """Per-user training items (catalog indices), most recent first."""

    users: list[str]
    histories: list[list[int]]
    known_items: torch.Tensor  # [N] bool: items with at least one training interaction
    item_ids: tuple[str, ...] = ()  # the catalog order the indices refer to

    @classmethod
    def from_frame(cls, frame, catalog: Catalog) -> "Interactions":
        frame = frame.sort_values("timestamp", ascending=False, kind="stable")
        index = {item_id: i for i, item_id in enumerate(catalog.ids)}
        users, histories = [], []
        for user, group in frame.groupby(frame["user_id"].astype(str), sort=True):
            items = [index[str(i)] for i in group["item_id"] if str(i) in index]
            if items:
                users.append(str(user))
                histories.append(items)
        known = torch.zeros(len(catalog), dtype=torch.bool)
        for items in histories:
            known[items] = True
        return cls(users, histories, known, tuple(catalog.ids))


def _pad_histories(histories: Sequence[Sequence[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.zeros(len(histories), length, dtype=torch.long)
    mask = torch.zeros(len(histories), length, dtype=torch.bool)
    for row, items in enumerate(histories):
        items = list(items)[:length]
        if items:
            out[row, : len(items)] = torch.tensor(items)
            mask[row, : len(items)] = True
    return out, mask


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
        hist, mask = _pad_histories(histories, self.fusion.history_len)
        users = self.model.user_vectors(vectors, hist.to(self.device), mask.to(self.device))
        return self.model.logits(users, vectors).float().cpu()


def _autocast(train: TrainConfig, device: torch.device):
    """bf16 autocast on CUDA (or when asked); a no-op context otherwise (the one-process runtime's autocast)."""
    from recsys_core.training.distributed import LocalRuntime, wants_bf16

    return LocalRuntime(device, wants_bf16(train.precision, device)).autocast()


# One softmax row: (held-out target, the user's other items as history, all the user's positives).
Example = tuple[int, list[int], list[int]]


def _sample_examples(fit_hist: list[list[int]], rows: list[int], train: TrainConfig,
                     rng: random.Random) -> list[Example]:
    """Up to ``targets_per_user`` rows per user.

    Every process draws the whole step's rows (same ``rng``, same order) and then keeps its share.
    """
    examples = []
    for r in rows:
        items = fit_hist[r]
        for t in rng.sample(range(len(items)), min(train.targets_per_user, len(items))):
            examples.append((items[t], items[:t] + items[t + 1 :], items))
    return examples


def _softmax_loss(model: FusionRecommender, vectors: ItemVectors, examples: list[Example], known: torch.Tensor,
                  fusion: FusionConfig) -> torch.Tensor:
    """Mean cross-entropy of the rows; full softmax over training items minus the user's other positives."""
    device = known.device
    targets = [target for target, _, _ in examples]
    hist, mask = _pad_histories([history for _, history, _ in examples], fusion.history_len)
    users = model.user_vectors(vectors, hist.to(device), mask.to(device))
    logits = model.logits(users, vectors).float()
    block = ~known.expand(len(targets), -1).clone()
    for row, (_, _, others) in enumerate(examples):
        block[row, others] = True
    target = torch.tensor(targets, device=device)
    block[torch.arange(len(targets), device=device), target] = False
    return F.cross_entropy(logits.masked_fill(block, float("-inf")), target)


def _label_loss(model: FusionRecommender, vectors: ItemVectors, labels: LabelData, batch: list[int],
                fusion: FusionConfig) -> torch.Tensor:
    device = vectors.vectors.device
    hist, mask = _pad_histories([labels.histories[i] for i in batch], fusion.history_len)
    users = model.user_vectors(vectors, hist.to(device), mask.to(device))
    items = vectors.take(torch.tensor([labels.items[i] for i in batch], device=device))
    target = torch.tensor([labels.labels[i] for i in batch], device=device)
    return F.binary_cross_entropy_with_logits(model.pair_logits(users, items).float(), target)


def _label_loss_subset(model: FusionRecommender, content: ItemContent, item_index: torch.Tensor, known: torch.Tensor,
                       labels: LabelData, batch: list[int], fusion: FusionConfig) -> torch.Tensor:
    """:func:`_label_loss` computing item vectors only for the items in the batch's histories and targets."""
    needed = sorted({labels.items[i] for i in batch} | {h for i in batch for h in labels.histories[i][: fusion.history_len]})
    position = {item: row for row, item in enumerate(needed)}
    index = torch.tensor(needed, device=item_index.device)
    vectors = model.item_vectors(content.take(index), item_index[index], known[index])
    local = LabelData([[position[h] for h in labels.histories[i][: fusion.history_len]] for i in batch],
                      [position[labels.items[i]] for i in batch], [labels.labels[i] for i in batch])
    return _label_loss(model, vectors, local, list(range(len(batch))), fusion)


@dataclass(frozen=True)
class _StepShare:
    """This process's share of one global step, weighted so that the shares add up to the global loss.

    DistributedDataParallel averages gradients over the N processes, so a share of ``m`` of the step's
    ``M`` rows is weighted ``m * N / M``: the average of the weighted share means is then the mean over
    all ``M`` rows, exactly the single-process loss (weight 1 with one process).
    """

    softmax: bool  # the step has interaction rows: the whole catalog goes through the item tower
    examples: list[Example]
    labels: list[int]  # indices into the LabelData
    example_weight: float
    label_weight: float


def _weighted(loss: torch.Tensor, weight: float) -> torch.Tensor:
    return loss if weight == 1.0 else loss * weight  # weight 1: the graph (and the numbers) of a plain mean


class _TrainStep(nn.Module):
    """One step's loss as a module ``forward``.

    DistributedDataParallel arms its gradient all-reduce in ``forward``; the loop calls this module
    (wrapped by Accelerate) instead of ``model.item_vectors`` and friends, which would bypass it.
    ``content``, ``item_index`` and ``known`` are plain attributes, not buffers: DDP would
    re-broadcast buffers from process 0 at every step.
    """

    def __init__(self, model: FusionRecommender, content: ItemContent, item_index: torch.Tensor, known: torch.Tensor,
                 fusion: FusionConfig, labels: LabelData | None, label_weight: float) -> None:
        super().__init__()
        self.model = model
        self.content, self.item_index, self.known = content, item_index, known
        self.fusion, self.labels, self.label_weight = fusion, labels, label_weight

    def forward(self, share: _StepShare) -> torch.Tensor:
        model, fusion, labels = self.model, self.fusion, self.labels
        if share.labels and labels is None:
            raise ValueError("this step has label rows but the trainer was given no labels")
        loss: torch.Tensor | None = None
        if share.softmax:  # the softmax ranks every training item: the whole catalog goes through the tower
            vectors = model.item_vectors(self.content, self.item_index, self.known)
            if share.examples:
                loss = _softmax_loss(model, vectors, share.examples, self.known, fusion)
                loss = _weighted(loss, share.example_weight)
            if share.labels:
                part = _weighted(_label_loss(model, vectors, labels, share.labels, fusion), share.label_weight)
                part = self.label_weight * part
                loss = part if loss is None else loss + part
        elif share.labels:  # labels only: just the items the batch mentions (a few hundred instead of the catalog)
            part = _label_loss_subset(model, self.content, self.item_index, self.known, labels, share.labels, fusion)
            loss = self.label_weight * _weighted(part, share.label_weight)
        if loss is None:
            # This process's share of a tiny step is empty (fewer rows than processes): a zero that still
            # reaches every parameter, so the process joins the gradient all-reduce with nothing to add.
            loss = sum(p.sum() for p in model.parameters() if p.requires_grad) * 0.0  # type: ignore[assignment]
        return loss  # type: ignore[return-value]


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recsys_core.train", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-100k", choices=["movielens-100k"])
    parser.add_argument("--data-root", type=Path, required=True,
                        help="the dataset folder: interactions (splits/*.csv or ratings.csv) and, for MovieLens, "
                             "items.csv + posters")
    parser.add_argument("--catalog", type=Path, default=None,
                        help="a catalog folder in the generic format (items.csv + images) instead of the MovieLens "
                             "items under --data-root; interactions still come from --data-root")
    parser.add_argument("--protocol", default="warm", choices=["warm", "cold-item"])
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="feature cache in <data-dir>/features")
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--text-encoder", default="minilm",
                        help="'minilm' (packaged all-MiniLM-L6-v2), 'tiny-random' (tests), a local folder or a hub id")
    parser.add_argument("--image-encoder", default="efficientnet-lite0",
                        help="'efficientnet-lite0' (packaged), 'tiny-random' (tests) or a timm model name")
    parser.add_argument("--strategy", default="frozen", choices=list(STRATEGIES),
                        help="frozen: encoders frozen (fast on CPU); top-layers: also train the top --text-layers "
                             "text blocks and the CNN head; lora: LoRA adapters (peft) on the top --text-layers text blocks")
    parser.add_argument("--text-layers", type=int, default=None,
                        help="top text blocks that train (top-layers default 1, lora default 2)")
    parser.add_argument("--lora-rank", type=int, default=TrainConfig.lora_rank)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                        help="auto = CUDA when available (bf16 autocast there)")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto = bf16 autocast on CUDA, fp32 on the CPU")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-users", type=int, default=TrainConfig.batch_users,
                        help="users per step, over all processes together (each of N processes takes 1/N of the rows)")
    parser.add_argument("--patience", type=int, default=TrainConfig.patience,
                        help="epochs without a better validation NDCG@20 before stopping")
    parser.add_argument("--modalities", default="both", choices=["both", "text", "image"])
    parser.add_argument("--fusion", default="transformer", choices=["transformer", "mean"])
    parser.add_argument("--no-ids", action="store_true", help="content only, no item-ID embedding")
    parser.add_argument("--dropout", type=float, default=None, help=f"model dropout (default {FusionConfig.dropout})")
    parser.add_argument("--id-dropout", type=float, default=None,
                        help="probability of dropping an item's ID part in training "
                             f"(default {FusionConfig.id_dropout})")
    parser.add_argument("--val-mode", default=None, choices=["warm", "cold-items"],
                        help="what early stopping watches; default: cold-items for --protocol cold-item, else warm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    args = parser.parse_args(argv)
    train = TrainConfig(epochs=args.epochs, seed=args.seed, strategy=args.strategy, batch_users=args.batch_users,
                        patience=args.patience, text_layers=args.text_layers or (2 if args.strategy == "lora" else 1),
                        lora_rank=args.lora_rank, device=args.device, precision=args.precision,
                        val_mode=args.val_mode or default_val_mode(args.protocol))
    fusion_options = {name: value for name, value in (("dropout", args.dropout), ("id_dropout", args.id_dropout))
                      if value is not None}
    from recsys_core.data.catalog import load_catalog_folder
    from recsys_core.training.distributed import runtime_for
    from recsys_core.data.splits import load_split

    runtime = runtime_for(train.device, train.precision)
    # Under N processes only the main one reports; the others speak up for warnings and errors.
    tag = f" [process {runtime.process_index}]" if runtime.num_processes > 1 else ""
    logging.basicConfig(level=logging.INFO if runtime.is_main else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s")
    log.info("%s", runtime.describe())
    torch.set_num_threads(args.threads)
    split = load_split(args.data_root, args.protocol)
    # No --catalog: fit_for_split loads the MovieLens items under data_root (and returns the catalog it used).
    catalog = load_catalog_folder(args.catalog) if args.catalog else None
    trained, catalog = fit_for_split(split, args.data_root, args.data_dir, catalog=catalog, modalities=args.modalities,
                                     fusion_kind=args.fusion, use_ids=not args.no_ids, train=train,
                                     text_encoder=args.text_encoder, image_encoder=args.image_encoder,
                                     runtime=runtime, **fusion_options)
    best = max(h["val_ndcg@20"] for h in trained.history)
    if runtime.is_main:  # every process holds the same model; one writes it
        save_checkpoint(trained, args.out, metrics={"best_val_ndcg@20": best, "protocol": args.protocol,
                                                    "processes": runtime.num_processes},
                        fingerprint_info=fingerprint(split.train, catalog),
                        encoders={"text": args.text_encoder, "image": args.image_encoder})
        log.info("saved %s (best val NDCG@20 %.4f, %.0f s, %d process(es))", args.out, best, trained.seconds,
                 runtime.num_processes)
    runtime.wait_for_everyone()
    runtime.close()


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
                              **{**train.fusion_overrides(), **fusion_options})
        content = build_content(catalog, encoded.text_encoder, features.regions, features.has_image, fusion,
                                Path(data_dir) / "features", text_pooled=features.text, image_pooled=features.image,
                                image_encoder=encoded.image_encoder if fusion.image_top else None,
                                progress=progress and runtime.is_main)
    text_top, image_top = make_tops(fusion, encoded.text_encoder, encoded.image_encoder if fusion.image_top else None)
    trained = fit(split.train, catalog, content, fusion, train, progress=progress, text_top=text_top,
                  image_top=image_top, runtime=runtime)
    return trained, catalog


if __name__ == "__main__":
    main()
