"""Metrics against hand-computed tiny cases: every number here can be checked on paper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recsys_core.evaluation.metrics import evaluate_scores, intra_list_distance
from recsys_core.serving.rerank import mmr_rerank, top_k

# 2 users x 5 items. Scores rank items 0 > 1 > 2 > 3 > 4 for both users.
SCORES = np.array([[5.0, 4.0, 3.0, 2.0, 1.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
NO_TRAIN = np.zeros((2, 5), dtype=bool)


def test_precision_recall_hitrate_ndcg_hand_computed():
    # user 0: relevant {1, 3}; top-2 = [0, 1] -> 1 hit at rank 2.
    # user 1: relevant {4};    top-2 = [0, 1] -> no hit.
    m = evaluate_scores(SCORES, NO_TRAIN, [[1, 3], [4]], ks=[2])
    assert m["precision@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["recall@2"] == pytest.approx((1 / 2 + 0) / 2)
    assert m["hitrate@2"] == pytest.approx(0.5)
    # user 0: DCG = 1/log2(3); IDCG over min(|test|=2, k=2) = 1 + 1/log2(3)
    ndcg0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg@2"] == pytest.approx(ndcg0 / 2)
    assert m["users"] == 2


def test_recall_denominator_is_test_size_and_idcg_is_capped_at_k():
    # 3 relevant items, k = 1, top-1 is relevant: recall 1/3 (|test| denominator), ndcg 1 (IDCG over min(3, 1)).
    m = evaluate_scores(SCORES[:1], NO_TRAIN[:1], [[0, 1, 2]], ks=[1])
    assert m["recall@1"] == pytest.approx(1 / 3)
    assert m["ndcg@1"] == pytest.approx(1.0)
    assert m["precision@1"] == pytest.approx(1.0)


def test_training_items_are_excluded_from_the_ranking():
    train = np.zeros((1, 5), dtype=bool)
    train[0, [0, 1]] = True  # the two best-scored items were seen in training
    m = evaluate_scores(SCORES[:1], train, [[2]], ks=[1])
    assert m["recall@1"] == 1.0 and m["ndcg@1"] == 1.0
    # Sparse masks work the same way.
    import scipy.sparse as sp

    assert evaluate_scores(SCORES[:1], sp.csr_matrix(train), [[2]], ks=[1])["recall@1"] == 1.0


def test_cold_protocol_ranks_only_candidates_and_coverage_counts_them():
    cand = np.array([False, False, True, True, True])
    m = evaluate_scores(SCORES, NO_TRAIN, [[3], [2]], ks=[1], candidate_mask=cand)
    # Both users get item 2 at rank 1 (0 and 1 are not candidates): user 1 hits, user 0 misses.
    assert m["hitrate@1"] == pytest.approx(0.5)
    # One distinct item recommended among three candidates.
    assert m["coverage@1"] == pytest.approx(1 / 3)


def test_users_without_test_items_are_skipped():
    m = evaluate_scores(SCORES, NO_TRAIN, [[0], []], ks=[1])
    assert m["users"] == 1 and m["recall@1"] == 1.0


def test_ild_mean_pairwise_cosine_distance():
    feats = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    # top-2 = [0, 1]: orthogonal -> distance 1. top-3 = [0, 1, 2]: pairs (0,1)=1, (0,2)=0, (1,2)=1 -> 2/3.
    m = evaluate_scores(SCORES[:1], NO_TRAIN[:1], [[0]], ks=[2, 3], item_features_for_diversity=feats)
    assert m["ild@2"] == pytest.approx(1.0)
    assert m["ild@3"] == pytest.approx(2 / 3)
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    assert intra_list_distance(np.array([0, 4]), unit) == pytest.approx(1.0)  # zero vector: distance 1


def test_top_k_is_stable_on_ties_and_skips_excluded():
    row = np.array([1.0, 3.0, 3.0, -np.inf, 3.0])
    assert top_k(row, 2).tolist() == [1, 2]
    assert top_k(row, 10).tolist() == [1, 2, 4, 0]


def test_mmr_trades_relevance_for_diversity():
    scores = np.array([1.0, 0.99, 0.5])
    vecs = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # items 0 and 1 are duplicates
    assert mmr_rerank(scores, vecs, 2, 0.0).tolist() == [0, 1]
    assert mmr_rerank(scores, vecs, 2, 0.5).tolist() == [0, 2]
    m0 = evaluate_scores(scores[None, :], np.zeros((1, 3), bool), [[1]], ks=[2], item_features_for_diversity=vecs)
    m5 = evaluate_scores(scores[None, :], np.zeros((1, 3), bool), [[1]], ks=[2], item_features_for_diversity=vecs,
                         mmr_lambda=0.5)
    assert m0["recall@2"] == 1.0 and m5["recall@2"] == 0.0
    assert m5["ild@2"] > m0["ild@2"]


def test_ties_are_broken_at_random_per_user_not_by_index():
    # A constant-score model (an ID model facing cold items) must not get index order for free.
    scores = np.zeros((40, 30))
    tests = [[29]] * 40
    seeded = evaluate_scores(scores, np.zeros((40, 30), bool), tests, ks=[1])
    assert 0 < seeded["hitrate@1"] < 0.3  # about 1/30 per user, never all-or-nothing
    assert seeded["coverage@1"] > 0.3  # different users get different items
    by_index = evaluate_scores(scores, np.zeros((40, 30), bool), tests, ks=[1], tie_seed=None)
    assert by_index["hitrate@1"] == 0.0 and by_index["coverage@1"] == pytest.approx(1 / 30)
    again = evaluate_scores(scores, np.zeros((40, 30), bool), tests, ks=[1])
    assert again == seeded
