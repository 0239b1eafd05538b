"""Graded labels, request-id ownership and crowd-labelling task routing, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect
from sqlmodel import Session, select

from storage import (
    Feedback,
    FeedbackResult,
    InvalidFeedbackError,
    InvalidTaskError,
    Repository,
    RequestIdConflictError,
    TaskAlreadyAnsweredError,
    TaskAssignment,
    TaskIn,
    TaskNotAssignedError,
    TaskOut,
)
from tests.test_storage import _fb  # the same feedback-row builder as the storage tests
from tests.threads import run_threads


def _task(item: str, kind: str = "recommendation", expected: int | None = None, overlap: int = 1) -> TaskIn:
    return TaskIn(item_id=item, context_ids=("ctx-a", "ctx-b"), model_version="v1", kind=kind,
                  expected_grade=expected, overlap=overlap)


# --------------------------------------------------------------------------- grades


@pytest.mark.parametrize("grade", [0, 1, 2, 3])
def test_graded_feedback_stores_grade(repo: Repository, grade: int) -> None:
    assert repo.add_feedback(_fb(f"g{grade}", label="graded", grade=grade, annotator="ann")) == FeedbackResult(True, 1)
    [row] = repo.my_feedback("ann")
    assert (row.label, row.grade, row.task_id) == ("graded", grade, None)


@pytest.mark.parametrize(
    ("label", "grade", "message"),
    [
        ("graded", None, "label 'graded' needs an integer grade in 0..3; got None"),
        ("graded", 4, "label 'graded' needs an integer grade in 0..3; got 4"),
        ("graded", -1, "label 'graded' needs an integer grade in 0..3; got -1"),
        ("graded", True, "label 'graded' needs an integer grade in 0..3; got True"),
        ("graded", 2.0, "label 'graded' needs an integer grade in 0..3; got 2.0"),
        ("like", 1, "label 'like' takes no grade (got 1); send grade=None, or label 'graded'"),
        ("dislike", 0, "label 'dislike' takes no grade (got 0)"),
        ("meh", None, "label 'meh' is not allowed; use one of: like, dislike, graded"),
    ],
)
def test_grade_validation(repo: Repository, label: str, grade: Any, message: str) -> None:
    with pytest.raises(InvalidFeedbackError) as info:
        repo.add_feedback(_fb("bad", label=label, grade=grade, annotator="ann"))
    assert message in str(info.value)
    assert repo.count_feedback() == 0
    assert repo.label_counts() == {"like": 0, "dislike": 0, "graded": 0, "total": 0}


def test_old_callers_without_grade_still_work(repo: Repository) -> None:
    assert repo.add_feedback(_fb("old", label="dislike")) == FeedbackResult(True, 1)
    [row] = repo.list_feedback()
    assert (row.label, row.grade, row.task_id) == ("dislike", None, None)


# ------------------------------------------------------------------ request-id owners


def test_resend_from_other_annotator_is_refused_and_changes_nothing(repo: Repository) -> None:
    first = repo.add_feedback(_fb("shared", label="like", annotator="alice"))
    with pytest.raises(RequestIdConflictError) as info:
        repo.add_feedback(_fb("shared", label="dislike", annotator="bob"))
    message = str(info.value)
    assert message == (
        "request_id is already used for another judgement; generate a fresh request_id for every new label"
    )
    assert "alice" not in message and str(first.feedback_id) not in message
    assert isinstance(info.value, InvalidFeedbackError)  # the UI shows it as a user error
    # Alice's row is untouched, bob got no row (and no annotator row was created for him).
    assert [(f.request_id, f.label) for f in repo.my_feedback("alice")] == [("shared", "like")]
    assert repo.my_feedback("bob") == []
    assert repo.count_feedback() == 1
    with Session(repo.engine) as s:
        assert s.exec(select(Feedback)).one().annotator_id == 1
    # The owner's own resend is still an idempotent success.
    assert repo.add_feedback(_fb("shared", label="like", annotator="alice")) == FeedbackResult(False, 1)


def test_resend_of_anonymous_feedback_by_named_annotator_is_refused(repo: Repository) -> None:
    repo.add_feedback(_fb("anon"))
    with pytest.raises(RequestIdConflictError):
        repo.add_feedback(_fb("anon", annotator="mallory"))
    assert repo.my_feedback("mallory") == []


# ------------------------------------------------------------------------- routing


def test_three_annotators_overlap_two(repo: Repository) -> None:
    n_tasks = 6
    assert repo.add_tasks("c1", [_task(f"item-{i}", overlap=2) for i in range(n_tasks)]) == n_tasks
    annotators = ("ann-a", "ann-b", "ann-c")
    answered: dict[str, list[int]] = {a: [] for a in annotators}
    # Round-robin: everyone asks for a task, answers it, repeats, until nobody gets one.
    active = list(annotators)
    n = 0
    while active:
        for name in list(active):
            task = repo.next_task("c1", name)
            if task is None:
                active.remove(name)
                continue
            assert repo.next_task("c1", name) == task  # an open assignment is handed out again
            n += 1
            assert repo.answer_task(name, task.task_id, "graded", n % 4, f"{name}-{task.task_id}").stored
            answered[name].append(task.task_id)

    per_task = Counter(t for tasks in answered.values() for t in tasks)
    assert per_task == {t: 2 for t in range(1, n_tasks + 1)}  # each task by exactly 2 annotators
    assert all(len(tasks) == len(set(tasks)) for tasks in answered.values())  # nobody twice
    assert sorted(len(t) for t in answered.values()) == [4, 4, 4]
    assert repo.campaign_overview("c1") == {"tasks": 6, "complete": 6, "answers": 12, "open": 0}
    for name in annotators:
        assert repo.annotator_progress("c1", name) == {"answered": 4, "open": 0, "remaining": 0}
    with Session(repo.engine) as s:
        pairs = [(a.task_id, a.annotator_id, a.status) for a in s.exec(select(TaskAssignment)).all()]
    assert len(pairs) == 12 and len({(t, a) for t, a, _ in pairs}) == 12
    assert {status for _, _, status in pairs} == {"answered"}


def test_next_task_prefers_tasks_closest_to_completion_then_lowest_id(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("x", overlap=3), _task("y", overlap=2), _task("z", overlap=1)])
    first = repo.next_task("c1", "a")
    assert isinstance(first, TaskOut)
    assert (first.task_id, first.campaign, first.item_id, first.context_ids) == (3, "c1", "z", ("ctx-a", "ctx-b"))
    assert first.assigned_at.tzinfo is not None
    # a's own open assignment comes back first, even though other tasks are available.
    assert repo.next_task("c1", "a").task_id == 3  # type: ignore[union-attr]
    assert repo.next_task("c1", "b").task_id == 2  # z is full; y (2 slots) before x (3 slots)
    assert repo.next_task("c1", "c").task_id == 2  # y now has one slot left: closest to completion
    assert repo.next_task("c1", "d").task_id == 1
    assert repo.annotator_progress("c1", "e") == {"answered": 0, "open": 0, "remaining": 1}


def test_task_out_hides_kind_and_expected_answer(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("ctrl", kind="control", expected=3)])
    task = repo.next_task("c1", "a")
    assert task is not None
    assert set(vars(task)) == {"task_id", "campaign", "item_id", "context_ids", "assigned_at"}


def test_campaigns_are_separate(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one")])
    repo.add_tasks("c2", [_task("two")])
    assert repo.next_task("c2", "a").item_id == "two"  # type: ignore[union-attr]
    assert repo.next_task("c1", "a").item_id == "one"  # type: ignore[union-attr]
    assert repo.next_task("c3", "a") is None


def test_cannot_answer_task_not_assigned(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one", overlap=2), _task("two", overlap=2)])
    assert repo.next_task("c1", "alice").task_id == 1  # type: ignore[union-attr]
    for username, task_id in (("alice", 2), ("bob", 1), ("alice", 99)):
        with pytest.raises(TaskNotAssignedError) as info:
            repo.answer_task(username, task_id, "like", None, f"{username}-{task_id}")
        assert str(info.value) == (
            f"task {task_id} is not assigned to {username!r}; answer the task you were given "
            "(ask for one with next_task)"
        )
        assert isinstance(info.value, ValueError)
    assert repo.count_feedback() == 0
    assert repo.campaign_overview("c1") == {"tasks": 2, "complete": 0, "answers": 0, "open": 1}


def test_answer_task_is_idempotent_and_refuses_second_answer(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one")])
    task = repo.next_task("c1", "alice")
    assert task is not None
    first = repo.answer_task("alice", task.task_id, "dislike", None, "r1")
    assert first == FeedbackResult(True, 1)
    assert repo.answer_task("alice", task.task_id, "dislike", None, "r1") == FeedbackResult(False, 1)
    with pytest.raises(TaskAlreadyAnsweredError, match="task 1 was already answered by 'alice'"):
        repo.answer_task("alice", task.task_id, "like", None, "r2")
    with pytest.raises(RequestIdConflictError):  # bob reusing alice's request id learns nothing
        repo.answer_task("bob", task.task_id, "like", None, "r1")
    [mine] = repo.my_feedback("alice")
    assert (mine.label, mine.task_id, mine.item_id, mine.context_ids, mine.model_version) == (
        "dislike", 1, "one", ("ctx-a", "ctx-b"), "v1",
    )
    assert repo.annotator_progress("c1", "alice") == {"answered": 1, "open": 0, "remaining": 0}


def test_answer_task_validates_before_storing(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one")])
    repo.next_task("c1", "alice")
    with pytest.raises(InvalidFeedbackError, match="label 'graded' needs an integer grade in 0..3; got 7"):
        repo.answer_task("alice", 1, "graded", 7, "r1")
    with pytest.raises(InvalidFeedbackError, match="model_version does not match the one task 1 was created for"):
        repo.answer_task("alice", 1, "like", None, "r1", model_version="v9")
    assert repo.count_feedback() == 0
    assert repo.annotator_progress("c1", "alice") == {"answered": 0, "open": 1, "remaining": 0}


def test_add_feedback_with_task_id_follows_assignment_rules(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one")])
    answer = _fb("t1", item_id="one", context_ids=("ctx-a", "ctx-b"), annotator="alice", task_id=1)
    with pytest.raises(TaskNotAssignedError):
        repo.add_feedback(answer)
    repo.next_task("c1", "alice")
    with pytest.raises(InvalidFeedbackError, match="item_id/context_ids do not match task 1"):
        repo.add_feedback(_fb("t0", item_id="other", annotator="alice", task_id=1))
    with pytest.raises(InvalidFeedbackError, match="a task answer needs the annotator's username"):
        repo.add_feedback(_fb("t2", item_id="one", context_ids=("ctx-a", "ctx-b"), task_id=1))
    assert repo.add_feedback(answer) == FeedbackResult(True, 1)
    assert repo.campaign_overview("c1") == {"tasks": 1, "complete": 1, "answers": 1, "open": 0}


def test_my_feedback_returns_only_own_rows(repo: Repository) -> None:
    repo.add_feedback(_fb("a1", annotator="alice"))
    repo.add_feedback(_fb("b1", annotator="bob", label="dislike"))
    repo.add_feedback(_fb("a2", annotator="alice", label="graded", grade=3))
    repo.add_feedback(_fb("n1"))
    assert [f.request_id for f in repo.my_feedback("alice")] == ["a2", "a1"]
    assert [f.request_id for f in repo.my_feedback("bob")] == ["b1"]
    assert [f.request_id for f in repo.my_feedback("alice", limit=1)] == ["a2"]
    assert repo.my_feedback("nobody") == []


CONTROL_HINT = "tasks[1]: a control needs expected_grade in 0..3 (0/1 for like/dislike campaigns)"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (TaskIn("", ("a",), "v1"), "tasks[1]: item_id is empty"),
        (TaskIn("i", "ab", "v1"), "tasks[1]: context_ids must be a sequence of item ids (strings)"),  # type: ignore
        (TaskIn("i", ("a",), ""), "tasks[1]: model_version is empty"),
        (TaskIn("i", ("a",), "v1", kind="odd"),
         "tasks[1]: kind 'odd' is not allowed; use one of: recommendation, random, control"),
        (TaskIn("i", ("a",), "v1", kind="control"), CONTROL_HINT + "; got None"),
        (TaskIn("i", ("a",), "v1", kind="control", expected_grade=4), CONTROL_HINT + "; got 4"),
        (TaskIn("i", ("a",), "v1", expected_grade=1),
         "tasks[1]: expected_grade is only for controls; kind 'recommendation' must have expected_grade=None"),
        (TaskIn("i", ("a",), "v1", overlap=0), "tasks[1]: overlap is 0; use an integer >= 1"),
    ],
)
def test_add_tasks_validates_all_before_storing(repo: Repository, task: TaskIn, message: str) -> None:
    with pytest.raises(InvalidTaskError) as info:
        repo.add_tasks("c1", [_task("fine"), task])
    assert message in str(info.value)
    assert repo.campaign_overview("c1")["tasks"] == 0


def test_add_tasks_rejects_empty_campaign(repo: Repository) -> None:
    with pytest.raises(InvalidTaskError, match="campaign is empty"):
        repo.add_tasks(" ", [_task("x")])


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


def test_database_refuses_grade_that_does_not_fit_the_label(repo: Repository) -> None:
    """CHECK constraint behind validate_feedback, for code that writes rows directly."""
    from sqlalchemy.exc import IntegrityError

    for label, grade in (("graded", None), ("graded", 4), ("like", 2)):
        with Session(repo.engine) as s:
            s.add(Feedback(request_id=f"{label}-{grade}", item_id="i", label=label, grade=grade, model_version="v"))
            with pytest.raises(IntegrityError):
                s.commit()
    assert repo.count_feedback() == 0


def test_concurrent_annotators_never_exceed_overlap(repo: Repository) -> None:
    """Annotators in threads pull and answer tasks at the same time; each task still gets exactly ``overlap``."""
    import threading

    n_tasks, overlap, n_annotators = 5, 2, 4
    repo.add_tasks("c1", [_task(f"item-{i}", overlap=overlap) for i in range(n_tasks)])
    barrier = threading.Barrier(n_annotators)
    done: dict[str, list[int]] = {}

    def worker(i: int) -> None:
        name = f"ann-{i}"
        mine: list[int] = []
        try:
            barrier.wait()
            while (task := repo.next_task("c1", name)) is not None:
                repo.answer_task(name, task.task_id, "like", None, f"{name}-{task.task_id}")
                mine.append(task.task_id)
        finally:  # what it answered before any error; run_threads hands the error back
            done[name] = mine

    errors = run_threads(n_annotators, worker, timeout_s=120)
    assert errors == []
    per_task = Counter(t for tasks in done.values() for t in tasks)
    assert per_task == {t: overlap for t in range(1, n_tasks + 1)}
    assert all(len(t) == len(set(t)) for t in done.values())
    assert repo.campaign_overview("c1") == {"tasks": 5, "complete": 5, "answers": 10, "open": 0}
