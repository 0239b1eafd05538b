"""Tests for the storage package (no GPU, no network).

Tests that take ``engine`` or ``db_url`` run on SQLite and on PostgreSQL (see ``make_db_url`` in
conftest.py; the PostgreSQL cases skip without TEST_DATABASE_URL). The rest test SQLite specifics
or backend-independent logic.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Optional

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, select

import storage
import storage.db as storage_db
import storage.annotators as annotators_mod
import storage.feedback as feedback_mod
from storage import (
    ALLOWED_LABELS,
    Annotator,
    Feedback,
    FeedbackIn,
    FeedbackResult,
    Impression,
    ImpressionIn,
    InvalidFeedbackError,
    LabelSession,
    Repository,
    add_feedback,
    add_impressions,
    count_feedback,
    count_impressions,
    default_database_url,
    get_or_create_annotator,
    get_or_create_session,
    init_db,
    list_feedback,
    make_engine,
    redact_url,
)
from tests.threads import run_threads

SEED = 1234


def _fb(request_id: str = "req-1", **overrides: Any) -> FeedbackIn:
    values: dict[str, Any] = {
        "request_id": request_id,
        "item_id": "item-42",
        "label": "like",
        "context_ids": ("item-1", "item-2"),
        "model_version": "v1",
    }
    values.update(overrides)
    return FeedbackIn(**values)


def _row_counts(engine: Engine) -> tuple[int, int, int, int]:
    with Session(engine) as s:
        return (
            len(s.exec(select(Annotator)).all()),
            len(s.exec(select(LabelSession)).all()),
            len(s.exec(select(Impression)).all()),
            len(s.exec(select(Feedback)).all()),
        )


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


# ----------------------------------------------------------------------------- db.py


def test_default_database_url_creates_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "nested" / "data"
    url = default_database_url(data_dir)
    assert url == f"sqlite:///{(data_dir / 'recsys.sqlite3').as_posix()}"
    assert data_dir.is_dir()


def test_redact_url_hides_password() -> None:
    url = "postgresql+psycopg://alice:s3cr3t@db.example:5432/recsys"
    assert redact_url(url) == "postgresql+psycopg://alice:***@db.example:5432/recsys"
    assert "s3cr3t" not in redact_url(url)
    assert redact_url("sqlite:///tmp/x.sqlite3") == "sqlite:///tmp/x.sqlite3"


def test_make_engine_non_sqlite_uses_pre_ping_and_logs_redacted(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    captured: dict[str, Any] = {}
    sentinel = object()

    def fake_create_engine(url: str, **kwargs: Any) -> object:
        captured["url"] = url
        captured["kwargs"] = kwargs
        return sentinel

    monkeypatch.setattr(storage_db, "create_engine", fake_create_engine)
    url = "postgresql+psycopg://alice:s3cr3t@db.example:5432/recsys"
    with caplog.at_level(logging.INFO, logger="storage.db"):
        result = make_engine(url)
    assert result is sentinel
    assert captured == {"url": url, "kwargs": {"echo": False, "pool_pre_ping": True}}
    assert [r.getMessage() for r in caplog.records] == [
        "database engine created for postgresql+psycopg://alice:***@db.example:5432/recsys"
    ]
    assert "s3cr3t" not in caplog.text


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_make_engine_gives_bare_postgres_urls_the_psycopg_driver(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    captured: dict[str, Any] = {}
    monkeypatch.setattr(storage_db, "create_engine", lambda url, **kwargs: captured.setdefault("url", url))
    make_engine(f"{scheme}://alice:p%40ss@db.example:5432/recsys?sslmode=require")
    # The password keeps its escaping: "p@ss" must not turn into a host separator.
    assert captured["url"] == "postgresql+psycopg://alice:p%40ss@db.example:5432/recsys?sslmode=require"


def test_file_sqlite_pragmas(file_url: str) -> None:
    eng = make_engine(file_url, busy_timeout_ms=2500)
    try:
        init_db(eng)
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 2500
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        eng.dispose()


def test_memory_sqlite_is_shared(memory_engine: Engine) -> None:
    with memory_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "memory"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    # StaticPool: a second session sees the tables created by init_db.
    with Session(memory_engine) as s:
        assert s.exec(select(Feedback)).all() == []


def test_foreign_keys_are_enforced(engine: Engine) -> None:
    with Session(engine) as s:
        s.add(Feedback(request_id="r", item_id="i", label="like", model_version="v", session_id=999))
        with pytest.raises(IntegrityError):
            s.commit()
    assert _row_counts(engine) == (0, 0, 0, 0)


def test_init_db_is_idempotent(engine: Engine) -> None:
    init_db(engine)
    assert sorted(inspect(engine).get_table_names()) == [
        "annotator",
        "feedback",
        "impression",
        "labelsession",
        "labelsnapshot",
        "labeltask",
        "modelversion",
        "setting",
        "taskassignment",
    ]


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


def test_add_impressions_and_count(engine: Engine) -> None:
    shown = [ImpressionIn("item-a", 1, 0.9), ImpressionIn("item-b", 2, 0.5), ImpressionIn("item-c", 3, 0.1)]
    with Session(engine) as s:
        n = add_impressions(
            session=s,
            request_id="rec-1",
            impressions=shown,
            context_ids=["liked-1"],
            model_version="v7",
            session_key="hash-9",
        )
        assert n == 3
        assert add_impressions(
            session=s, request_id="rec-2", impressions=shown[:1], context_ids=(), model_version="v7"
        ) == 1
        s.commit()
    with Session(engine) as s:
        assert count_impressions(session=s) == 4
        rows = s.exec(select(Impression).where(Impression.request_id == "rec-1").order_by(Impression.rank)).all()
        sess = s.exec(select(LabelSession)).one()
        assert [(r.item_id, r.rank, r.score, r.context_ids, r.session_id) for r in rows] == [
            ("item-a", 1, 0.9, ["liked-1"], sess.id),
            ("item-b", 2, 0.5, ["liked-1"], sess.id),
            ("item-c", 3, 0.1, ["liked-1"], sess.id),
        ]
        assert sess.session_key == "hash-9"


def test_add_impressions_rejects_empty_request_id(engine: Engine) -> None:
    with Session(engine) as s:
        with pytest.raises(ValueError, match="request_id is empty"):
            add_impressions(
                session=s,
                request_id=" ",
                impressions=[ImpressionIn("a", 1, 1.0)],
                context_ids=[],
                model_version="v",
                session_key="k",
            )
    assert _row_counts(engine) == (0, 0, 0, 0)


def test_add_feedback_is_idempotent(engine: Engine) -> None:
    fb = _fb("req-1", session_key="hash-1", annotator="alice")
    with Session(engine) as s:
        first = add_feedback(session=s, feedback=fb)
        s.commit()
    with Session(engine) as s:
        second = add_feedback(session=s, feedback=_fb("req-1", label="dislike"))
        s.commit()
    assert first == FeedbackResult(stored=True, feedback_id=1)
    assert second == FeedbackResult(stored=False, feedback_id=1)
    with Session(engine) as s:
        assert count_feedback(session=s) == 1
        row = s.exec(select(Feedback)).one()
        alice = s.exec(select(Annotator)).one()
        sess = s.exec(select(LabelSession)).one()
        assert (row.label, row.annotator_id, row.session_id) == ("like", alice.id, sess.id)
        assert (alice.username, sess.annotator_id) == ("alice", alice.id)


def test_add_feedback_concurrent_duplicate_becomes_not_stored(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UNIQUE constraint, not the pre-check, must decide when two copies race."""
    with Session(engine) as s:
        original = add_feedback(session=s, feedback=_fb("dup"))
        s.commit()
    monkeypatch.setattr(feedback_mod, "_find_feedback", _miss_once(feedback_mod._find_feedback))
    with Session(engine) as s:
        get_or_create_annotator(session=s, username="outer-work")
        result = add_feedback(session=s, feedback=_fb("dup"))
        s.commit()
    assert original == FeedbackResult(stored=True, feedback_id=1)
    assert result == FeedbackResult(stored=False, feedback_id=1)
    assert _row_counts(engine) == (1, 0, 0, 1)


def _miss_once(real: Any) -> Any:
    state = {"missed": False}

    def find(session: Session, key: str) -> Any:
        if not state["missed"]:
            state["missed"] = True
            return None
        return real(session, key)

    return find


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label": "meh"}, "label 'meh' is not allowed; use one of: like, dislike"),
        ({"request_id": ""}, "request_id is empty"),
        ({"request_id": "   "}, "request_id is empty"),
        ({"request_id": "x" * 129}, "request_id is 129 characters long; at most 128 are allowed"),
        ({"item_id": ""}, "item_id is empty"),
        ({"client": "cli"}, "client 'cli' is not allowed; use one of: ui, api"),
        ({"session_key": ""}, "session_key is empty"),
        ({"annotator": " "}, "annotator is empty"),
    ],
)
def test_add_feedback_rejects_bad_input_and_stores_nothing(
    engine: Engine, overrides: dict[str, Any], message: str
) -> None:
    values = {"session_key": "hash-1", "annotator": "alice", **overrides}
    fb = _fb(**values) if "request_id" in values else _fb("req-bad", **values)
    with Session(engine) as s:
        with pytest.raises(InvalidFeedbackError) as info:
            add_feedback(session=s, feedback=fb)
        s.commit()
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
    assert _row_counts(engine) == (0, 0, 0, 0)


@pytest.mark.parametrize("name", ["anonymous", "anonymous-7"])
def test_add_feedback_refuses_the_names_reserved_for_anonymous_judgements(engine: Engine, name: str) -> None:
    with Session(engine) as s:
        with pytest.raises(InvalidFeedbackError, match=f"annotator '{name}' is reserved for judgements without"):
            add_feedback(session=s, feedback=_fb(annotator=name))
        assert add_feedback(session=s, feedback=_fb("ok", annotator="anonymous-bob")).stored  # only the exact forms
        s.commit()
    assert _row_counts(engine) == (1, 0, 0, 1)


def test_request_id_of_128_chars_is_accepted(engine: Engine) -> None:
    with Session(engine) as s:
        assert add_feedback(session=s, feedback=_fb("x" * 128)) == FeedbackResult(True, 1)
        s.commit()


def test_context_ids_round_trip_as_list(engine: Engine) -> None:
    with Session(engine) as s:
        add_feedback(session=s, feedback=_fb("ctx", context_ids=("b", "a", "c")))
        add_feedback(session=s, feedback=_fb("ctx-empty", context_ids=()))
        s.commit()
    with Session(engine) as s:
        rows = {r.request_id: r.context_ids for r in s.exec(select(Feedback)).all()}
    assert rows == {"ctx": ["b", "a", "c"], "ctx-empty": []}
    assert type(rows["ctx"]) is list


def test_list_feedback_newest_first_with_limit(engine: Engine) -> None:
    with Session(engine) as s:
        for i in range(5):
            add_feedback(session=s, feedback=_fb(f"r{i}", label=ALLOWED_LABELS[i % 2]))
        s.commit()
    with Session(engine) as s:
        assert [f.request_id for f in list_feedback(session=s)] == ["r4", "r3", "r2", "r1", "r0"]
        assert [f.request_id for f in list_feedback(session=s, limit=2)] == ["r4", "r3"]
        assert list_feedback(session=s, limit=0) == []


# ------------------------------------------------------------------------ Repository


def test_repository_methods(db_url: str) -> None:
    repo = Repository.from_url(db_url)
    try:
        assert (repo.count_feedback(), repo.count_impressions()) == (0, 0)
        assert repo.add_impressions(
            request_id="rec-1",
            impressions=[ImpressionIn("a", 1, 0.5), ImpressionIn("b", 2, 0.25)],
            context_ids=("liked",),
            model_version="v1",
            session_key="hash-1",
            client="api",
        ) == 2
        assert repo.add_feedback(_fb("f1", session_key="hash-1")) == FeedbackResult(True, 1)
        assert repo.add_feedback(_fb("f2", label="dislike")) == FeedbackResult(True, 2)
        assert repo.add_feedback(_fb("f1")) == FeedbackResult(False, 1)
        listed = repo.list_feedback(limit=10)
        # Detached rows stay readable after the Repository's session closed.
        assert [(f.request_id, f.label, f.context_ids) for f in listed] == [
            ("f2", "dislike", ["item-1", "item-2"]),
            ("f1", "like", ["item-1", "item-2"]),
        ]
        assert (repo.count_feedback(), repo.count_impressions()) == (2, 2)
        with pytest.raises(InvalidFeedbackError):
            repo.add_feedback(_fb("f3", label="meh"))
        assert repo.count_feedback() == 2
    finally:
        repo.engine.dispose()


def _locked_error(message: str = "database is locked") -> OperationalError:
    return OperationalError("INSERT ...", {}, sqlite3.OperationalError(message))


def test_repository_retries_lock_errors_with_backoff(
    memory_engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    delays: list[float] = []
    repo = Repository(memory_engine, sleep=delays.append, rng=random.Random(SEED))
    attempts = {"n": 0}

    def flaky(session: Session) -> int:
        attempts["n"] += 1
        if attempts["n"] <= 2:
            raise _locked_error("database is locked" if attempts["n"] == 1 else "database table is busy")
        return 7

    with caplog.at_level(logging.WARNING, logger="storage.repository"):
        assert repo._run(flaky) == 7
    assert attempts["n"] == 3
    assert len(delays) == 2
    assert 0.05 <= delays[0] < 0.10 and 0.10 <= delays[1] < 0.20
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert "retry 1/5" in caplog.records[0].getMessage()
    assert "retry 2/5" in caplog.records[1].getMessage()


def test_repository_gives_up_after_five_retries(memory_engine: Engine) -> None:
    delays: list[float] = []
    repo = Repository(memory_engine, sleep=delays.append, rng=random.Random(SEED))
    attempts = {"n": 0}

    def always_locked(session: Session) -> int:
        attempts["n"] += 1
        raise _locked_error()

    with pytest.raises(OperationalError, match="database is locked"):
        repo._run(always_locked)
    assert attempts["n"] == 6
    assert len(delays) == 5
    assert all(0.05 * 2**i <= d < 0.1 * 2**i for i, d in enumerate(delays))


def test_repository_does_not_retry_other_operational_errors(memory_engine: Engine) -> None:
    delays: list[float] = []
    repo = Repository(memory_engine, sleep=delays.append)
    attempts = {"n": 0}

    def broken(session: Session) -> int:
        attempts["n"] += 1
        raise _locked_error("no such table: feedback")

    with pytest.raises(OperationalError, match="no such table"):
        repo._run(broken)
    assert (attempts["n"], delays) == (1, [])


class _PostgresError(Exception):
    """Stands in for a psycopg error: the retry decision reads only its ``sqlstate``."""

    def __init__(self, sqlstate: str, message: str) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("sqlstate", "message", "retried"),
    [
        ("40P01", "deadlock detected", True),
        ("40001", "could not serialize access due to concurrent update", True),
        ("57P01", "terminating connection due to administrator command", False),
        ("42P01", 'relation "feedback" does not exist', False),
    ],
)
def test_repository_retries_postgres_deadlocks_and_serialization_failures(
    memory_engine: Engine, sqlstate: str, message: str, retried: bool
) -> None:
    delays: list[float] = []
    repo = Repository(memory_engine, sleep=delays.append, rng=random.Random(SEED))
    attempts = {"n": 0}

    def fails_once(session: Session) -> int:
        attempts["n"] += 1
        if attempts["n"] == 1:
            raise OperationalError("UPDATE ...", {}, _PostgresError(sqlstate, message))
        return 7

    if retried:
        assert repo._run(fails_once) == 7
        assert (attempts["n"], len(delays)) == (2, 1)
    else:
        with pytest.raises(OperationalError, match=message):
            repo._run(fails_once)
        assert (attempts["n"], delays) == (1, [])


def test_retry_warning_never_shows_the_database_password(caplog: pytest.LogCaptureFixture) -> None:
    # Never connected: the unit of work fails before it touches the session.
    eng = make_engine("postgresql+psycopg://alice:s3cr3t@db.invalid:5432/recsys")
    repo = Repository(eng, sleep=lambda _delay: None, max_retries=1)

    def locked(session: Session) -> int:
        raise _locked_error()

    with caplog.at_level(logging.DEBUG):
        with pytest.raises(OperationalError):
            repo._run(locked)
    messages = [r.getMessage() for r in caplog.records]
    assert any("postgresql+psycopg://alice:***@db.invalid:5432/recsys" in m for m in messages)
    assert "s3cr3t" not in caplog.text
    eng.dispose()


# ----------------------------------------------------------------------- concurrency


def test_threaded_feedback_with_resends(db_url: str) -> None:
    n_threads, per_thread = 8, 25
    rng = random.Random(SEED)
    plan: list[str] = []
    for i in range(n_threads * per_thread):
        if plan and rng.random() < 0.10:
            plan.append(rng.choice(plan))  # resend of an id some thread already has
        else:
            plan.append(f"req-{i:04d}")
    distinct = set(plan)
    assert len(plan) - len(distinct) > 0

    repo = Repository.from_url(db_url)
    barrier = threading.Barrier(n_threads)
    results: list[tuple[str, FeedbackResult]] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        barrier.wait()
        for rid in plan[t::n_threads]:
            # The annotator follows the request id: a resend comes from whoever sent it first
            # (the same id from another annotator is refused, see test_tasks.py).
            res = repo.add_feedback(
                _fb(rid, session_key=f"sess-{t}", annotator=f"user-{int(rid[4:]) % 3}", client="api")
            )
            with lock:
                results.append((rid, res))

    errors = run_threads(n_threads, worker, timeout_s=60)
    try:
        assert errors == []
        assert len(results) == len(plan)
        assert repo.count_feedback() == len(distinct)
        assert sum(r.stored for _, r in results) == len(distinct)
        ids_by_request: dict[str, set[int]] = {}
        for rid, res in results:
            ids_by_request.setdefault(rid, set()).add(res.feedback_id)
        assert all(len(ids) == 1 for ids in ids_by_request.values())
        assert len({next(iter(ids)) for ids in ids_by_request.values()}) == len(distinct)
        assert _row_counts(repo.engine)[:2] == (3, n_threads)
    finally:
        repo.engine.dispose()


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


# ---------------------------------------------------------------------------- hygiene


def test_import_pulls_no_heavy_modules_and_opens_no_db(tmp_path: Path) -> None:
    code = (
        "import sys, storage; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'gradio', 'recsys_core')); "
        "print(bad)"
    )
    root = Path(storage.__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(root)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []


def test_public_api_is_exported() -> None:
    assert set(storage.__all__) == {
        "ALLOWED_LABELS", "Annotator", "Feedback", "FeedbackIn", "FeedbackResult", "Impression",
        "ImpressionIn", "InvalidFeedbackError", "LabelSession", "Repository", "add_feedback",
        "add_impressions", "count_feedback", "count_impressions", "default_database_url",
        "get_or_create_annotator", "get_or_create_session", "init_db", "list_feedback",
        "make_engine", "redact_url",
        # crowd labelling and model registry
        "FEEDBACK_LABELS", "FeedbackOut", "InvalidTaskError", "LabelSnapshot", "LabelTask", "ModelVersion",
        "ModelVersionOut", "RegistryError", "RequestIdConflictError", "Setting", "SnapshotOut",
        "TaskAlreadyAnsweredError", "TaskAssignment", "TaskIn", "TaskNotAssignedError", "TaskOut",
        "add_missing_columns",
    }
    assert ALLOWED_LABELS == ("like", "dislike")
