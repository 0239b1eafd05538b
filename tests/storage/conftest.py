"""Fixtures of the storage tests.

The database fixtures every test folder uses (``repo``, ``db_url``, ``db_backend``) are in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from storage import FeedbackIn, Repository, TaskIn, default_database_url, init_db, make_engine


@pytest.fixture()
def engine(db_backend: str, make_db_url: Callable[[], str]) -> Iterator[Engine]:
    """An empty database on each backend; SQLite in memory, which also covers the StaticPool path."""
    eng = make_engine("sqlite://" if db_backend == "sqlite" else make_db_url())
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture()
def memory_engine() -> Iterator[Engine]:
    """For SQLite-only tests and for backend-independent logic (the retry loop) that needs no second run."""
    eng = make_engine("sqlite://")
    init_db(eng)
    yield eng
    eng.dispose()


@pytest.fixture()
def file_url(tmp_path: Path) -> str:
    return default_database_url(tmp_path / "data")


@pytest.fixture()
def filled(repo: Repository) -> Repository:
    """Two campaigns (graded, like/dislike) with controls, plus free-form likes of two model versions."""
    repo.add_tasks("graded", [
        TaskIn("rec-1", ("ctx-1", "ctx-2"), "v1", kind="recommendation", overlap=2),
        TaskIn("ctl-hi", ("ctx-1",), "v1", kind="control", expected_grade=3, overlap=2),
        TaskIn("ctl-mid", ("ctx-1",), "v1", kind="control", expected_grade=1, overlap=1),
    ])
    repo.add_tasks("binary", [TaskIn("ctl-like", ("ctx-9",), "random", kind="control", expected_grade=1)])
    grades = {("alice", 1): 3, ("alice", 2): 2, ("bob", 1): 1, ("bob", 2): 3, ("alice", 3): 0}
    for name in ("alice", "bob"):
        while (task := repo.next_task("graded", name)) is not None:
            repo.answer_task(name, task.task_id, "graded", grades[(name, task.task_id)], f"{name}-{task.task_id}")
    task = repo.next_task("binary", "carol")
    assert task is not None
    repo.answer_task("carol", task.task_id, "dislike", None, "carol-bin")
    for i, (version, label) in enumerate([("v1", "like"), ("v1", "dislike"), ("v1", "like"), ("v2", "dislike")]):
        repo.add_feedback(FeedbackIn(f"free-{i}", "item x" if i == 0 else f"item-{i}", label, ("ctx-1",), version,
                                     annotator=None if i == 3 else "dave"))
    return repo
