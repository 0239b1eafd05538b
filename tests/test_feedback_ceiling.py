"""The feedback-loop ceiling benchmark's building blocks (benchmarks/feedback_ceiling.py) on hand-made users.

The script itself needs a finished MovieLens feedback-loop work folder; these tests check that
its scoring, oracle labels, pseudo-users and fold-in do what its docstring says.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import load_benchmark

ITEMS = [f"m{i}" for i in range(40)]


@pytest.fixture(scope="module")
def ceiling():
    """The script as a module (benchmarks/ is not a package; it imports feedback_loop beside it)."""
    return load_benchmark("feedback_ceiling")


def _user(ceiling, user_id="u1"):
    return sys.modules["feedback_loop"].HeldOutUser(
        user_id, profile=["m3", "m1"], pool={"m10", "m11", "m12"}, eval={"m20", "m21"},
        labelled={"m10": "like", "m30": "dislike", "m11": "like"}, skipped={"m21"})


def test_users_json_round_trips(ceiling, tmp_path) -> None:
    loop = sys.modules["feedback_loop"]
    users = [_user(ceiling, "u1"), _user(ceiling, "u2")]
    loop.write_users_json(tmp_path / "users.json", users)
    assert loop.read_users_json(tmp_path / "users.json") == users


def test_score_lists_uses_the_loops_protocol(ceiling) -> None:
    user = _user(ceiling)
    index = {item: i for i, item in enumerate(ITEMS)}

    def eval_first(_):
        scores = np.zeros(len(ITEMS))
        scores[index["m20"]] = 3.0
        scores[[index["m10"], index["m3"]]] = 5.0  # a labelled item and a profile item: both excluded
        return scores

    assert ceiling.score_lists([user], ITEMS, eval_first) == pytest.approx(1.0)
    # m21 was skipped (an eval hit seen during labelling): it is out of the eval set, so ranking it first
    # earns nothing, and the one eval item left sits lower.
    def skipped_first(_):
        scores = eval_first(None)
        scores[index["m21"]] = 4.0
        scores[index["m20"]] = -1.0
        return scores

    assert ceiling.score_lists([user], ITEMS, skipped_first) < 0.5

    # Pool items the labelling never reached (m12) are known to the oracles: they are left out of every list.
    def pool_first(_):
        scores = eval_first(None)
        scores[index["m12"]] = 4.0
        return scores

    assert ceiling.score_lists([user], ITEMS, pool_first) == pytest.approx(1.0)


def test_top_ids_leaves_out_the_profile(ceiling) -> None:
    scores = np.arange(len(ITEMS), dtype=float)
    top = ceiling.top_ids(scores, [39, 38], ITEMS, n=3)
    assert top == ["m37", "m36", "m35"]


def test_oracle_labels_are_the_pool_as_likes_plus_the_stored_dislikes(ceiling) -> None:
    frame = ceiling.oracle_examples([_user(ceiling)])
    assert set(frame["context_ids"]) == {("m1", "m3")}  # sorted, as recsys_core.labels.aggregation stores contexts
    assert dict(zip(frame["item_id"], frame["label"])) == {"m10": 1.0, "m11": 1.0, "m12": 1.0, "m30": 0.0}
    assert not set(frame["item_id"]) & {"m20", "m21"}  # the eval set never becomes a label
    user = _user(ceiling)
    user.labelled["m20"] = "dislike"  # a run with --eval-hits dislike labels eval items "dislike"
    assert "m20" not in set(ceiling.oracle_examples([user])["item_id"])
    assert set(frame["context_key"]) == {"m1|m3"}


def test_pseudo_users_hold_the_profile_then_the_likes(ceiling) -> None:
    import pandas as pd

    frame = pd.DataFrame({"user_id": ["a", "a"], "item_id": ["m1", "m2"], "timestamp": [1, 2]})
    out = ceiling.with_pseudo_users(frame, [_user(ceiling)])
    assert list(out.columns) == ["user_id", "item_id"]
    added = out[out["user_id"] == "likes-u1"]["item_id"].tolist()
    assert added == ["m3", "m1", "m10", "m11"]  # no dislikes, no pool items that were never labelled
    assert len(out) == 2 + 4


class _Serving:
    """The two things fold-in reads from a served model: index rows and a profile query."""

    def __init__(self, n: int = 40, d: int = 8, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        vectors = F.normalize(torch.randn(n, d, generator=g), dim=-1)
        self.item_vectors = torch.cat([5.0 * vectors, torch.zeros(n, 1)], dim=1)
        self._vectors = vectors

    def profile(self, indices):
        return torch.cat([F.normalize(self._vectors[indices].mean(0), dim=0), torch.ones(1)])


class _Catalog:
    def index_of(self, item_id: str) -> int:
        return int(item_id[1:])


def test_foldin_raises_the_positives_and_a_strong_pull_keeps_the_served_query(ceiling) -> None:
    serving, catalog = _Serving(), _Catalog()
    served = (serving.item_vectors @ serving.profile([3, 1])).numpy()
    positives = [f"m{i}" for i in np.argsort(served)[:3]]  # the three items the served query likes least
    moved = ceiling.foldin_scores(serving, catalog, ["m3", "m1"], positives, [], l2=0.0, steps=60)
    rank = lambda scores, item: int((scores > scores[catalog.index_of(item)]).sum())  # noqa: E731
    assert all(rank(moved, p) < rank(served, p) for p in positives)
    held = ceiling.foldin_scores(serving, catalog, ["m3", "m1"], positives, [], l2=1e6, steps=60)
    # Adam's steps keep a small jitter around the pull's minimum (offset 0), far below the free fit's moves.
    assert np.abs(held - served).max() < 0.1 < np.abs(moved - served).max()
    # No positives: nothing to fit, the served scores come back.
    assert np.allclose(ceiling.foldin_scores(serving, catalog, ["m3", "m1"], [], ["m5"], l2=0.0, steps=60), served)
