"""Baselines on tiny hand-made matrices: known weights, known recommendations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_core.evaluation.baselines import (
    BPR,
    EASE,
    BPRConfig,
    GenreProfile,
    InteractionData,
    ItemKNN,
    Popularity,
    RandomScorer,
    TfidfProfile,
)
from recsys_core.evaluation.zeroshot_scorer import ZeroShotScorer

USERS = ("u1", "u2", "u3", "u4")
ITEMS = ("a", "b", "c", "d", "e")


def tiny(pairs, users=USERS, items=ITEMS) -> InteractionData:
    frame = pd.DataFrame(pairs, columns=["user_id", "item_id"])
    return InteractionData.from_frame(frame, users, items)


# a and b always go together; c and d go together; e is liked once.
PAIRS = [("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b"), ("u2", "e"), ("u3", "c"), ("u3", "d"), ("u4", "a")]


def test_interaction_data_maps_ids_and_is_binary():
    data = tiny(PAIRS + [("u1", "a")])  # duplicate collapses to one positive
    assert data.matrix.shape == (4, 5)
    assert data.matrix[data.user_index["u1"], data.item_index["a"]] == 1.0
    assert data.matrix.sum() == len(PAIRS)
    with pytest.raises(ValueError):
        tiny([("stranger", "a")])


def test_popularity_orders_by_count():
    scores = Popularity().fit(tiny(PAIRS)).score([0, 3])
    assert np.argsort(-scores[0], kind="stable").tolist()[:2] == [0, 1]  # a (3) then b (2)
    assert (scores[0] == scores[1]).all()


def test_ease_weights_have_zero_diagonal_and_recommend_the_partner_item():
    model = EASE(lambda_=1.0).fit(tiny(PAIRS))
    assert np.allclose(np.diag(model.weights), 0.0)
    # u4 liked only "a": "b" (always co-liked with a) must be their best unseen item.
    s = model.score([3])[0]
    s[0] = -np.inf
    assert int(np.argmax(s)) == 1
    # Closed form: B = I - P diag(1/diag(P)) off the diagonal.
    x = model.data.matrix.toarray()
    p = np.linalg.inv(x.T @ x + np.eye(5))
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    assert np.allclose(model.weights, expected)


def test_itemknn_cosine_neighbours():
    model = ItemKNN(k=1).fit(tiny(PAIRS))
    sim = model.similarity
    assert np.allclose(np.diag(sim), 0.0)
    # c's only neighbour is d (cosine 1).
    assert sim[2, 3] == pytest.approx(1.0) and (sim[2] > 0).sum() == 1
    s = model.score([2])[0]  # u3 liked c, d
    assert s[3] > 0 and s[0] == 0  # nothing links c/d to a
    full = ItemKNN(k=None).fit(tiny(PAIRS))
    assert full.similarity[0, 1] == pytest.approx(2 / np.sqrt(3 * 2))


def test_random_scorer_is_seeded_and_batch_independent():
    data = tiny(PAIRS)
    a = RandomScorer(seed=1).fit(data).score([0, 1, 2])
    b = RandomScorer(seed=1).fit(data).score([2])
    assert np.array_equal(a[2], b[0])


def test_bpr_lowers_its_loss_and_ranks_a_co_item_up():
    model = BPR(BPRConfig(factors=8, epochs=30, lr=0.05, reg=1e-4, batch_size=4, seed=0)).fit(tiny(PAIRS))
    assert model.losses[-1] < model.losses[0] * 0.8
    again = BPR(BPRConfig(factors=8, epochs=30, lr=0.05, reg=1e-4, batch_size=4, seed=0)).fit(tiny(PAIRS))
    assert np.allclose(model.score([0, 1]), again.score([0, 1]))  # seeded


def test_tfidf_scores_a_cold_item_from_content():
    texts = {
        "a": "space opera with starships and aliens",
        "b": "starships battle aliens in space",
        "c": "romantic comedy in paris",
        "d": "a paris love story comedy",
        "e": "space aliens invade, starships answer",  # never in training below
    }
    pairs = [("u1", "a"), ("u1", "b"), ("u3", "c"), ("u3", "d")]
    model = TfidfProfile(texts, min_df=1).fit(tiny(pairs))
    s = model.score([0, 2])
    assert s[0, 4] > s[1, 4]  # the space fan gets the cold space item higher than the comedy fan
    assert s[0, 4] > 0


def test_genre_profile_prefers_shared_genres():
    genres = {"a": ("Action",), "b": ("Action", "SciFi"), "c": ("Comedy",), "d": ("Comedy",), "e": ("SciFi",)}
    s = GenreProfile(genres).fit(tiny([("u1", "a"), ("u1", "b")])).score([0])[0]
    assert s[4] > s[2] and s[2] == 0


def test_zeroshot_scorer_uses_profile_of_training_items():
    import torch

    class FakeModel:
        item_vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.0]])

        def profile(self, indices):
            v = self.item_vectors[indices].mean(0)
            return v / v.norm()

    # The model's catalog order differs from the evaluation order, and lacks item "e".
    model_ids = ("b", "a", "d", "c", "x")
    scorer = ZeroShotScorer(model=FakeModel(), model_item_ids=model_ids).fit(tiny(PAIRS))
    s = scorer.score([2])  # u3 liked c, d -> the second axis
    assert s[0, 2] > s[0, 0] and s[0, 3] > s[0, 1]
    assert s[0, 4] == -np.inf  # "e" has no vector
