"""storage/repository.py: the unit of work (retries on transient errors), and the package's public surface."""

from __future__ import annotations

import logging
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

import storage
from storage import ALLOWED_LABELS, FeedbackResult, ImpressionIn, InvalidFeedbackError, Repository, make_engine
from tests.storage.helpers import SEED, _fb


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
