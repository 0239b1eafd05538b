"""Splits: no leakage, deterministic generation, and the shipped split files (when present)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys_core.data.splits import check_no_leakage, load_split, make_split
from tests.conftest import MOVIELENS


def synthetic_root(tmp_path: Path) -> Path:
    rng = np.random.default_rng(123)
    rows = []
    for u in range(1, 21):
        for i in rng.choice(np.arange(1, 41), size=10, replace=False):
            rows.append((u, int(i), int(rng.integers(1, 6)), 1000 + len(rows)))
    root = tmp_path / "data"
    root.mkdir()
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"]).to_csv(root / "ratings.csv", index=False)
    return root


def pairs(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame.user_id, frame.item_id))


@pytest.mark.parametrize("validation", [False, True])
def test_generated_warm_split_has_no_leakage_and_is_per_user_80_20(tmp_path, validation):
    split = load_split(synthetic_root(tmp_path), "warm", validation=validation, seed=0)
    assert not pairs(split.train) & pairs(split.test)
    assert split.source == "generated seed 0" and split.candidate_items is None
    assert isinstance(split.train.user_id.iloc[0], str)
    per_user = split.test.groupby("user_id").size()
    # round(0.2 * 10) = 2 test ratings per user; validation: round(0.2 * 8) = 2 again.
    assert (per_user == 2).all() and len(per_user) == 20
    total = len(split.train) + len(split.test)
    assert total == (200 if not validation else 160)


def test_generated_split_is_deterministic_for_a_seed(tmp_path):
    root = synthetic_root(tmp_path)
    a, b = load_split(root, "warm", seed=3), load_split(root, "warm", seed=3)
    c = load_split(root, "warm", seed=4)
    assert pairs(a.test) == pairs(b.test)
    assert pairs(a.test) != pairs(c.test)
    x, y = load_split(root, "cold-item", seed=3), load_split(root, "cold-item", seed=3)
    assert x.candidate_items == y.candidate_items


@pytest.mark.parametrize("validation", [False, True])
def test_generated_cold_split_removes_items_from_training(tmp_path, validation):
    root = synthetic_root(tmp_path)
    split = load_split(root, "cold-item", validation=validation, seed=0)
    cold = set(split.candidate_items)
    n_items = len(set(pd.read_csv(root / "ratings.csv").item_id))
    assert len(cold) == round(0.2 * (n_items if not validation else n_items - round(0.2 * n_items)))
    assert not cold & set(split.train.item_id)
    assert set(split.test.item_id) <= cold
    if validation:  # validation cold items come from the training items, never the test cold items
        test_cold = set(load_split(root, "cold-item", seed=0).candidate_items)
        assert not cold & test_cold


def test_leakage_is_detected():
    frame = pd.DataFrame({"user_id": ["1"], "item_id": ["a"], "rating": [5], "timestamp": [0]})
    with pytest.raises(ValueError, match="also in train"):
        make_split("bad", "warm", frame, frame, None, ("a",), "test")
    other = frame.assign(user_id="2")
    with pytest.raises(ValueError, match="cold item"):
        make_split("bad", "cold-item", frame, other, ("a",), ("a",), "test")


@pytest.mark.skipif(not (MOVIELENS / "splits").is_dir(), reason="MovieLens-100K split files not available")
@pytest.mark.parametrize("protocol", ["warm", "cold-item"])
@pytest.mark.parametrize("validation", [False, True])
def test_fixed_split_files_load_and_pass_leakage_checks(protocol, validation):
    split = load_split(MOVIELENS, protocol, validation=validation)
    assert split.source.startswith("files: splits/")
    assert len(split.item_ids) == 1682
    check_no_leakage(split)
    if not validation:
        assert len(split.train) + len(split.test) == 100_000
    if protocol == "cold-item":
        assert not set(split.candidate_items) & set(split.train.item_id)
