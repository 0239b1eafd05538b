"""Top-K retrieval over item vectors.

An exact matrix product is both exact and fastest for catalogs up to ~10^5 items on a CPU; an
approximate (FAISS) index can sit behind the same ``search`` signature for larger ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import torch


@dataclass(frozen=True)
class SearchResult:
    indices: torch.Tensor  # [k] long, best first
    scores: torch.Tensor  # [k] float


class ExactIndex:
    def __init__(self, vectors: torch.Tensor) -> None:
        self.vectors = vectors.float().contiguous()

    def __len__(self) -> int:
        return self.vectors.shape[0]

    def search(self, query: torch.Tensor, k: int, exclude: Iterable[int] = ()) -> SearchResult:
        scores = self.vectors @ query.float()
        excluded = list(exclude)
        if excluded:
            scores[excluded] = float("-inf")
        k = min(k, len(self) - len(set(excluded)))
        if k <= 0:
            return SearchResult(torch.empty(0, dtype=torch.long), torch.empty(0))
        top = torch.topk(scores, k)
        return SearchResult(top.indices, top.values)
