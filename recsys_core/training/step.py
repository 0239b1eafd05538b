"""One training step: the rows it draws (softmax examples, labels), their losses, and each process's share.

The loop calls :class:`_TrainStep` (wrapped by Accelerate under N processes) once per step; see
:mod:`recsys_core.training.loop` for how the shares of N processes add up to the one-process step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recsys_core.model.fusion import FusionConfig, FusionRecommender, ItemContent, ItemVectors
from recsys_core.training.config import TrainConfig
from recsys_core.training.data import LabelData, pad_histories


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
    hist, mask = pad_histories([history for _, history, _ in examples], fusion.history_len)
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
    hist, mask = pad_histories([labels.histories[i] for i in batch], fusion.history_len)
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
