"""The hybrid model: EASE with side information, the mix with content, and its exact score decomposition."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recsys_core.config import ZeroShotConfig
from recsys_core.encoders.features import CatalogFeatures, ExtractionStats
from recsys_core.model.hybrid import (CollaborativePart, HybridConfig, content_prior, ease_weights,
                                      fit_collaborative, genre_rows)
from recsys_core.serving.hybrid import HybridServing
from recsys_core.serving.zeroshot import ZeroShotModel

N = 12


def _features(n: int = N, seed: int = 0) -> CatalogFeatures:
    g = torch.Generator().manual_seed(seed)
    has = torch.ones(n, dtype=torch.bool)
    has[3] = False
    image = torch.randn(n, 6, generator=g) * has[:, None]
    return CatalogFeatures(item_ids=tuple(f"i{i}" for i in range(n)), text=torch.randn(n, 8, generator=g),
                           image=image, has_image=has, regions=None, text_key="t", image_key="i",
                           stats=ExtractionStats(0, 0, 0, 0, 0, 0.0, 0.0))


def _interactions(n: int = N, users: int = 30, seed: int = 0, cold: tuple[int, ...] = ()) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = (rng.random((users, n)) < 0.3).astype(np.float32)
    x[:, list(cold)] = 0.0
    return sp.csr_matrix(x)


def test_ease_on_a_tiny_matrix_matches_the_hand_computed_solution() -> None:
    # X = [[1, 1, 0], [0, 1, 1]] -> G = X^T X = [[1,1,0],[1,2,1],[0,1,1]]; lambda = 1 -> G + I = [[2,1,0],[1,3,1],[0,1,2]].
    # Its inverse is adj / det with det = 8: P = [[5,-2,1],[-2,4,-2],[1,-2,5]] / 8, and B_ij = -P_ij / P_jj.
    x = np.array([[1, 1, 0], [0, 1, 1]], dtype=float)
    b = ease_weights(x.T @ x, 1.0)
    expected = np.array([[0, 2 / 4, -1 / 5], [2 / 5, 0, 2 / 5], [-1 / 5, 2 / 4, 0]])
    assert b == pytest.approx(expected)
    # fit_collaborative without side information solves the same system (rows of ``right`` are B's columns).
    part = fit_collaborative(sp.csr_matrix(x), np.zeros((3, 0)), np.zeros((3, 0)),
                             HybridConfig(lambda_=1.0, side_content=0.0, side_genre=0.0))
    assert part.dense and part.right.T == pytest.approx(expected, abs=1e-6)


def test_with_no_interactions_the_hybrid_is_exactly_the_zero_shot_model() -> None:
    features = _features()
    zs = ZeroShotModel(features, ZeroShotConfig())
    empty = fit_collaborative(sp.csr_matrix((0, N)), zs.item_vectors.numpy(), np.zeros((N, 0)), HybridConfig())
    hybrid = HybridServing(zs, empty, HybridConfig())
    for liked in ([0], [1, 4], [2, 5, 7]):
        want = zs.item_vectors @ zs.profile(liked)
        got = hybrid.item_vectors @ hybrid.profile(liked)
        assert torch.equal(got, want)
    assert hybrid.mix["collaborative"] == 0.0


def test_a_cold_item_gets_finite_content_driven_item_item_weights() -> None:
    features = _features()
    zs = ZeroShotModel(features, ZeroShotConfig())
    content = zs.item_vectors.numpy()
    x = _interactions(cold=(5,))
    part = fit_collaborative(x, content, np.zeros((N, 0)), HybridConfig(lambda_=5.0, side_content=10.0, side_genre=0.0))
    column = part.right[5]  # B[:, 5]: how every item votes for the cold item
    assert np.isfinite(column).all() and np.abs(column).max() > 1e-4
    assert not part.known[5] and part.known[[0, 1, 2]].all()
    # Without side information the cold item has no weights at all: they came from its content.
    plain = fit_collaborative(x, content, np.zeros((N, 0)), HybridConfig(lambda_=5.0, side_content=0.0, side_genre=0.0))
    assert np.abs(plain.right[5]).max() < 1e-9
    # The content-similar item votes for it more than the least similar one does.
    sims = content[5] @ content.T
    sims[5] = -np.inf
    near, far = int(np.argmax(sims)), int(np.argmin(np.where(np.isinf(sims), np.inf, sims)))
    assert column[near] > column[far]


def test_the_score_splits_exactly_into_text_image_and_collaborative_parts() -> None:
    features = _features()
    zs = ZeroShotModel(features, ZeroShotConfig())
    x = _interactions()
    config = HybridConfig(lambda_=5.0, side_content=2.0, side_genre=1.0, content_share=0.6, content_scale=0.3,
                          collab_scale=0.2, prior_weight=0.1)
    part = fit_collaborative(x, zs.item_vectors.numpy(), genre_rows([("a",)] * 6 + [("b",)] * 6), config)
    hybrid = HybridServing(zs, part, config)
    liked, disliked = [0, 2, 7], [9]
    query = hybrid.profile(liked, disliked)
    items = torch.arange(N)
    scores = hybrid.item_vectors @ query
    parts = hybrid.modality_scores(query, items)
    assert (parts.text + parts.image + parts.collaborative).tolist() == pytest.approx(scores.tolist(), abs=1e-5)
    # Without dislikes the liked items' contributions add up to the score less the item's prior.
    plain = hybrid.profile(liked)
    for j in (1, 4, 11):
        contributions = hybrid.history_contributions(liked, j)
        total = float(hybrid.item_vectors[j] @ plain)
        assert float(contributions.sum()) + hybrid.prior_part(j) == pytest.approx(total, abs=1e-5)
        collab = hybrid.collaborative_contributions(liked, j)
        assert collab.tolist() == pytest.approx((config.collab_weight * part.right[j, liked]).tolist(), abs=1e-6)


def test_a_dislike_lowers_that_items_neighbours() -> None:
    features = _features()
    zs = ZeroShotModel(features, ZeroShotConfig())
    config = HybridConfig(lambda_=5.0, content_share=0.5, content_scale=0.3, collab_scale=0.2)
    hybrid = HybridServing(zs, fit_collaborative(_interactions(), zs.item_vectors.numpy(), np.zeros((N, 0)), config),
                           config)
    liked, disliked = [0, 1], 6
    before = hybrid.item_vectors @ hybrid.profile(liked)
    after = hybrid.item_vectors @ hybrid.profile(liked, [disliked])
    similarity = hybrid.item_vectors @ hybrid.profile([disliked])
    similarity[[0, 1, disliked]] = -np.inf
    neighbour = int(torch.argmax(similarity))
    assert after[neighbour] < before[neighbour]
    drop = before - after
    # The drop is the disliked item's own profile score at the dislike weight: largest where it is most similar.
    assert drop.tolist() == pytest.approx((zs.config.dislike_weight * (hybrid.item_vectors @ hybrid.profile([disliked])
                                                                       - hybrid.prior_part_vector())).tolist(),
                                          abs=1e-5)


def test_content_prior_gives_cold_items_their_neighbours_popularity() -> None:
    content = np.eye(4)[[0, 0, 1, 1, 0, 1]]  # items 0,1,4 look alike, items 2,3,5 too
    counts = np.array([50.0, 40.0, 1.0, 2.0, 0.0, 0.0])  # 4 and 5 are cold
    prior = content_prior(content, counts, neighbours=2)
    assert prior[4] > prior[5] and prior[:4].tolist() == [0.0] * 4


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="content_share"):
        HybridConfig(content_share=1.5)
    with pytest.raises(ValueError, match="lambda_"):
        HybridConfig(lambda_=0.0)
    assert HybridConfig.from_dict(replace(HybridConfig(), content_share=0.3).to_dict()).content_share == 0.3


def test_empty_part_has_nothing_collaborative() -> None:
    part = CollaborativePart.empty(5)
    assert part.scores(sp.csr_matrix(np.ones((2, 5)))).tolist() == [[0.0] * 5] * 2
