"""storage/schema.py: upgrading databases made by older versions (new columns, the AUTOINCREMENT rebuild)."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, inspect

from storage import Feedback, FeedbackResult, Repository
from tests.storage.helpers import _fb, _task


# ------------------------------------------------------------------------- upgrades


# The first release's tables, as each backend's create_all made them; {pk} and {ts} are the
# backend's auto-numbered key and timestamp types.
OLD_SCHEMA = """
CREATE TABLE annotator (id {pk}, username VARCHAR(128) NOT NULL UNIQUE,
    role VARCHAR(32) NOT NULL, created_at {ts} NOT NULL);
CREATE TABLE labelsession (id {pk}, session_key VARCHAR(128) NOT NULL UNIQUE,
    annotator_id INTEGER REFERENCES annotator (id), client VARCHAR(16) NOT NULL,
    started_at {ts} NOT NULL);
CREATE TABLE feedback (id {pk}, request_id VARCHAR(128) NOT NULL UNIQUE,
    annotator_id INTEGER REFERENCES annotator (id), session_id INTEGER REFERENCES labelsession (id),
    context_ids JSON NOT NULL, item_id VARCHAR(256) NOT NULL, label VARCHAR(16) NOT NULL,
    model_version VARCHAR(128) NOT NULL, created_at {ts} NOT NULL);
INSERT INTO feedback (request_id, context_ids, item_id, label, model_version, created_at)
    VALUES ('old-1', '["a"]', 'i', 'like', 'v0', '2024-01-01 00:00:00.000000')
"""
OLD_TYPES = {
    "sqlite": {"pk": "INTEGER PRIMARY KEY", "ts": "DATETIME"},
    "postgresql": {"pk": "SERIAL PRIMARY KEY", "ts": "TIMESTAMP WITH TIME ZONE"},
}


def _make_old_db(url: str, backend: str, *extra_sql: str) -> str:
    """Give the empty database at ``url`` the first release's schema (feedback without AUTOINCREMENT on SQLite)
    and one old row, then run ``extra_sql``; returns ``url``."""
    old = create_engine(url)  # a plain engine: nothing of storage.db touches the old schema
    try:
        with old.begin() as conn:
            for statement in [*OLD_SCHEMA.format(**OLD_TYPES[backend]).split(";"), *extra_sql]:
                conn.exec_driver_sql(statement)
    finally:
        old.dispose()
    return url


def _old_sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'old.sqlite3'}"


def test_old_database_gets_new_feedback_columns(db_backend: str, db_url: str) -> None:
    """A database made before grades/tasks existed keeps its rows and accepts graded answers."""
    _make_old_db(db_url, db_backend)
    repo = Repository.from_url(db_url)
    try:
        columns = {c["name"] for c in inspect(repo.engine).get_columns("feedback")}
        assert {"grade", "task_id"} <= columns
        assert repo.add_feedback(_fb("new-1", label="graded", grade=2)) == FeedbackResult(True, 2)
        assert repo.label_counts() == {"like": 1, "dislike": 0, "graded": 1, "total": 2}
        # A second start finds nothing left to add.
        from storage import add_missing_columns
        from storage.schema import ensure_feedback_autoincrement

        assert add_missing_columns(repo.engine) == []
        assert ensure_feedback_autoincrement(repo.engine) is False
        if db_backend == "sqlite":  # the old table was rebuilt with AUTOINCREMENT at the first start
            with repo.engine.connect() as conn:
                ddl = conn.exec_driver_sql("SELECT sql FROM sqlite_master WHERE name = 'feedback'").scalar()
            assert "AUTOINCREMENT" in ddl.upper()
        assert [(f.id, f.request_id) for f in repo.list_feedback(10)][-1] == (1, "old-1")
    finally:
        repo.engine.dispose()


# Task tables as they were before skipping existed (no taskassignment.skipped_at), with one open assignment.
OLD_TASK_TABLES = (
    """CREATE TABLE labeltask (id {pk}, campaign VARCHAR(128) NOT NULL, context_ids JSON NOT NULL,
        item_id VARCHAR(256) NOT NULL, kind VARCHAR(16) NOT NULL, expected_grade INTEGER,
        model_version VARCHAR(128) NOT NULL, overlap INTEGER NOT NULL, created_at {ts} NOT NULL,
        CONSTRAINT ck_labeltask_overlap CHECK (overlap >= 1))""",
    """CREATE TABLE taskassignment (id {pk}, task_id INTEGER NOT NULL REFERENCES labeltask (id),
        annotator_id INTEGER NOT NULL REFERENCES annotator (id), status VARCHAR(16) NOT NULL,
        feedback_id INTEGER REFERENCES feedback (id), assigned_at {ts} NOT NULL, answered_at {ts},
        CONSTRAINT uq_taskassignment_task_annotator UNIQUE (task_id, annotator_id),
        CONSTRAINT ck_taskassignment_status CHECK (status IN ('assigned', 'answered')))""",
    "INSERT INTO annotator (username, role, created_at) VALUES ('ann', 'annotator', '2024-01-01 00:00:00')",
    """INSERT INTO labeltask (campaign, context_ids, item_id, kind, model_version, overlap, created_at)
        VALUES ('c1', '["a"]', 'item-1', 'recommendation', 'v0', 1, '2024-01-01 00:00:00')""",
    """INSERT INTO taskassignment (task_id, annotator_id, status, assigned_at)
        VALUES (1, 1, 'assigned', '2024-01-01 00:00:00')""",
)


def test_old_task_tables_get_skipped_at_and_an_old_open_task_can_be_skipped(db_backend: str, db_url: str) -> None:
    """Skips are a new nullable column (the status CHECK of an existing table cannot be widened in place)."""
    _make_old_db(db_url, db_backend, *(sql.format(**OLD_TYPES[db_backend]) for sql in OLD_TASK_TABLES))
    repo = Repository.from_url(db_url)
    try:
        assert "skipped_at" in {c["name"] for c in inspect(repo.engine).get_columns("taskassignment")}
        task = repo.next_task("c1", "ann")
        assert task is not None and task.item_id == "item-1"  # the old open assignment, handed out again
        assert repo.skip_task(task.task_id, "ann") == "skipped"
        assert repo.next_task("c1", "ann") is None
        assert repo.next_task("c1", "bea").task_id == task.task_id  # type: ignore[union-attr]
    finally:
        repo.engine.dispose()


def test_erased_judgement_ids_are_never_handed_out_again(repo: Repository) -> None:
    """A label snapshot names judgements by id: an erased judgement's id must not come back on a new one."""
    repo.add_feedback(_fb("a-1", annotator="keeper"))
    newest = repo.add_feedback(_fb("b-1", annotator="leaver", item_id="item-7"))
    erased_id = max(f.id for f in repo.list_feedback(10))
    assert repo.erase_annotator("leaver").feedback == 1
    repo.add_feedback(_fb("a-2", annotator="keeper", item_id="item-9"))
    ids = sorted(f.id for f in repo.list_feedback(10))
    assert newest.stored and len(ids) == 2
    assert ids[-1] > erased_id


def test_old_sqlite_feedback_table_is_rebuilt_with_rows_ids_and_assignments(tmp_path) -> None:
    """The rebuild keeps every row and id, the assignments pointing at them, the indexes and UNIQUE request_id."""
    from storage import add_missing_columns, init_db, make_engine
    from storage.schema import ensure_feedback_autoincrement

    url = _make_old_db(_old_sqlite_url(tmp_path), "sqlite")
    engine = make_engine(url)
    init_db(engine)
    add_missing_columns(engine)  # the state of a database upgraded before this change: no AUTOINCREMENT yet
    repo = Repository(engine)
    try:
        repo.add_tasks("c1", [_task("item-5")])
        task = repo.next_task("c1", "ann")
        assert repo.answer_task("ann", task.task_id, "like", None, "t-1").stored
        repo.add_feedback(_fb("f-2", annotator="ann", label="graded", grade=3))

        def snapshot():
            with engine.connect() as conn:
                rows = conn.exec_driver_sql("SELECT * FROM feedback ORDER BY id").fetchall()
                links = conn.exec_driver_sql("SELECT task_id, feedback_id FROM taskassignment").fetchall()
            indexes = {i["name"]: (tuple(i["column_names"]), bool(i["unique"]))
                       for i in inspect(engine).get_indexes("feedback")}
            return rows, links, indexes

        before = snapshot()
        assert ensure_feedback_autoincrement(engine) is True
        after = snapshot()
        assert after[:2] == before[:2]
        # The old table's own indexes are kept, and it now has every index the model declares.
        assert before[2].items() <= after[2].items()
        assert set(after[2]) == {index.name for index in Feedback.__table__.indexes}
        assert len(before[0]) == 3 and before[1][0][1] is not None
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert repo.add_feedback(_fb("f-2", annotator="ann", label="graded", grade=3)).stored is False  # UNIQUE kept
        assert ensure_feedback_autoincrement(engine) is False  # idempotent
        repo.erase_annotator("ann")
        repo.add_feedback(_fb("f-3"))
        # 2 and 3 (ann's) were erased, 1 (anonymous) stays; the new row gets 4, not 3 again.
        assert [f.id for f in repo.list_feedback(10)] == [4, 1]
    finally:
        engine.dispose()


def test_rebuild_counts_past_ids_erased_before_the_upgrade_that_a_snapshot_still_names(tmp_path) -> None:
    from storage import add_missing_columns, init_db, make_engine
    from storage.schema import ensure_feedback_autoincrement

    insert = ("INSERT INTO feedback (request_id, context_ids, item_id, label, model_version, created_at) "
              "VALUES ('old-{n}', '[\"a\"]', 'i', 'like', 'v0', '2024-01-01 00:00:00.000000')")
    url = _make_old_db(_old_sqlite_url(tmp_path), "sqlite", insert.format(n=2), insert.format(n=3))
    engine = make_engine(url)
    try:
        init_db(engine)
        add_missing_columns(engine)
        with engine.begin() as conn:  # a model was trained on 1-3, then 2 and 3 were erased (before this upgrade)
            conn.exec_driver_sql("INSERT INTO labelsnapshot (id, created_at, n_examples, n_judgements, config, "
                                 "feedback_ids) VALUES ('snap', '2024-01-02 00:00:00', 3, 3, '{}', '[1, 2, 3]')")
            conn.exec_driver_sql("DELETE FROM feedback WHERE id IN (2, 3)")
        assert ensure_feedback_autoincrement(engine) is True
        repo = Repository(engine)
        repo.add_feedback(_fb("new"))
        assert [f.id for f in repo.list_feedback(10)] == [4, 1]  # not 2: the snapshot still names 2 and 3
    finally:
        engine.dispose()


def test_a_table_the_rebuild_cannot_take_is_kept_and_the_app_still_starts(tmp_path, caplog) -> None:
    """A legacy row the CHECK constraint refuses (graded without a grade) stops the rebuild, not the app."""
    url = _make_old_db(_old_sqlite_url(tmp_path), "sqlite", "ALTER TABLE feedback ADD COLUMN grade INTEGER",
                       "INSERT INTO feedback (request_id, context_ids, item_id, label, model_version, created_at) "
                       "VALUES ('bad', '[\"a\"]', 'i', 'graded', 'v0', '2024-01-01 00:00:00.000000')")
    repo = Repository.from_url(url)
    try:
        assert "kept without AUTOINCREMENT" in caplog.text
        assert repo.count_feedback() == 2  # nothing lost, the old table in place
        assert repo.add_feedback(_fb("after")).stored
        with repo.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        repo.engine.dispose()


def test_a_locked_database_leaves_the_table_and_no_connection_without_foreign_keys(tmp_path, caplog) -> None:
    import sqlite3

    from storage import add_missing_columns, init_db, make_engine
    from storage.schema import ensure_feedback_autoincrement

    url = _make_old_db(_old_sqlite_url(tmp_path), "sqlite")
    engine = make_engine(url, busy_timeout_ms=50)
    try:
        init_db(engine)
        add_missing_columns(engine)
        holder = sqlite3.connect(tmp_path / "old.sqlite3", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            assert ensure_feedback_autoincrement(engine) is False
            # The rebuild itself, reached when the lock is taken between the check and its BEGIN: it turned
            # foreign keys off first, and that connection must not go back to the pool that way.
            from storage.schema import _rebuild_with_autoincrement

            with pytest.raises(sqlite3.OperationalError, match="locked"):
                _rebuild_with_autoincrement(engine, Feedback.__table__)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert "kept without AUTOINCREMENT" in caplog.text
        for _ in range(3):  # whichever pooled connection comes next
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert ensure_feedback_autoincrement(engine) is True  # the next start does it
    finally:
        engine.dispose()
