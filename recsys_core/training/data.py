"""Training data in catalog-index space: interactions per user and explicit like/dislike labels."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from recsys_core.data.catalog import Catalog


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
