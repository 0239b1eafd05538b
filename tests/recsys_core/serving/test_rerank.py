"""recsys_core.serving.rerank: what MMR search reports beside its picks (rank by score, diversity gain)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recsys_core.serving.rerank import RerankedResult, diversity_gains, mmr_search


class _Index:  # the one attribute mmr_search reads
    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = torch.as_tensor(vectors, dtype=torch.float32)


def test_diversity_gain_is_one_minus_the_closest_pick_above() -> None:
    vecs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert diversity_gains(vecs, np.array([0, 2, 1])) == pytest.approx([1.0, 1.0, 0.0])
    assert diversity_gains(vecs, np.array([0, 1])) == pytest.approx([1.0, 0.0])


def test_mmr_search_reports_ranks_by_score_and_gains() -> None:
    # Items 0 and 1 are near-duplicates with the top scores; item 2 is different and scores third.
    vecs = np.array([[1.0, 0.0], [0.99, 0.141], [0.0, 1.0], [0.5, -0.5]])
    query = torch.tensor([1.0, 0.0])
    found = mmr_search(_Index(vecs), torch.as_tensor(vecs), query, 3, exclude=[3], diversity=0.7)
    assert isinstance(found, RerankedResult)
    assert found.indices.tolist() == [0, 2, 1]  # the look-alike moves down
    assert found.score_ranks == (1, 3, 2) and found.reordered
    assert found.gains[0] == 1.0 and found.gains[1] == pytest.approx(1.0) and found.gains[2] < 0.05
    assert found.scores.tolist() == pytest.approx((torch.as_tensor(vecs, dtype=torch.float32) @ query)[[0, 2, 1]].tolist())


def test_mmr_search_that_keeps_the_score_order_says_so() -> None:
    vecs = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    found = mmr_search(_Index(vecs), torch.as_tensor(vecs), torch.tensor([1.0, 0.5]), 2, exclude=[], diversity=0.1)
    assert found.score_ranks == (1, 2) and not found.reordered
