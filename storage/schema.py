"""Upgrades of an existing database to the tables :mod:`storage.models` declares, run at every start.

``create_all`` (:func:`storage.db.init_db`) creates missing tables but never alters existing ones;
what can be done safely in place is done here: new nullable columns, and rebuilding SQLite's
``feedback`` table with AUTOINCREMENT. Anything else needs a real migration.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Optional

from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.schema import CreateIndex
from sqlmodel import SQLModel

from storage.models import Feedback, TaskAssignment

__all__ = ["add_missing_columns", "ensure_feedback_autoincrement"]

logger = logging.getLogger(__name__)


def add_missing_columns(engine: Engine) -> list[str]:
    """Add nullable columns the models define but an existing table lacks; returns "table.column" names.

    ``create_all`` creates missing tables but never alters existing ones, so a
    database created before ``feedback.grade``/``feedback.task_id`` existed
    would fail on every query. Only additive, nullable columns are handled
    (plain ``ALTER TABLE ... ADD COLUMN``, valid on SQLite and PostgreSQL);
    anything else needs a real migration and is reported as an error.
    """
    preparer = engine.dialect.identifier_preparer
    added: list[str] = []
    # Inspect through the same connection: on SQLite every transaction starts with
    # BEGIN IMMEDIATE, so a second connection (an engine-level inspector) would hold
    # the write lock this one needs.
    with engine.begin() as conn:
        inspector = inspect(conn)
        existing_tables = set(inspector.get_table_names())
        for table in SQLModel.metadata.sorted_tables:
            if table.name not in existing_tables:
                continue
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                if not column.nullable or column.primary_key:
                    raise RuntimeError(
                        f"table {table.name!r} lacks the required column {column.name!r}, which cannot be "
                        "added automatically; migrate the database or start from a new one"
                    )
                ddl = (
                    f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN "
                    f"{preparer.format_column(column)} {column.type.compile(dialect=engine.dialect)}"
                )
                for fk in column.foreign_keys:
                    ddl += (
                        f" REFERENCES {preparer.format_table(fk.column.table)} "
                        f"({preparer.format_column(fk.column)})"
                    )
                conn.execute(text(ddl))
                for index in table.indexes:
                    if [c.name for c in index.columns] == [column.name]:
                        index.create(conn, checkfirst=True)
                added.append(f"{table.name}.{column.name}")
    if added:
        logger.warning("database schema upgraded: added column(s) %s", ", ".join(added))
    return added


def ensure_feedback_autoincrement(engine: Engine) -> bool:
    """Rebuild an existing SQLite ``feedback`` table with AUTOINCREMENT; True when it was rebuilt.

    Databases created before :class:`Feedback` declared ``sqlite_autoincrement`` reuse the id of the
    newest judgement once it is erased. SQLite cannot add AUTOINCREMENT to a table, so this follows
    the table-rebuild procedure of https://www.sqlite.org/lang_altertable.html (section 7): foreign
    keys off, create the new table, copy every row with its id, drop the old table, rename the new
    one, recreate the indexes, check foreign keys, commit, in one transaction. Rows, ids and the
    task assignments that point at them are kept. The id counter starts above every id the database
    still mentions (rows, task assignments, label snapshots); an id erased before this upgrade and
    mentioned nowhere any more cannot be known and may be handed out once more.

    A table this cannot rebuild safely (rows the current CHECK constraint refuses, broken foreign
    keys, a lock held too long) is left as it is, with a warning: the app still starts, and ids
    behave as before. PostgreSQL (sequences) needs nothing.
    """
    if engine.dialect.name != "sqlite":
        return False
    import sqlite3

    table = Feedback.__table__  # type: ignore[attr-defined]
    try:
        with engine.connect() as conn:
            ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                       (table.name,)).scalar()
        if ddl is None or "AUTOINCREMENT" in ddl.upper():
            return False
        copied = _rebuild_with_autoincrement(engine, table)
    # The raw DBAPI connection of the rebuild raises the driver's own errors, the engine SQLAlchemy's.
    except (RuntimeError, sqlite3.Error, OperationalError) as exc:
        logger.warning("table %s kept without AUTOINCREMENT (ids of erased judgements may be reused): %s",
                       table.name, exc)
        return False
    if copied is None:
        return False
    logger.warning("database schema upgraded: table %s rebuilt with AUTOINCREMENT; %d column(s) and every row "
                   "copied, ids kept", table.name, copied)
    return True


def _rebuild_with_autoincrement(engine: Engine, table: Any) -> Optional[int]:
    """The rebuild of :func:`ensure_feedback_autoincrement`; the number of columns copied, None if already done."""
    from sqlalchemy.schema import CreateTable

    preparer = engine.dialect.identifier_preparer
    name, staging = preparer.quote(table.name), preparer.quote(f"{table.name}__rebuild")
    create = str(CreateTable(table).compile(dialect=engine.dialect)).strip()
    head = f"CREATE TABLE {preparer.format_table(table)} ("
    if not create.startswith(head):
        raise RuntimeError(f"unexpected DDL for {table.name}: {create[:80]!r}")
    create = f"CREATE TABLE {staging} (" + create[len(head):]
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        try:
            cur.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set before BEGIN
            cur.execute("BEGIN IMMEDIATE")
            try:
                # Another process (a second replica, the fine-tune job) may have rebuilt it while this one waited.
                now = cur.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                                  (table.name,)).fetchone()
                if now is None or "AUTOINCREMENT" in now[0].upper():
                    cur.execute("ROLLBACK")
                    return None
                present = {row[1] for row in cur.execute(f"PRAGMA table_info({name})")}
                shared = [c.name for c in table.columns if c.name in present]
                columns = ", ".join(preparer.quote(c) for c in shared)
                cur.execute(create)
                cur.execute(f"INSERT INTO {staging} ({columns}) SELECT {columns} FROM {name}")
                cur.execute(f"DROP TABLE {name}")
                cur.execute(f"ALTER TABLE {staging} RENAME TO {name}")
                for index in table.indexes:
                    cur.execute(str(CreateIndex(index).compile(dialect=engine.dialect)))
                broken = [row for t in (table.name, TaskAssignment.__tablename__)  # type: ignore[attr-defined]
                          for row in cur.execute(f"PRAGMA foreign_key_check({preparer.quote(t)})").fetchall()]
                if broken:
                    raise RuntimeError(f"{len(broken)} row(s) of {table.name} or its task assignments name a "
                                       "missing row")
                # The counter starts above every id still mentioned anywhere, not only above the rows left.
                mentioned = [cur.execute(f"SELECT COALESCE(MAX(id), 0) FROM {name}").fetchone()[0],
                             cur.execute("SELECT COALESCE(MAX(feedback_id), 0) FROM taskassignment").fetchone()[0]]
                if cur.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'labelsnapshot'").fetchone():
                    for (ids,) in cur.execute("SELECT feedback_ids FROM labelsnapshot"):
                        mentioned.extend(int(i) for i in (json.loads(ids) if isinstance(ids, str) else ids or []))
                top = max(int(m or 0) for m in mentioned)
                cur.execute("DELETE FROM sqlite_sequence WHERE name = ?", (table.name,))
                cur.execute("INSERT INTO sqlite_sequence (name, seq) VALUES (?, ?)", (table.name, top))
                cur.execute("COMMIT")
                return len(shared)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        finally:
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()
    except BaseException:
        raw.invalidate()  # never hand a connection in an unknown state back to the pool
        raise
    finally:
        raw.close()
