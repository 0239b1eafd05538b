"""storage/annotators.py: annotators and labelling sessions (race-safe get-or-create).

Erasing an annotator is tested through the app in tests/test_security.py and, for ids, in test_schema.py.
"""

from __future__ import annotations

import threading
from typing import Optional

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

import storage.annotators as annotators_mod
from storage import LabelSession, get_or_create_annotator, get_or_create_session, init_db, make_engine
from tests.storage.helpers import _row_counts
from tests.threads import run_threads


# ------------------------------------------------------------------- session functions


def test_get_or_create_annotator(engine: Engine) -> None:
    with Session(engine) as s:
        a1 = get_or_create_annotator(session=s, username="alice")
        a2 = get_or_create_annotator(session=s, username="alice", role="admin")
        b = get_or_create_annotator(session=s, username="bob", role="admin")
        s.commit()
        assert a1.id == a2.id == 1
        assert (a1.role, b.role, b.id) == ("annotator", "admin", 2)
    assert _row_counts(engine) == (2, 0, 0, 0)


def test_get_or_create_session_creates_once_and_links_annotator(engine: Engine) -> None:
    with Session(engine) as s:
        first = get_or_create_session(session=s, session_key="hash-1", client="api")
        assert (first.id, first.annotator_id, first.client) == (1, None, "api")
        alice = get_or_create_annotator(session=s, username="alice")
        again = get_or_create_session(session=s, session_key="hash-1", annotator_id=alice.id)
        s.commit()
        assert (again.id, again.annotator_id, again.client) == (1, alice.id, "api")
    assert _row_counts(engine) == (1, 1, 0, 0)


def test_get_or_create_session_rejects_unknown_client(engine: Engine) -> None:
    with Session(engine) as s:
        with pytest.raises(ValueError, match="client 'cli' is not allowed; use one of: ui, api"):
            get_or_create_session(session=s, session_key="k", client="cli")
    assert _row_counts(engine) == (0, 0, 0, 0)


def test_get_or_create_session_race_keeps_outer_transaction(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Simulate losing the insert race: the first SELECT misses a row another writer made."""
    with Session(engine) as s:
        winner = get_or_create_session(session=s, session_key="shared")
        s.commit()
        winner_id = winner.id

    real_find = annotators_mod._find_session
    calls = {"n": 0}

    def stale_first_find(session: Session, session_key: str) -> Optional[LabelSession]:
        calls["n"] += 1
        return None if calls["n"] == 1 else real_find(session, session_key)

    monkeypatch.setattr(annotators_mod, "_find_session", stale_first_find)
    with Session(engine) as s:
        get_or_create_annotator(session=s, username="outer-work")  # pending in the outer transaction
        got = get_or_create_session(session=s, session_key="shared")
        s.commit()
        assert got.id == winner_id
    assert calls["n"] == 2
    assert _row_counts(engine) == (1, 1, 0, 0)  # the annotator survived the rolled-back savepoint


def test_get_or_create_session_from_threads_one_row(db_url: str) -> None:
    eng = make_engine(db_url)
    init_db(eng)
    n_threads = 8
    barrier = threading.Barrier(n_threads)
    ids: list[Optional[int]] = []
    lock = threading.Lock()

    def worker(_: int) -> None:
        barrier.wait()
        with Session(eng) as s:
            row = get_or_create_session(session=s, session_key="same-key")
            s.commit()
            with lock:
                ids.append(row.id)

    errors = run_threads(n_threads, worker, timeout_s=60)
    try:
        assert errors == []
        assert ids == [1] * n_threads
        assert _row_counts(eng) == (0, 1, 0, 0)
    finally:
        eng.dispose()
