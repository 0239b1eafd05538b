"""storage/db.py: URLs, engines and SQLite pragmas, on SQLite and (where marked) PostgreSQL."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

import storage.db as storage_db
from storage import Feedback, default_database_url, init_db, make_engine, redact_url
from tests.storage.helpers import _row_counts


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
