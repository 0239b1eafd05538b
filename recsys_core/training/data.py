"""Training data in catalog-index space: interactions per user and explicit like/dislike labels."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator, Sequence

import pandas as pd

import torch

from recsys_core.data.catalog import Catalog

log = logging.getLogger(__name__)


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


def pad_histories(histories: Sequence[Sequence[int]], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    out = torch.zeros(len(histories), length, dtype=torch.long)
    mask = torch.zeros(len(histories), length, dtype=torch.bool)
    for row, items in enumerate(histories):
        items = list(items)[:length]
        if items:
            out[row, : len(items)] = torch.tensor(items)
            mask[row, : len(items)] = True
    return out, mask


# -- labels -> indices -----------------------------------------------------------------------------
def _rows_in_catalog(examples: pd.DataFrame, catalog: Catalog) -> Iterator[tuple[tuple[str, ...], str, object]]:
    """(context ids, item id, label) of each example, in order, that the catalog can serve: its item and
    every item of its (non-empty) context are in the catalog; the others are skipped."""
    for context, item, label in zip(examples["context_ids"], examples["item_id"], examples["label"]):
        ids = tuple(str(i) for i in context)
        if str(item) in catalog and ids and all(i in catalog for i in ids):
            yield ids, str(item), label


def to_label_data(examples: pd.DataFrame, catalog: Catalog) -> tuple[LabelData, int]:
    """Map aggregated examples (context_ids, item_id, label) to catalog indices; returns (data, dropped).

    Examples naming an item the catalog no longer has are dropped (counted, logged). The context
    order is the order people liked things in, so the most recent is last; the model reads
    histories most recent first.
    """
    histories, items, labels = [], [], []
    for ids, item, label in _rows_in_catalog(examples, catalog):
        histories.append([catalog.index_of(i) for i in reversed(ids)])
        items.append(catalog.index_of(item))
        labels.append(float(label))
    dropped = len(examples) - len(items)
    if dropped:
        log.warning("%d label(s) name items that are not in the catalog (or have no context): skipped", dropped)
    return LabelData(histories, items, labels), dropped


LIKE_USER_PREFIX = "label-ctx-"


def like_interactions(examples: pd.DataFrame, catalog: Catalog) -> pd.DataFrame:
    """Likes as interactions (user_id, item_id, timestamp): one pseudo-user per context with likes.

    The pseudo-user ``label-ctx-<hash of the context>`` interacted with the context's items (in the
    order they were liked), then with the items liked in that context, so the interaction softmax
    learns context -> liked item the way the base model learnt history -> next item. Labels >= 0.5
    are likes; items (or contexts) the catalog does not hold are left out.
    """
    import hashlib

    rows: list[tuple[str, str, float]] = []
    liked: dict[tuple[str, ...], list[str]] = {}
    for ids, item, label in _rows_in_catalog(examples, catalog):
        if float(label) >= 0.5:
            liked.setdefault(ids, []).append(item)
    for ids, items in liked.items():
        user = LIKE_USER_PREFIX + hashlib.sha256("\x1f".join(ids).encode()).hexdigest()[:16]
        sequence = list(dict.fromkeys([*ids, *items]))  # a liked item already in the context counts once
        rows.extend((user, item, float(t)) for t, item in enumerate(sequence))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).astype({"user_id": str, "item_id": str})
