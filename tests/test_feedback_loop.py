"""The feedback-loop benchmark's building blocks (benchmarks/feedback_loop.py) on hand-made data.

The script itself needs MovieLens and a running app; these tests check that the base model's
validation carve reads nothing of the held-out users but their profiles, and that the lists after
labelling send the likes in the profile and the dislikes in ``disliked_ids``.
"""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def loop():
    return load_benchmark("feedback_loop")


def _frame(n_users: int = 10, n_items: int = 30) -> pd.DataFrame:
    rows = [(str(u), f"m{(u * 7 + j) % n_items}") for u in range(n_users) for j in range(12 + u)]
    return pd.DataFrame(rows, columns=["user_id", "item_id"]).drop_duplicates().reset_index(drop=True)


def _args(how: str, seed: int = 0) -> argparse.Namespace:
    return argparse.Namespace(base_validation=how, val_fraction=0.2, profile_size=3, seed=seed)


def _held(loop, user_id: str = "0"):
    return loop.HeldOutUser(user_id, profile=["m0", "m7"], pool={"m1"}, eval={"m2"})


@pytest.mark.parametrize("how", ["ratings", "profiles"])
def test_the_validation_carve_splits_the_other_users_only(loop, how: str) -> None:
    frame = _frame()
    users = [_held(loop)]
    train, targets = loop.validation_carve(frame, users, _args(how))
    assert len(train) + len(targets) == len(frame) and not set(train.index) & set(targets.index)
    assert "0" not in set(targets["user_id"])  # the held-out user's rows (its profile in the base data) stay in train
    assert set(train[train["user_id"] == "0"].index) == set(frame[frame["user_id"] == "0"].index)
    assert set(targets["user_id"]) <= set(train["user_id"])  # every validation user keeps a profile
    if how == "ratings":
        others = frame[frame["user_id"] != "0"]
        assert set(targets["user_id"]) == set(others["user_id"])
        assert len(targets) == sum(round(0.2 * n) for n in others.groupby("user_id").size())
    else:
        assert targets["user_id"].nunique() == round(0.2 * 9)
        kept = train[train["user_id"].isin(set(targets["user_id"]))].groupby("user_id").size()
        assert set(kept) == {3}  # --profile-size ratings left, as the held-out users have
    again, _ = loop.validation_carve(frame, users, _args(how))
    assert again.index.equals(train.index)  # seeded
    assert not loop.validation_carve(frame, users, _args(how, seed=1))[0].index.equals(train.index)


class _Client:
    """The one call fetch_lists makes: predict(liked, k, api_name=..., [disliked_ids=...])."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def predict(self, liked, k, api_name, **extra):
        self.calls.append((list(liked), k, api_name, extra))
        return [{"item_id": f"r{i}"} for i in range(k)]

    def view_api(self, print_info: bool, return_format: str) -> dict:
        return {"named_endpoints": {"/recommend": {"parameters": [
            {"parameter_name": "liked_ids"}, {"parameter_name": "k"}, {"parameter_name": "disliked_ids"}]}}}


def test_lists_after_labelling_read_the_likes_and_the_dislikes(loop) -> None:
    user = _held(loop)
    user.labelled = {"m5": "like", "m6": "dislike", "m4": "like"}
    user.skipped = {"m2"}
    client = _Client()
    lists = loop.fetch_lists(client, [user], loop.k_after, "test")
    assert client.calls[-1] == (["m0", "m7"], 24, "/recommend", {})  # profile only: no disliked_ids argument
    assert lists == {"0": [f"r{i}" for i in range(24)]}  # 20 + 3 labelled + 1 skipped: 20 remain after the cut
    loop.fetch_lists(client, [user], loop.k_after, "test", loop.profile_and_likes, loop.dislikes_of)
    assert client.calls[-1] == (["m0", "m7", "m5", "m4"], 24, "/recommend", {"disliked_ids": ["m6"]})
    loop.fetch_lists(client, [user], loop.k_after, "test", loop.profile_and_likes)  # an app without disliked_ids
    assert client.calls[-1] == (["m0", "m7", "m5", "m4"], 24, "/recommend", {})
    user.pool = {"m11", "m5", "m9"}
    loop.fetch_lists(client, [user], loop.k_after, "test", loop.profile_and_pool)  # the oracle: the whole pool
    assert client.calls[-1][0] == ["m0", "m7", "m11", "m5", "m9"]
    assert loop.takes_dislikes(client)
    client.view_api = lambda **_: {"named_endpoints": {"/recommend": {"parameters": [{"parameter_name": "k"}]}}}
    assert not loop.takes_dislikes(client)
