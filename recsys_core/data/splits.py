"""Train/test splits for offline evaluation, read from fixed files or generated the documented way.

Why fixed files first: the peer figures in ``docs/DATA.md`` were computed on
``movielens-100k/splits/*.csv``; evaluating on the very same split makes our numbers directly
comparable. When the files are absent the split is generated exactly as DATA.md describes
(seeded), so the harness still works on a bare ``ratings.csv``.

Protocols
---------
``warm``
    Every rating is a positive. Each user's ratings are shuffled (seeded) and 20% go to test.
    A user is ranked against every catalog item not in their training set.
``cold-item``
    20% of the items (seeded) are removed from training entirely; the test set is all their
    ratings and a user is ranked only among those cold items. This is the protocol where
    content (text/image) models matter, since ID models know nothing about the cold items.

``validation=True`` carves a validation split out of the *training* part the same way (so model
selection never sees the test set): ``warmval_*`` / ``coldval_*`` files, or generated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

Protocol = Literal["warm", "cold-item"]
PROTOCOLS: tuple[str, ...] = ("warm", "cold-item")
COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class Split:
    """One evaluation split. ``train``/``test`` have columns user_id, item_id (str), rating, timestamp."""

    name: str
    protocol: str
    train: pd.DataFrame
    test: pd.DataFrame
    candidates: str  # human-readable candidate set, printed next to every number
    candidate_items: tuple[str, ...] | None  # cold: the cold items; warm: None = all items not in the user's train
    item_ids: tuple[str, ...]  # the whole catalog (str ids), in a stable order
    source: str  # "files: splits/warm_*.csv" or "generated seed N"

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train):,} train / {len(self.test):,} test interactions, "
                f"{self.train.user_id.nunique():,} train users, {len(self.item_ids):,} items; source {self.source}")


def _sort_ids(ids) -> tuple[str, ...]:
    """Numeric ids sorted as numbers (MovieLens), anything else as strings: a stable catalog order."""
    ids = {str(i) for i in ids}
    if all(i.isdigit() for i in ids):
        return tuple(sorted(ids, key=int))
    return tuple(sorted(ids))


def _read_interactions(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype={"user_id": str, "item_id": str})
    missing = [c for c in ("user_id", "item_id") if c not in frame.columns]
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; expected {COLUMNS}")
    for col in ("rating", "timestamp"):
        if col not in frame.columns:
            frame[col] = 0
    return frame[COLUMNS].reset_index(drop=True)


def _read_items(path: Path) -> tuple[str, ...]:
    return tuple(pd.read_csv(path, dtype={"item_id": str})["item_id"].tolist())


def check_no_leakage(split: Split) -> None:
    """Raise ``ValueError`` when a test interaction could have been seen in training.

    Explicit raises, not ``assert``: the check must survive ``python -O``.
    """
    train_pairs = set(zip(split.train.user_id, split.train.item_id))
    overlap = sum((u, i) in train_pairs for u, i in zip(split.test.user_id, split.test.item_id))
    if overlap:
        raise ValueError(f"{split.name}: {overlap} test interaction(s) also in train")
    catalog = set(split.item_ids)
    unknown = (set(split.train.item_id) | set(split.test.item_id)) - catalog
    if unknown:
        raise ValueError(f"{split.name}: {len(unknown)} item(s) outside the catalog, e.g. {sorted(unknown)[:3]}")
    if split.protocol == "cold-item":
        if split.candidate_items is None:
            raise ValueError(f"{split.name}: the cold-item protocol needs candidate_items")
        cold = set(split.candidate_items)
        in_train = cold & set(split.train.item_id)
        if in_train:
            raise ValueError(f"{split.name}: {len(in_train)} cold item(s) appear in train, e.g. {sorted(in_train)[:3]}")
        outside = set(split.test.item_id) - cold
        if outside:
            raise ValueError(f"{split.name}: {len(outside)} test item(s) are not cold items")


def split_warm(ratings: pd.DataFrame, seed: int, fraction: float = TEST_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user random split: each user's ratings shuffled with ``seed``, ``round(fraction*n)`` to test.

    Users are visited in sorted order with one generator, so the result depends only on the data and
    the seed (not on row order: rows are sorted first). Every user with >= 2 ratings keeps >= 1 on
    each side.
    """
    frame = ratings.sort_values(["user_id", "item_id", "timestamp"], kind="stable").reset_index(drop=True)
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(frame), dtype=bool)
    for _, rows in frame.groupby("user_id", sort=True).indices.items():
        n = len(rows)
        n_test = int(round(fraction * n))
        if n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        else:
            n_test = 0
        chosen = rng.permutation(rows)[:n_test]
        is_test[chosen] = True
    return frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True)


def split_cold_items(ratings: pd.DataFrame, items: tuple[str, ...], seed: int,
                     fraction: float = TEST_FRACTION) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...]]:
    """Remove ``fraction`` of ``items`` (seeded) from training entirely; test = all their ratings."""
    rng = np.random.default_rng(seed)
    ordered = _sort_ids(items)
    n_cold = int(round(fraction * len(ordered)))
    cold = _sort_ids(np.asarray(ordered, dtype=object)[rng.permutation(len(ordered))[:n_cold]].tolist())
    frame = ratings.sort_values(["user_id", "item_id", "timestamp"], kind="stable").reset_index(drop=True)
    is_test = frame.item_id.isin(set(cold)).to_numpy()
    return frame[~is_test].reset_index(drop=True), frame[is_test].reset_index(drop=True), cold


def _catalog(data_root: Path, *frames: pd.DataFrame) -> tuple[str, ...]:
    """All item ids: ``ratings.csv`` (and ``items.csv``) when present, plus anything in the frames."""
    ids: set[str] = set()
    for name in ("ratings.csv", "items.csv"):
        path = data_root / name
        if path.is_file():
            ids |= set(pd.read_csv(path, dtype={"item_id": str}, usecols=["item_id"]).item_id)
    for frame in frames:
        ids |= set(frame.item_id)
    return _sort_ids(ids)


def load_split(data_root: str | Path, protocol: str, *, validation: bool = False, seed: int = 0) -> Split:
    """The ``protocol`` split of the dataset at ``data_root`` (fixed files if present, else generated).

    ``seed`` only matters when the split is generated; fixed files already encode their seed.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol {protocol!r} is unknown; use one of: {', '.join(PROTOCOLS)}")
    root = Path(data_root)
    splits_dir = root / "splits"
    stem = ("warm" if protocol == "warm" else "cold") + ("val" if validation else "")
    name = f"{protocol}{'-validation' if validation else ''}"
    train_path, test_path = splits_dir / f"{stem}_train.csv", splits_dir / f"{stem}_test.csv"
    items_path = splits_dir / f"{stem}_items.csv"
    fixed = train_path.is_file() and test_path.is_file() and (protocol == "warm" or items_path.is_file())
    if fixed:
        train, test = _read_interactions(train_path), _read_interactions(test_path)
        cold = _sort_ids(_read_items(items_path)) if protocol == "cold-item" else None
        source = f"files: splits/{stem}_*.csv"
    else:
        ratings_path = root / "ratings.csv"
        if not ratings_path.is_file():
            raise FileNotFoundError(f"neither {train_path} nor {ratings_path} exists")
        train, test, cold = _generate(_read_interactions(ratings_path), protocol, validation, seed)
        source = f"generated seed {seed}"
    return make_split(name, protocol, train, test, cold, _catalog(root, train, test), source)


def _generate(ratings: pd.DataFrame, protocol: str, validation: bool,
              seed: int) -> tuple[pd.DataFrame, pd.DataFrame, tuple[str, ...] | None]:
    if protocol == "warm":
        train, test = split_warm(ratings, seed)
        if validation:
            train, test = split_warm(train, seed)
        return train, test, None
    items = _sort_ids(ratings.item_id)
    train, test, cold = split_cold_items(ratings, items, seed)
    if validation:
        # Validation cold items come from the items still in training, so the test items stay unseen.
        remaining = _sort_ids(set(items) - set(cold))
        train, test, cold = split_cold_items(train, remaining, seed)
    return train, test, cold


def make_split(name: str, protocol: str, train: pd.DataFrame, test: pd.DataFrame,
               cold_items: tuple[str, ...] | None, item_ids: tuple[str, ...], source: str) -> Split:
    """Build and leakage-check a :class:`Split` (also the way tests build tiny ones)."""
    if protocol == "cold-item":
        if cold_items is None:
            raise ValueError("cold-item splits need their cold items")
        candidates = f"{len(cold_items):,} cold items (never in training); rank only among them"
    else:
        cold_items = None
        candidates = f"all {len(item_ids):,} catalog items not in the user's training set"
    split = Split(name=name, protocol=protocol, train=train, test=test, candidates=candidates,
                  candidate_items=cold_items, item_ids=item_ids, source=source)
    check_no_leakage(split)
    log.info("%s", split.describe())
    return split
