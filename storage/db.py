"""Engine construction for SQLite (local, single host) and PostgreSQL (deployment).

SQLite needs tuning to behave under a multi-threaded web server: WAL lets
readers proceed while one writer commits, ``busy_timeout`` makes writers wait
for the lock instead of failing at once, and ``foreign_keys`` is off by default
in SQLite. All of this is applied per connection through SQLAlchemy's
``connect`` event so that every pooled connection is configured the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, create_engine, make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import SQLModel

from storage import models as _models  # noqa: F401  (registers tables on SQLModel.metadata)

__all__ = ["default_database_url", "make_engine", "redact_url", "init_db", "is_sqlite_memory_url", "with_default_driver"]

logger = logging.getLogger(__name__)

_DB_FILENAME = "recsys.sqlite3"
#: The PostgreSQL driver we depend on (psycopg 3). Before SQLAlchemy 2.1 the default for a
#: bare ``postgresql://`` was psycopg2, which we do not install.
_POSTGRES_DRIVER = "postgresql+psycopg"
#: Schemes that mean PostgreSQL without naming a driver; ``postgres://`` is what Heroku-style
#: hosts hand out and SQLAlchemy no longer accepts.
_BARE_POSTGRES_SCHEMES = ("postgresql", "postgres")


def default_database_url(data_dir: Path) -> str:
    """Return the SQLite URL used when no database URL is configured.

    The directory is created here because SQLite creates the file but not its
    parent directories, and a missing directory gives an opaque
    "unable to open database file" error on first use.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(data_dir / _DB_FILENAME).as_posix()}"


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***`` so it is safe to log."""
    return make_url(url).render_as_string(hide_password=True)


def is_sqlite_memory_url(url: str) -> bool:
    """True for ``sqlite://`` and ``sqlite:///:memory:`` (a DB that lives in one connection)."""
    parsed = make_url(url)
    return parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:")


def with_default_driver(url: str) -> str:
    """``postgresql://`` and ``postgres://`` become ``postgresql+psycopg://``; other URLs are returned as given."""
    parsed = make_url(url)
    if parsed.drivername not in _BARE_POSTGRES_SCHEMES:
        return url
    return parsed.set(drivername=_POSTGRES_DRIVER).render_as_string(hide_password=False)


def _install_sqlite_listeners(engine: Engine, *, pragmas: tuple[str, ...], begin_sql: str) -> None:
    """Configure each new DBAPI connection and take over BEGIN from the sqlite3 driver.

    Python's sqlite3 module (legacy transaction control, Python < 3.16) does not
    emit BEGIN before SELECT or SAVEPOINT, which breaks ``Session.begin_nested()``:
    a released savepoint would not belong to the enclosing transaction. The
    SQLAlchemy-documented fix is ``isolation_level = None`` plus emitting BEGIN
    ourselves from the ``begin`` event (see SQLAlchemy's SQLite dialect docs,
    "Enabling Non-Legacy SQLite Transactional Modes").
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _connection_record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            for pragma in pragmas:
                cursor.execute(pragma)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin_sql)


def make_engine(url: str, *, busy_timeout_ms: int = 10_000, echo: bool = False) -> Engine:
    """Create an engine tuned for the backend named in ``url``.

    * SQLite file: WAL, busy timeout, foreign keys, ``synchronous=NORMAL`` (safe
      with WAL and much faster than FULL). Transactions start with
      ``BEGIN IMMEDIATE``: in WAL mode a transaction that reads and then writes
      fails at once with SQLITE_BUSY when another writer committed in between
      (the busy handler is not consulted), whereas taking the write lock at
      BEGIN lets ``busy_timeout`` queue writers instead.
    * SQLite in memory: one shared connection (``StaticPool``), otherwise each
      pooled connection would see its own empty database.
    * Anything else (e.g. ``postgresql+psycopg``): ``pool_pre_ping`` so that
      connections dropped by the server or a proxy are replaced transparently.
      A bare ``postgresql://`` or ``postgres://`` URL gets the psycopg driver.
      Transactions use the server's default isolation (READ COMMITTED on
      PostgreSQL); :mod:`storage.repository` relies on UNIQUE constraints and
      row locks, not on SERIALIZABLE.
    """
    url = with_default_driver(url)
    parsed = make_url(url)
    engine: Engine
    if parsed.get_backend_name() == "sqlite":
        if is_sqlite_memory_url(url):
            engine = create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False},
                poolclass=StaticPool,
            )
            _install_sqlite_listeners(engine, pragmas=("PRAGMA foreign_keys=ON",), begin_sql="BEGIN")
        else:
            engine = create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False, "timeout": busy_timeout_ms / 1000},
            )
            _install_sqlite_listeners(
                engine,
                pragmas=(
                    "PRAGMA journal_mode=WAL",
                    f"PRAGMA busy_timeout={int(busy_timeout_ms)}",
                    "PRAGMA foreign_keys=ON",
                    "PRAGMA synchronous=NORMAL",
                ),
                begin_sql="BEGIN IMMEDIATE",
            )
    else:
        engine = create_engine(url, echo=echo, pool_pre_ping=True)
    logger.info("database engine created for %s", redact_url(url))
    return engine


def init_db(engine: Engine) -> None:
    """Create missing tables (idempotent; existing tables are left untouched)."""
    SQLModel.metadata.create_all(engine)
