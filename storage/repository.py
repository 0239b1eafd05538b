"""Write/read API for feedback, impressions, crowd-labelling tasks and the model registry.

The module-level functions take a caller-owned ``Session`` so a web handler
can group several writes in one transaction; :class:`Repository` wraps them
for the common "one event, one transaction" case and adds retry on transient
errors (SQLite lock timeouts, PostgreSQL deadlocks and serialization failures).

Idempotency and get-or-create are race-safe by relying on the database's
UNIQUE constraints instead of locks in Python: an insert that loses a race
raises ``IntegrityError`` inside a SAVEPOINT, which is rolled back alone
(the caller's outer transaction survives) and the winner's row is re-selected.
This works across processes and hosts, which an in-process lock would not.

Crowd labelling: annotators pull tasks with :meth:`Repository.next_task` and
answer them with :meth:`Repository.answer_task`. Nothing in the annotator-facing
methods returns other annotators' answers, a task's kind or its expected
answer, so controls stay blind and annotators cannot copy each other.

Everything handed back from :class:`Repository` (except the historical
:meth:`Repository.list_feedback`) is a frozen dataclass, never a live ORM row,
because the session that loaded a row is closed before the caller sees it.
"""

from __future__ import annotations

import json
import logging
import math
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from sqlalchemy import case, exists, func, inspect, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.schema import CreateIndex
from sqlmodel import Session, SQLModel, col, select

from storage.db import init_db, make_engine
from storage.models import (
    ALLOWED_CLIENTS,
    FEEDBACK_LABELS,
    GRADE_MAX,
    GRADE_MIN,
    GRADED_LABEL,
    MODEL_STATUSES,
    REQUEST_ID_MAX_LENGTH,
    TASK_KINDS,
    Annotator,
    Feedback,
    Impression,
    LabelSession,
    LabelSnapshot,
    LabelTask,
    ModelVersion,
    Setting,
    TaskAssignment,
    utc_now,
)

if TYPE_CHECKING:  # pandas is imported lazily: only the admin statistics need it.
    import pandas as pd

    from storage.erasure import ErasureResult

__all__ = [
    "FeedbackIn",
    "ImpressionIn",
    "FeedbackResult",
    "FeedbackOut",
    "TaskIn",
    "TaskOut",
    "ModelVersionOut",
    "SnapshotOut",
    "InvalidFeedbackError",
    "RequestIdConflictError",
    "TaskNotAssignedError",
    "TaskAlreadyAnsweredError",
    "InvalidTaskError",
    "RegistryError",
    "EXPORT_KEY_SETTING",
    "JUDGEMENT_COLUMNS",
    "validate_feedback",
    "add_missing_columns",
    "get_or_create_annotator",
    "get_or_create_session",
    "add_impressions",
    "add_feedback",
    "count_feedback",
    "count_impressions",
    "list_feedback",
    "Repository",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


# --------------------------------------------------------------------------- DTOs

#: Key of the :class:`~storage.models.Setting` row that holds the export pseudonym key.
EXPORT_KEY_SETTING = "export.pseudonym_key"

#: Columns of :meth:`Repository.judgements_frame`, in order.
JUDGEMENT_COLUMNS: tuple[str, ...] = (
    "feedback_id",
    "annotator",
    "context_ids",
    "item_id",
    "label",
    "grade",
    "is_control",
    "expected",
    "model_version",
    "task_id",
    "campaign",
    "created_at",
)


@dataclass(frozen=True)
class FeedbackIn:
    """One like/dislike or graded judgement as received from the UI or API (not yet validated).

    ``grade`` (0..3) is required for ``label="graded"`` and must be None for
    like/dislike; ``task_id`` links an answer to a labelling task. Both default
    to None so callers written for plain like/dislike keep working.
    """

    request_id: str
    item_id: str
    label: str
    context_ids: tuple[str, ...]
    model_version: str
    session_key: Optional[str] = None
    annotator: Optional[str] = None
    client: str = "ui"
    grade: Optional[int] = None
    task_id: Optional[int] = None


@dataclass(frozen=True)
class ImpressionIn:
    """One item shown at ``rank`` with the model's ``score``."""

    item_id: str
    rank: int
    score: float


@dataclass(frozen=True)
class FeedbackResult:
    """``stored`` is False when ``request_id`` was already present (a resend)."""

    stored: bool
    feedback_id: int


@dataclass(frozen=True)
class FeedbackOut:
    """One of an annotator's own judgements (see :meth:`Repository.my_feedback`)."""

    feedback_id: int
    request_id: str
    item_id: str
    context_ids: tuple[str, ...]
    label: str
    grade: Optional[int]
    model_version: str
    task_id: Optional[int]
    created_at: datetime


@dataclass(frozen=True)
class TaskIn:
    """A task to be added to a campaign (see :meth:`Repository.add_tasks`).

    ``expected_grade`` is the known answer of a control, on the campaign's scale
    (0..3 for graded campaigns, 0/1 = dislike/like for like/dislike campaigns);
    it must be None for other kinds. ``overlap`` is how many distinct
    annotators must answer the task.
    """

    item_id: str
    context_ids: tuple[str, ...]
    model_version: str
    kind: str = "recommendation"
    expected_grade: Optional[int] = None
    overlap: int = 1


@dataclass(frozen=True)
class TaskOut:
    """What an annotator is shown for a task: deliberately without kind or expected answer."""

    task_id: int
    campaign: str
    item_id: str
    context_ids: tuple[str, ...]
    assigned_at: datetime


@dataclass(frozen=True)
class ModelVersionOut:
    """A registry entry, detached from the database session."""

    version: str
    path: str
    parent: Optional[str]
    label_snapshot: Optional[str]
    metrics: dict[str, Any] = field(hash=False)
    status: str
    created_at: datetime
    decided_by: Optional[str]
    decided_at: Optional[datetime]
    note: str


@dataclass(frozen=True)
class SnapshotOut:
    """A saved label snapshot: which judgements (by feedback id) a training run used."""

    id: str
    created_at: datetime
    n_examples: int
    n_judgements: int
    config: dict[str, Any] = field(hash=False)
    feedback_ids: tuple[int, ...]


class InvalidFeedbackError(ValueError):
    """Feedback rejected before touching the database; the message says what to fix."""


class RequestIdConflictError(InvalidFeedbackError):
    """A ``request_id`` that is already stored for another annotator (or another task).

    Raised instead of answering ``stored=False`` because that answer would tell
    the second annotator "your label is saved" when it is not, and would hand
    them the id of someone else's judgement. The message names neither.
    """


class TaskNotAssignedError(InvalidFeedbackError):
    """An annotator tried to answer a task that was never handed to them."""


class TaskAlreadyAnsweredError(InvalidFeedbackError):
    """An annotator tried to answer the same task a second time with a new request_id."""


class InvalidTaskError(ValueError):
    """A task (or campaign name) rejected before anything was stored."""


class RegistryError(ValueError):
    """A model-registry or label-snapshot request that cannot be carried out as asked."""


def _check_request_id(request_id: str, error: type[ValueError]) -> None:
    if not isinstance(request_id, str) or not request_id.strip():
        raise error("request_id is empty; send a non-empty idempotency key (e.g. a UUID)")
    if len(request_id) > REQUEST_ID_MAX_LENGTH:
        raise error(
            f"request_id is {len(request_id)} characters long; "
            f"at most {REQUEST_ID_MAX_LENGTH} are allowed"
        )


def _check_client(client: str, error: type[ValueError]) -> None:
    if client not in ALLOWED_CLIENTS:
        raise error(f"client {client!r} is not allowed; use one of: {', '.join(ALLOWED_CLIENTS)}")


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as a grade is almost certainly a bug.
    return isinstance(value, int) and not isinstance(value, bool)


def _check_label_grade(label: str, grade: Optional[int]) -> None:
    if label not in FEEDBACK_LABELS:
        raise InvalidFeedbackError(
            f"label {label!r} is not allowed; use one of: {', '.join(FEEDBACK_LABELS)}"
        )
    if label == GRADED_LABEL:
        if grade is None or not _is_int(grade) or not GRADE_MIN <= grade <= GRADE_MAX:
            raise InvalidFeedbackError(
                f"label {GRADED_LABEL!r} needs an integer grade in {GRADE_MIN}..{GRADE_MAX}; got {grade!r}"
            )
    elif grade is not None:
        raise InvalidFeedbackError(
            f"label {label!r} takes no grade (got {grade!r}); send grade=None, "
            f"or label {GRADED_LABEL!r} with a grade in {GRADE_MIN}..{GRADE_MAX}"
        )


def validate_feedback(feedback: FeedbackIn) -> None:
    """Raise :class:`InvalidFeedbackError` if ``feedback`` must not be stored.

    Validation happens before any query so that bad input never leaves a
    half-written annotator/session row behind.
    """
    _check_request_id(feedback.request_id, InvalidFeedbackError)
    _check_label_grade(feedback.label, feedback.grade)
    if not isinstance(feedback.item_id, str) or not feedback.item_id.strip():
        raise InvalidFeedbackError("item_id is empty; send the id of the item being labelled")
    if not all(isinstance(c, str) for c in feedback.context_ids):
        raise InvalidFeedbackError("context_ids must all be strings (item ids)")
    _check_client(feedback.client, InvalidFeedbackError)
    if feedback.session_key is not None and not feedback.session_key.strip():
        raise InvalidFeedbackError("session_key is empty; send None or a non-empty session key")
    if feedback.annotator is not None and not feedback.annotator.strip():
        raise InvalidFeedbackError("annotator is empty; send None or a non-empty username")
    if feedback.task_id is not None:
        if not _is_int(feedback.task_id) or feedback.task_id < 1:
            raise InvalidFeedbackError(
                f"task_id {feedback.task_id!r} is not a task id; send None or a positive integer"
            )
        if feedback.annotator is None:
            raise InvalidFeedbackError("a task answer needs the annotator's username; send annotator=...")


# ----------------------------------------------------------------- session functions


def _row_id(row: Annotator | LabelSession | Feedback | LabelTask | TaskAssignment | ModelVersion) -> int:
    """Primary key of a flushed row (always set after INSERT; checked to satisfy typing)."""
    if row.id is None:
        raise RuntimeError(f"{type(row).__name__} has no id after flush")
    return row.id


def _find_annotator(session: Session, username: str) -> Optional[Annotator]:
    return session.exec(select(Annotator).where(Annotator.username == username)).first()


def _find_session(session: Session, session_key: str) -> Optional[LabelSession]:
    return session.exec(select(LabelSession).where(LabelSession.session_key == session_key)).first()


def _find_feedback(session: Session, request_id: str) -> Optional[Feedback]:
    return session.exec(select(Feedback).where(Feedback.request_id == request_id)).first()


def _insert_or_fetch(session: Session, row: T, fetch: Callable[[], Optional[T]]) -> tuple[T, bool]:
    """Insert ``row`` in a SAVEPOINT; if a UNIQUE constraint says it already exists, fetch it.

    Returns ``(row, created)``. An ``IntegrityError`` that is not explained by a
    concurrent insert (``fetch`` finds nothing, e.g. a foreign-key violation) is
    re-raised.
    """
    try:
        with session.begin_nested():
            session.add(row)
    except IntegrityError:
        existing = fetch()
        if existing is None:
            raise
        return existing, False
    return row, True


def get_or_create_annotator(*, session: Session, username: str, role: str = "annotator") -> Annotator:
    """Return the annotator called ``username``, creating it on first use."""
    existing = _find_annotator(session, username)
    if existing is not None:
        return existing
    annotator, created = _insert_or_fetch(
        session, Annotator(username=username, role=role), lambda: _find_annotator(session, username)
    )
    if created:
        logger.info("created annotator %r (role %s)", username, role)
    return annotator


def get_or_create_session(
    *,
    session: Session,
    session_key: str,
    annotator_id: Optional[int] = None,
    client: str = "ui",
) -> LabelSession:
    """Return the labelling session for ``session_key``, creating it on first use.

    Several Gradio events of one browser session can arrive concurrently; the
    loser of the insert race gets the winner's row instead of an error. An
    existing session without an annotator is linked to ``annotator_id`` when
    one becomes known (login after the first event).
    """
    _check_client(client, ValueError)
    existing = _find_session(session, session_key)
    if existing is None:
        existing, _created = _insert_or_fetch(
            session,
            LabelSession(session_key=session_key, annotator_id=annotator_id, client=client),
            lambda: _find_session(session, session_key),
        )
    if existing.annotator_id is None and annotator_id is not None:
        existing.annotator_id = annotator_id
        session.add(existing)
        session.flush()
    return existing


def add_impressions(
    *,
    session: Session,
    request_id: str,
    impressions: Sequence[ImpressionIn],
    context_ids: Sequence[str],
    model_version: str,
    session_key: Optional[str] = None,
    client: str = "ui",
) -> int:
    """Record what one recommend call showed; returns the number of rows added.

    Impressions are append-only (not idempotent): each recommend call has its
    own ``request_id``, and the same item shown twice is two exposures.
    """
    _check_request_id(request_id, ValueError)
    if any(not imp.item_id.strip() for imp in impressions):
        raise ValueError("impression item_id is empty; every shown item needs an id")
    session_id = None
    if session_key is not None:
        session_id = get_or_create_session(session=session, session_key=session_key, client=client).id
    context = list(context_ids)
    rows = [
        Impression(
            request_id=request_id,
            session_id=session_id,
            item_id=imp.item_id,
            rank=int(imp.rank),
            score=float(imp.score),
            model_version=model_version,
            context_ids=list(context),
        )
        for imp in impressions
    ]
    session.add_all(rows)
    session.flush()
    return len(rows)


def _username_of(session: Session, annotator_id: Optional[int]) -> Optional[str]:
    if annotator_id is None:
        return None
    row = session.get(Annotator, annotator_id)
    return None if row is None else row.username


def _resend_result(session: Session, existing: Feedback, feedback: FeedbackIn) -> FeedbackResult:
    """Answer a request_id that is already stored.

    A resend by the same annotator (or an anonymous resend, as before graded
    labels existed) gets ``stored=False`` and the original id. A resend that
    names a different annotator, or a different task, is refused: it is not a
    resend but a reused key, and answering it would misreport the label as
    saved and expose another annotator's row id.
    """
    if feedback.annotator is not None and _username_of(session, existing.annotator_id) != feedback.annotator:
        logger.warning(
            "request_id %r reused by annotator %r; it belongs to another annotator, nothing stored",
            feedback.request_id,
            feedback.annotator,
        )
        raise RequestIdConflictError(
            "request_id is already used for another judgement; generate a fresh request_id for every new label"
        )
    if feedback.task_id is not None and existing.task_id != feedback.task_id:
        raise RequestIdConflictError(
            f"request_id is already used for a judgement that is not an answer to task {feedback.task_id}; "
            "generate a fresh request_id for every new label"
        )
    return FeedbackResult(stored=False, feedback_id=_row_id(existing))


def _session_id_for(session: Session, feedback: FeedbackIn, annotator_id: Optional[int]) -> Optional[int]:
    if feedback.session_key is None:
        return None
    return get_or_create_session(
        session=session,
        session_key=feedback.session_key,
        annotator_id=annotator_id,
        client=feedback.client,
    ).id


def _find_assignment(session: Session, task_id: int, annotator_id: int) -> Optional[TaskAssignment]:
    return session.exec(
        select(TaskAssignment).where(TaskAssignment.task_id == task_id, TaskAssignment.annotator_id == annotator_id)
    ).first()


def _add_task_answer(session: Session, feedback: FeedbackIn) -> FeedbackResult:
    """Store the answer to a labelling task and mark the annotator's assignment answered.

    Refuses answers to tasks that were not handed to this annotator (so nobody
    can pick tasks, or answer for others) and second answers to the same task.
    The assignment is flipped with a conditional UPDATE (``status='assigned'``),
    so two concurrent answers from the same annotator cannot both succeed even
    on PostgreSQL, where writers are not serialised as they are on SQLite.
    """
    if feedback.task_id is None or feedback.annotator is None:  # validate_feedback guarantees both
        raise InvalidFeedbackError("a task answer needs task_id and the annotator's username")
    existing = _find_feedback(session, feedback.request_id)
    if existing is not None:
        return _resend_result(session, existing, feedback)

    not_assigned = TaskNotAssignedError(
        f"task {feedback.task_id} is not assigned to {feedback.annotator!r}; "
        "answer the task you were given (ask for one with next_task)"
    )
    task = session.get(LabelTask, feedback.task_id)
    annotator = _find_annotator(session, feedback.annotator)
    if task is None or annotator is None:
        raise not_assigned
    assignment = _find_assignment(session, _row_id(task), _row_id(annotator))
    if assignment is None:
        raise not_assigned
    if assignment.status != "assigned":
        raise TaskAlreadyAnsweredError(
            f"task {feedback.task_id} was already answered by {feedback.annotator!r}; "
            "each annotator answers a task once (to resend, reuse the original request_id)"
        )
    if feedback.item_id != task.item_id or list(feedback.context_ids) != list(task.context_ids):
        raise InvalidFeedbackError(
            f"item_id/context_ids do not match task {feedback.task_id}; answer the task as it was shown"
        )
    if feedback.model_version != task.model_version:
        raise InvalidFeedbackError(
            f"model_version does not match the one task {feedback.task_id} was created for; "
            "send None to answer_task to use the task's"
        )

    row = Feedback(
        request_id=feedback.request_id,
        annotator_id=annotator.id,
        session_id=_session_id_for(session, feedback, annotator.id),
        context_ids=list(feedback.context_ids),
        item_id=feedback.item_id,
        label=feedback.label,
        grade=feedback.grade,
        model_version=feedback.model_version,
        task_id=task.id,
    )
    stored_row, created = _insert_or_fetch(session, row, lambda: _find_feedback(session, feedback.request_id))
    if not created:
        return _resend_result(session, stored_row, feedback)
    flipped = session.execute(
        update(TaskAssignment)
        .where(col(TaskAssignment.id) == assignment.id, col(TaskAssignment.status) == "assigned")
        .values(status="answered", feedback_id=_row_id(stored_row), answered_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    if flipped.rowcount != 1:  # a concurrent answer won; the caller's transaction is rolled back
        raise TaskAlreadyAnsweredError(
            f"task {feedback.task_id} was already answered by {feedback.annotator!r}; "
            "each annotator answers a task once (to resend, reuse the original request_id)"
        )
    session.expire(assignment)
    return FeedbackResult(stored=True, feedback_id=_row_id(stored_row))


def add_feedback(*, session: Session, feedback: FeedbackIn) -> FeedbackResult:
    """Store one judgement exactly once per ``request_id``.

    Clients resend on timeouts, so a known ``request_id`` is answered with
    ``stored=False`` and the original row id rather than an error; the same
    holds when two copies race and the UNIQUE constraint rejects the second.
    A "resend" that names a different annotator than the stored row raises
    :class:`RequestIdConflictError` instead (see :func:`_resend_result`).
    Feedback with a ``task_id`` is a task answer and follows the assignment
    rules of :meth:`Repository.answer_task`.
    """
    validate_feedback(feedback)
    if feedback.task_id is not None:
        return _add_task_answer(session, feedback)
    existing = _find_feedback(session, feedback.request_id)
    if existing is not None:
        return _resend_result(session, existing, feedback)

    annotator_id = None
    if feedback.annotator is not None:
        annotator_id = get_or_create_annotator(session=session, username=feedback.annotator).id
    row = Feedback(
        request_id=feedback.request_id,
        annotator_id=annotator_id,
        session_id=_session_id_for(session, feedback, annotator_id),
        context_ids=list(feedback.context_ids),
        item_id=feedback.item_id,
        label=feedback.label,
        grade=feedback.grade,
        model_version=feedback.model_version,
    )
    stored_row, created = _insert_or_fetch(session, row, lambda: _find_feedback(session, feedback.request_id))
    if not created:
        logger.info("duplicate feedback request_id %r ignored (concurrent resend)", feedback.request_id)
        return _resend_result(session, stored_row, feedback)
    return FeedbackResult(stored=True, feedback_id=_row_id(stored_row))


def count_feedback(*, session: Session) -> int:
    """Number of stored feedback rows."""
    return int(session.exec(select(func.count()).select_from(Feedback)).one())


def count_impressions(*, session: Session) -> int:
    """Number of stored impression rows."""
    return int(session.exec(select(func.count()).select_from(Impression)).one())


def list_feedback(*, session: Session, limit: int = 100) -> list[Feedback]:
    """Most recent feedback first; ``id`` breaks ties between equal timestamps."""
    if limit < 0:
        raise ValueError(f"limit is {limit}; use 0 or a positive number")
    stmt = select(Feedback).order_by(col(Feedback.created_at).desc(), col(Feedback.id).desc()).limit(limit)
    return list(session.exec(stmt).all())


# ------------------------------------------------------------------- schema upgrades


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


# ------------------------------------------------------------------------ label tasks


def _check_name(value: object, what: str, error: type[ValueError], max_length: int = 128) -> str:
    if not isinstance(value, str) or not value.strip():
        raise error(f"{what} is empty; send a non-empty name")
    if len(value) > max_length:
        raise error(f"{what} is {len(value)} characters long; at most {max_length} are allowed")
    return value


def _validate_task(index: int, task: TaskIn) -> None:
    where = f"tasks[{index}]"  # position in the list given to add_tasks, counted from 0
    if not isinstance(task.item_id, str) or not task.item_id.strip():
        raise InvalidTaskError(f"{where}: item_id is empty; send the id of the item to be judged")
    if isinstance(task.context_ids, str) or not all(isinstance(c, str) for c in task.context_ids):
        raise InvalidTaskError(f"{where}: context_ids must be a sequence of item ids (strings)")
    _check_name(task.model_version, f"{where}: model_version", InvalidTaskError)
    if task.kind not in TASK_KINDS:
        raise InvalidTaskError(f"{where}: kind {task.kind!r} is not allowed; use one of: {', '.join(TASK_KINDS)}")
    if task.kind == "control":
        grade = task.expected_grade
        if grade is None or not _is_int(grade) or not GRADE_MIN <= grade <= GRADE_MAX:
            raise InvalidTaskError(
                f"{where}: a control needs expected_grade in {GRADE_MIN}..{GRADE_MAX} "
                f"(0/1 for like/dislike campaigns); got {task.expected_grade!r}"
            )
    elif task.expected_grade is not None:
        raise InvalidTaskError(
            f"{where}: expected_grade is only for controls; kind {task.kind!r} must have expected_grade=None"
        )
    if not _is_int(task.overlap) or task.overlap < 1:
        raise InvalidTaskError(
            f"{where}: overlap is {task.overlap!r}; use an integer >= 1 (distinct annotators per task)"
        )


def _task_out(task: LabelTask, assignment: TaskAssignment) -> TaskOut:
    return TaskOut(
        task_id=_row_id(task),
        campaign=task.campaign,
        item_id=task.item_id,
        context_ids=tuple(task.context_ids),
        assigned_at=_aware(assignment.assigned_at),
    )


def _n_assigned():  # type: ignore[no-untyped-def]
    """Correlated subquery: how many annotators a task has been handed to."""
    return (
        select(func.count())
        .select_from(TaskAssignment)
        .where(col(TaskAssignment.task_id) == col(LabelTask.id))
        .correlate(LabelTask)
        .scalar_subquery()
    )


def _available_tasks_stmt(campaign: str, annotator_id: Optional[int]):  # type: ignore[no-untyped-def]
    """Tasks of ``campaign`` with a free slot that were never handed to ``annotator_id``.

    Ordered by free slots left (fewest first: finish tasks before opening new
    ones, so complete judgements accumulate early), then by id.
    """
    n_assigned = _n_assigned()
    stmt = select(col(LabelTask.id)).where(col(LabelTask.campaign) == campaign, n_assigned < col(LabelTask.overlap))
    if annotator_id is not None:
        mine = exists().where(
            col(TaskAssignment.task_id) == col(LabelTask.id), col(TaskAssignment.annotator_id) == annotator_id
        )
        stmt = stmt.where(~mine)
    return stmt.order_by(col(LabelTask.overlap) - n_assigned, col(LabelTask.id))


def _next_task(session: Session, campaign: str, username: str, batch: int = 16) -> Optional[TaskOut]:
    annotator = get_or_create_annotator(session=session, username=username)
    annotator_id = _row_id(annotator)
    own_open = session.exec(
        select(TaskAssignment, LabelTask)
        .join(LabelTask, col(LabelTask.id) == col(TaskAssignment.task_id))
        .where(
            col(TaskAssignment.annotator_id) == annotator_id,
            col(TaskAssignment.status) == "assigned",
            col(LabelTask.campaign) == campaign,
        )
        .order_by(col(TaskAssignment.id))
    ).first()
    if own_open is not None:
        assignment, task = own_open
        return _task_out(task, assignment)

    while True:
        candidates = list(session.exec(_available_tasks_stmt(campaign, annotator_id).limit(batch)).all())
        if not candidates:
            return None
        for task_id in candidates:
            # Lock the task row (SQLite already holds the write lock from BEGIN IMMEDIATE) and
            # recount, so two annotators cannot both take the last slot. FOR NO KEY UPDATE
            # (key_share) rather than FOR UPDATE: it still serialises next_task calls, but does not
            # block, or deadlock with, answers whose foreign key to this task takes a KEY SHARE lock.
            task = session.exec(
                select(LabelTask).where(col(LabelTask.id) == task_id).with_for_update(key_share=True)
            ).one()
            taken = session.exec(
                select(func.count()).select_from(TaskAssignment).where(col(TaskAssignment.task_id) == task_id)
            ).one()
            if int(taken) >= task.overlap:
                continue
            assignment, created = _insert_or_fetch(
                session,
                TaskAssignment(task_id=task_id, annotator_id=annotator_id),
                lambda: _find_assignment(session, task_id, annotator_id),
            )
            if not created and assignment.status != "assigned":
                continue  # the same annotator took and answered it concurrently; look further
            logger.info("task %d of campaign %r assigned to %r", task_id, campaign, username)
            return _task_out(task, assignment)


def _annotator_progress(session: Session, campaign: str, username: str) -> dict[str, int]:
    annotator = _find_annotator(session, username)
    annotator_id = None if annotator is None else annotator.id
    counts = {"answered": 0, "open": 0}
    if annotator_id is not None:
        rows = session.exec(
            select(col(TaskAssignment.status), func.count())
            .join(LabelTask, col(LabelTask.id) == col(TaskAssignment.task_id))
            .where(col(TaskAssignment.annotator_id) == annotator_id, col(LabelTask.campaign) == campaign)
            .group_by(col(TaskAssignment.status))
        ).all()
        by_status = {status: int(n) for status, n in rows}
        counts = {"answered": by_status.get("answered", 0), "open": by_status.get("assigned", 0)}
    available = _available_tasks_stmt(campaign, annotator_id).order_by(None).subquery()
    remaining = int(session.exec(select(func.count()).select_from(available)).one())
    return {**counts, "remaining": remaining}


def _campaign_overview(session: Session, campaign: str) -> dict[str, int]:
    # Answers per task in a grouped subquery joined to the tasks (rather than a subquery inside
    # SUM), which every SQL backend accepts.
    answered = (
        select(col(TaskAssignment.task_id).label("task_id"), func.count().label("n"))
        .where(col(TaskAssignment.status) == "answered")
        .group_by(col(TaskAssignment.task_id))
        .subquery()
    )
    is_complete = case((func.coalesce(answered.c.n, 0) >= col(LabelTask.overlap), 1), else_=0)
    tasks, complete = session.exec(
        select(func.count(), func.coalesce(func.sum(is_complete), 0))
        .select_from(LabelTask)
        .outerjoin(answered, answered.c.task_id == col(LabelTask.id))
        .where(col(LabelTask.campaign) == campaign)
    ).one()
    rows = session.exec(
        select(col(TaskAssignment.status), func.count())
        .join(LabelTask, col(LabelTask.id) == col(TaskAssignment.task_id))
        .where(col(LabelTask.campaign) == campaign)
        .group_by(col(TaskAssignment.status))
    ).all()
    by_status = {status: int(n) for status, n in rows}
    return {
        "tasks": int(tasks),
        "complete": int(complete),
        "answers": by_status.get("answered", 0),
        "open": by_status.get("assigned", 0),
    }


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes even for ``DateTime(timezone=True)``; they were stored as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def _aware_opt(value: Optional[datetime]) -> Optional[datetime]:
    return None if value is None else _aware(value)


def _feedback_out(row: Feedback) -> FeedbackOut:
    return FeedbackOut(
        feedback_id=_row_id(row),
        request_id=row.request_id,
        item_id=row.item_id,
        context_ids=tuple(row.context_ids),
        label=row.label,
        grade=row.grade,
        model_version=row.model_version,
        task_id=row.task_id,
        created_at=_aware(row.created_at),
    )


# ----------------------------------------------------------------------- model registry


def _model_out(row: ModelVersion) -> ModelVersionOut:
    return ModelVersionOut(
        version=row.version,
        path=row.path,
        parent=row.parent,
        label_snapshot=row.label_snapshot,
        metrics=dict(row.metrics),
        status=row.status,
        created_at=_aware(row.created_at),
        decided_by=row.decided_by,
        decided_at=_aware_opt(row.decided_at),
        note=row.note,
    )


def _snapshot_out(row: LabelSnapshot) -> SnapshotOut:
    return SnapshotOut(
        id=row.id,
        created_at=_aware(row.created_at),
        n_examples=row.n_examples,
        n_judgements=row.n_judgements,
        config=dict(row.config),
        feedback_ids=tuple(row.feedback_ids),
    )


def _find_model(session: Session, version: str) -> Optional[ModelVersion]:
    return session.exec(select(ModelVersion).where(col(ModelVersion.version) == version)).first()


def _require_model(session: Session, version: str) -> ModelVersion:
    row = _find_model(session, version)
    if row is None:
        raise RegistryError(f"model version {version!r} is not registered; register it first (register_model)")
    return row


def _check_status(status: str) -> None:
    if status not in MODEL_STATUSES:
        raise RegistryError(f"model status {status!r} is not allowed; use one of: {', '.join(MODEL_STATUSES)}")


def _check_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Reject values JSON cannot store faithfully (NaN/inf become invalid JSON on PostgreSQL)."""
    if not isinstance(value, Mapping):
        raise RegistryError(f"{what} must be a dict; got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} must be JSON-serialisable without NaN/inf ({exc})") from None
    return dict(value)


def _activate(session: Session, row: ModelVersion, by: str, note: str) -> None:
    """Make ``row`` the only active model: retire the current one first, in this transaction.

    The order matters: ``active_slot`` is UNIQUE, so the old holder must give
    it up before the new one takes it; a concurrent activation that slipped
    in between fails on that constraint instead of leaving two active models.
    """
    now = utc_now()
    # Serialise activations: lock every registry row (a few hundred at most), in id order so
    # that activators cannot deadlock. Locking only the active row is not enough on PostgreSQL:
    # a waiter wakes to find it retired and cannot see the newly active row in its statement
    # snapshot, so it would hit the UNIQUE active_slot again and again under contention.
    # SQLite ignores FOR UPDATE; BEGIN IMMEDIATE already serialises its writers.
    session.exec(select(col(ModelVersion.id)).order_by(col(ModelVersion.id)).with_for_update()).all()
    current = session.exec(select(ModelVersion).where(col(ModelVersion.status) == "active")).all()
    for old in current:
        if old.id == row.id:
            continue
        old.status, old.active_slot = "retired", None
        old.decided_by, old.decided_at = by, now
        old.note = f"retired: {row.version} activated" + (f" ({note})" if note else "")
        session.add(old)
        logger.info("model %r retired by %r (replaced by %r)", old.version, by, row.version)
    session.flush()
    row.status, row.active_slot = "active", 1
    row.decided_by, row.decided_at, row.note = by, now, note
    session.add(row)
    session.flush()
    logger.info("model %r activated by %r", row.version, by)


def _set_model_status(session: Session, version: str, status: str, by: str, note: str) -> ModelVersionOut:
    _check_status(status)
    _check_name(by, "by (who decided)", RegistryError)
    row = _require_model(session, version)
    if status == "active":
        _activate(session, row, by, note)
        return _model_out(row)
    if row.status == "active":
        raise RegistryError(
            f"model {version!r} is the active model and cannot become {status!r} on its own "
            "(exactly one model is active); activate another version instead, which retires this one"
        )
    row.status, row.decided_by, row.decided_at, row.note = status, by, utc_now(), note
    session.add(row)
    session.flush()
    logger.info("model %r set to %s by %r", version, status, by)
    return _model_out(row)


def _register_model(
    session: Session,
    version: str,
    path: str,
    parent: Optional[str],
    label_snapshot: Optional[str],
    metrics: dict[str, Any],
) -> tuple[ModelVersionOut, bool]:
    """Insert a candidate (or find the same version); returns ``(entry, created)``."""
    row = ModelVersion(
        version=version, path=path, parent=parent, label_snapshot=label_snapshot, metrics=metrics
    )
    stored, created = _insert_or_fetch(session, row, lambda: _find_model(session, version))
    if not created:
        given = (path, parent, label_snapshot, metrics)
        if (stored.path, stored.parent, stored.label_snapshot, dict(stored.metrics)) != given:
            raise RegistryError(
                f"model version {version!r} is already registered with a different path, parent, "
                "label_snapshot or metrics; register the new model under a new version name"
            )
        return _model_out(stored), False
    logger.info("model %r registered (%s, parent %r)", version, path, parent)
    return _model_out(stored), True


def _save_snapshot(
    session: Session,
    snapshot_id: str,
    feedback_ids: list[int],
    config: dict[str, Any],
    n_examples: int,
    n_judgements: int,
) -> SnapshotOut:
    row = LabelSnapshot(
        id=snapshot_id,
        n_examples=n_examples,
        n_judgements=n_judgements,
        config=config,
        feedback_ids=feedback_ids,
    )
    stored, created = _insert_or_fetch(session, row, lambda: session.get(LabelSnapshot, snapshot_id))
    if not created:
        same = (
            list(stored.feedback_ids) == feedback_ids
            and dict(stored.config) == config
            and (stored.n_examples, stored.n_judgements) == (n_examples, n_judgements)
        )
        if not same:
            raise RegistryError(
                f"label snapshot {snapshot_id!r} already exists with different contents; "
                "snapshots are immutable, save the new one under a new id"
            )
    else:
        logger.info("label snapshot %r saved (%d judgements)", snapshot_id, n_judgements)
    return _snapshot_out(stored)


def _register_then_decide(
    session: Session,
    version: str,
    path: str,
    parent: Optional[str],
    label_snapshot: Optional[str],
    metrics: dict[str, Any],
    status: str,
    by: str,
) -> ModelVersionOut:
    """Register as a candidate and, for another ``status``, record that decision in the same transaction.

    A re-registration (the version exists already) returns the stored entry
    unchanged: decisions about an existing model go through set_model_status.
    """
    out, created = _register_model(session, version, path, parent, label_snapshot, metrics)
    if not created or status == "candidate":
        return out
    return _set_model_status(session, version, status, by, "")


# --------------------------------------------------------------------------- statistics


def _expected_value(label: str, expected_grade: Optional[int]) -> float:
    """Scale a control's expected answer to 0..1 on the scale of the answer given."""
    if expected_grade is None:
        return math.nan
    if label == GRADED_LABEL:
        return expected_grade / GRADE_MAX
    if expected_grade in (0, 1):
        return float(expected_grade)
    logger.warning(
        "control with expected_grade %d answered with a %s label; like/dislike controls use 0/1, "
        "so its expected value is left empty",
        expected_grade,
        label,
    )
    return math.nan


def _judgements_frame(session: Session, campaign: Optional[str]) -> "pd.DataFrame":
    import pandas as pd

    stmt = (
        select(
            Feedback,
            col(Annotator.username),
            col(LabelTask.kind),
            col(LabelTask.expected_grade),
            col(LabelTask.campaign),
        )
        .join(Annotator, col(Annotator.id) == col(Feedback.annotator_id), isouter=True)
        .join(LabelTask, col(LabelTask.id) == col(Feedback.task_id), isouter=True)
        .order_by(col(Feedback.id))
    )
    if campaign is not None:
        stmt = stmt.where(col(LabelTask.campaign) == campaign)
    records = []
    for fb, username, kind, expected_grade, task_campaign in session.exec(stmt).all():
        is_control = kind == "control"
        records.append(
            {
                "feedback_id": fb.id,
                "annotator": username,
                "context_ids": list(fb.context_ids),
                "item_id": fb.item_id,
                "label": fb.label,
                "grade": fb.grade,
                "is_control": is_control,
                "expected": _expected_value(fb.label, expected_grade) if is_control else math.nan,
                "model_version": fb.model_version,
                "task_id": fb.task_id,
                "campaign": task_campaign,
                "created_at": _aware(fb.created_at),
            }
        )
    # Build each column with its dtype directly: inferring first would turn the text columns
    # into pandas' string dtype and their None into NaN.
    dtypes = {
        "feedback_id": "int64",
        "grade": "Int64",
        "is_control": "bool",
        "expected": "float64",
        "task_id": "Int64",
    }
    columns: dict[str, Any] = {}
    for name in JUDGEMENT_COLUMNS:
        values = [r[name] for r in records]
        if name == "created_at":
            columns[name] = pd.Series(pd.to_datetime(values, utc=True), dtype="datetime64[us, UTC]")
        else:
            columns[name] = pd.Series(values, dtype=dtypes.get(name, "object"))
    return pd.DataFrame(columns, columns=list(JUDGEMENT_COLUMNS))


def _like_rate_by_model(session: Session) -> list[dict[str, Any]]:
    likes = func.sum(case((col(Feedback.label) == "like", 1), else_=0))
    dislikes = func.sum(case((col(Feedback.label) == "dislike", 1), else_=0))
    rows = session.exec(
        select(col(Feedback.model_version), likes, dislikes)
        .where(col(Feedback.label).in_(("like", "dislike")))
        .group_by(col(Feedback.model_version))
        .order_by(col(Feedback.model_version))
    ).all()
    out = []
    for version, n_like, n_dislike in rows:
        n_like, n_dislike = int(n_like), int(n_dislike)
        out.append(
            {
                "model_version": version,
                "likes": n_like,
                "dislikes": n_dislike,
                "like_rate": n_like / (n_like + n_dislike),
            }
        )
    return out


def _label_counts(session: Session) -> dict[str, int]:
    rows = session.exec(select(col(Feedback.label), func.count()).group_by(col(Feedback.label))).all()
    counts = {label: 0 for label in FEEDBACK_LABELS}
    for label, n in rows:
        counts[label] = int(n)
    counts["total"] = sum(int(n) for _label, n in rows)
    return counts


def _get_or_create_setting(session: Session, key: str, make_value: Callable[[], str]) -> str:
    existing = session.get(Setting, key)
    if existing is not None:
        return existing.value
    row, created = _insert_or_fetch(session, Setting(key=key, value=make_value()), lambda: session.get(Setting, key))
    if created:
        logger.info("setting %r created", key)  # never the value: it may be a secret
    return row.value


# ------------------------------------------------------------------------ Repository


#: PostgreSQL SQLSTATEs after which running the whole transaction again is the documented remedy:
#: serialization_failure and deadlock_detected (the server already rolled the transaction back).
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def _is_transient_lock_error(exc: OperationalError) -> bool:
    if getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    message = str(exc.orig if exc.orig is not None else exc).lower()
    return "locked" in message or "busy" in message


class Repository:
    """Engine-owning facade: one ``Session`` and one transaction per call.

    SQLite can still report "database is locked" when the busy timeout runs out
    under heavy write load, and PostgreSQL aborts one transaction of a deadlock
    (or a serialization failure); those calls are retried with exponential
    back-off and jitter (so retrying threads do not collide again in lock-step).
    Every unit of work here is idempotent or append-only, so a retry is safe.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_retries: int = 5,
        base_delay_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.engine = engine
        self.max_retries = max_retries
        self.base_delay_s = base_delay_s
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> "Repository":
        """Make the engine for ``url``, create missing tables and columns, and wrap it."""
        engine = make_engine(url)
        init_db(engine)
        add_missing_columns(engine)
        ensure_feedback_autoincrement(engine)
        return cls(engine, **kwargs)  # type: ignore[arg-type]

    def _run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a fresh committed session, retrying transient lock errors."""
        attempt = 0
        while True:
            try:
                # expire_on_commit=False: returned rows stay readable after the session closes.
                with Session(self.engine, expire_on_commit=False) as session:
                    result = work(session)
                    session.commit()
                    return result
            except OperationalError as exc:
                if attempt >= self.max_retries or not _is_transient_lock_error(exc):
                    raise
                delay = self.base_delay_s * (2**attempt) * (1.0 + self._rng.random())
                attempt += 1
                logger.warning(
                    "database busy on %s (%s); retry %d/%d in %.0f ms",
                    self.engine.url.render_as_string(hide_password=True),
                    exc.orig,
                    attempt,
                    self.max_retries,
                    delay * 1000,
                )
                self._sleep(delay)

    def add_feedback(self, feedback: FeedbackIn) -> FeedbackResult:
        """See :func:`add_feedback`."""
        return self._run(lambda s: add_feedback(session=s, feedback=feedback))

    def add_impressions(
        self,
        *,
        request_id: str,
        impressions: Sequence[ImpressionIn],
        context_ids: Sequence[str],
        model_version: str,
        session_key: Optional[str] = None,
        client: str = "ui",
    ) -> int:
        """See :func:`add_impressions`."""
        return self._run(
            lambda s: add_impressions(
                session=s,
                request_id=request_id,
                impressions=impressions,
                context_ids=context_ids,
                model_version=model_version,
                session_key=session_key,
                client=client,
            )
        )

    def count_feedback(self) -> int:
        """See :func:`count_feedback`."""
        return self._run(lambda s: count_feedback(session=s))

    def count_impressions(self) -> int:
        """See :func:`count_impressions`."""
        return self._run(lambda s: count_impressions(session=s))

    def list_feedback(self, limit: int = 100) -> list[Feedback]:
        """See :func:`list_feedback`."""
        return self._run(lambda s: list_feedback(session=s, limit=limit))

    # ------------------------------------------------------------- crowd labelling

    def add_tasks(self, campaign: str, tasks: Sequence[TaskIn]) -> int:
        """Add ``tasks`` to ``campaign`` in one transaction; returns how many were added.

        All tasks are validated first, so one bad task (named by its position)
        leaves the campaign unchanged. Append-only: adding the same task twice
        creates two tasks.
        """
        _check_name(campaign, "campaign", InvalidTaskError)
        tasks = list(tasks)
        for index, task in enumerate(tasks):
            _validate_task(index, task)

        def work(session: Session) -> int:
            session.add_all(
                LabelTask(
                    campaign=campaign,
                    context_ids=list(t.context_ids),
                    item_id=t.item_id,
                    kind=t.kind,
                    expected_grade=t.expected_grade,
                    model_version=t.model_version,
                    overlap=t.overlap,
                )
                for t in tasks
            )
            session.flush()
            return len(tasks)

        added = self._run(work)
        logger.info("added %d task(s) to campaign %r", added, campaign)
        return added

    def next_task(self, campaign: str, username: str) -> Optional[TaskOut]:
        """Hand ``username`` their next task of ``campaign``, or None when nothing is left for them.

        An assignment that is still open is returned again (a reload must not
        skip or duplicate work). Otherwise the task picked is one this
        annotator was never given and that still has fewer assignments than
        its ``overlap``, preferring tasks closest to completion, then the
        lowest id; the assignment is created in the same transaction.
        """
        _check_name(campaign, "campaign", InvalidTaskError)
        _check_name(username, "username", InvalidTaskError)
        return self._run(lambda s: _next_task(s, campaign, username))

    def answer_task(
        self,
        username: str,
        task_id: int,
        label: str,
        grade: Optional[int],
        request_id: str,
        model_version: Optional[str] = None,
        *,
        session_key: Optional[str] = None,
        client: str = "ui",
    ) -> FeedbackResult:
        """Store ``username``'s answer to task ``task_id`` and mark their assignment answered.

        The item, context and (when ``model_version`` is None) model version are
        taken from the task. Idempotent on ``request_id`` like
        :meth:`add_feedback`. Raises :class:`TaskNotAssignedError` when the task
        was not handed to this annotator, :class:`TaskAlreadyAnsweredError`
        when they answered it already under another request_id, and
        :class:`InvalidFeedbackError` for a bad label/grade.
        """
        _check_request_id(request_id, InvalidFeedbackError)
        _check_label_grade(label, grade)
        if not isinstance(username, str) or not username.strip():
            raise InvalidFeedbackError("username is empty; a task answer needs the annotator's username")
        if not _is_int(task_id) or task_id < 1:
            raise InvalidFeedbackError(f"task_id {task_id!r} is not a task id; send a positive integer")

        def work(session: Session) -> FeedbackResult:
            task = session.get(LabelTask, task_id)
            if task is None:
                raise TaskNotAssignedError(
                    f"task {task_id} is not assigned to {username!r}; "
                    "answer the task you were given (ask for one with next_task)"
                )
            feedback = FeedbackIn(
                request_id=request_id,
                item_id=task.item_id,
                label=label,
                context_ids=tuple(task.context_ids),
                model_version=task.model_version if model_version is None else model_version,
                session_key=session_key,
                annotator=username,
                client=client,
                grade=grade,
                task_id=task_id,
            )
            return add_feedback(session=session, feedback=feedback)

        return self._run(work)

    def annotator_progress(self, campaign: str, username: str) -> dict[str, int]:
        """``{"answered", "open", "remaining"}`` for one annotator; "remaining" = tasks still available to them.

        Counts only: nothing about other annotators' answers is revealed.
        """
        return self._run(lambda s: _annotator_progress(s, campaign, username))

    def list_campaigns(self) -> list[str]:
        """Names of every campaign that has tasks, sorted."""
        return self._run(lambda s: sorted(s.exec(select(LabelTask.campaign).distinct()).all()))

    def campaign_overview(self, campaign: str) -> dict[str, int]:
        """``{"tasks", "complete", "answers", "open"}``: a task is complete once ``overlap`` answers are in."""
        return self._run(lambda s: _campaign_overview(s, campaign))

    def my_feedback(self, username: str, limit: int = 100) -> list[FeedbackOut]:
        """``username``'s own judgements, newest first; never anyone else's."""
        if limit < 0:
            raise ValueError(f"limit is {limit}; use 0 or a positive number")

        def work(session: Session) -> list[FeedbackOut]:
            annotator = _find_annotator(session, username)
            if annotator is None:
                return []
            rows = session.exec(
                select(Feedback)
                .where(col(Feedback.annotator_id) == annotator.id)
                .order_by(col(Feedback.created_at).desc(), col(Feedback.id).desc())
                .limit(limit)
            ).all()
            return [_feedback_out(r) for r in rows]

        return self._run(work)

    # -------------------------------------------------------------- model registry

    def register_model(
        self,
        version: str,
        path: str,
        parent: Optional[str] = None,
        label_snapshot: Optional[str] = None,
        metrics: Optional[Mapping[str, Any]] = None,
        status: str = "candidate",
        *,
        by: str = "register_model",
    ) -> ModelVersionOut:
        """Add a trained model to the registry; idempotent on ``version``.

        Registering the same version again with the same details returns the
        stored entry; different details raise :class:`RegistryError` (a
        version name must always mean the same model). ``status="active"``
        activates it at once (see :meth:`activate_model`).
        """
        _check_name(version, "version", RegistryError)
        if not isinstance(path, str) or not path.strip():
            raise RegistryError("path is empty; send where the model's files are")
        _check_status(status)
        clean_metrics = _check_json(metrics or {}, "metrics")
        return self._run(
            lambda s: _register_then_decide(s, version, path, parent, label_snapshot, clean_metrics, status, by)
        )

    def set_model_status(self, version: str, status: str, by: str, note: str = "") -> ModelVersionOut:
        """Record a decision about ``version`` (e.g. "rejected"); "active" goes through :meth:`activate_model`.

        The active model cannot be moved to another status directly, because
        that would leave no active model; activate its replacement instead.
        """
        if status == "active":
            return self.activate_model(version, by, note)
        return self._run(lambda s: _set_model_status(s, version, status, by, note))

    def activate_model(self, version: str, by: str, note: str = "") -> ModelVersionOut:
        """Make ``version`` the active model and retire the previous one, atomically.

        Also the rollback path: activating an older (retired) version again
        retires the current one. Exactly one model is active afterwards; the
        UNIQUE ``active_slot`` column makes a concurrent activation fail and be
        retried here rather than produce two active models.
        """
        _check_name(by, "by (who decided)", RegistryError)
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                return self._run(lambda s: _set_model_status(s, version, "active", by, note))
            except IntegrityError:
                if attempt == attempts:
                    raise
                logger.warning("concurrent model activation while activating %r; retrying", version)
        raise AssertionError("unreachable")

    def active_model(self) -> Optional[ModelVersionOut]:
        """The active model, or None before any model was activated."""

        def work(session: Session) -> Optional[ModelVersionOut]:
            row = session.exec(select(ModelVersion).where(col(ModelVersion.status) == "active")).first()
            return None if row is None else _model_out(row)

        return self._run(work)

    def list_models(self) -> list[ModelVersionOut]:
        """All registered models, newest first (``id`` breaks ties between equal timestamps)."""
        return self._run(
            lambda s: [
                _model_out(r)
                for r in s.exec(
                    select(ModelVersion).order_by(col(ModelVersion.created_at).desc(), col(ModelVersion.id).desc())
                ).all()
            ]
        )

    def get_model(self, version: str) -> Optional[ModelVersionOut]:
        """The registry entry for ``version``, or None if it is not registered."""

        def work(session: Session) -> Optional[ModelVersionOut]:
            row = _find_model(session, version)
            return None if row is None else _model_out(row)

        return self._run(work)

    def save_snapshot(
        self,
        snapshot_id: str,
        feedback_ids: Sequence[int],
        config: Optional[Mapping[str, Any]] = None,
        n_examples: Optional[int] = None,
        n_judgements: Optional[int] = None,
    ) -> SnapshotOut:
        """Store which judgements a training run used; idempotent on ``snapshot_id``, immutable afterwards.

        ``n_judgements`` defaults to ``len(feedback_ids)``; ``n_examples``
        (distinct training examples after aggregation) defaults to it as well.
        """
        _check_name(snapshot_id, "snapshot id", RegistryError)
        ids = list(feedback_ids)
        if not all(_is_int(i) for i in ids):
            raise RegistryError("feedback_ids must all be integers (Feedback ids)")
        n_judgements = len(ids) if n_judgements is None else n_judgements
        n_examples = n_judgements if n_examples is None else n_examples
        for name, value in (("n_examples", n_examples), ("n_judgements", n_judgements)):
            if not _is_int(value) or value < 0:
                raise RegistryError(f"{name} is {value!r}; use an integer >= 0")
        clean_config = _check_json(config or {}, "config")
        return self._run(lambda s: _save_snapshot(s, snapshot_id, ids, clean_config, n_examples, n_judgements))

    def get_snapshot(self, snapshot_id: str) -> Optional[SnapshotOut]:
        """The snapshot called ``snapshot_id``, or None."""

        def work(session: Session) -> Optional[SnapshotOut]:
            row = session.get(LabelSnapshot, snapshot_id)
            return None if row is None else _snapshot_out(row)

        return self._run(work)

    # ------------------------------------------------------------------ statistics

    def judgements_frame(self, campaign: Optional[str] = None) -> "pd.DataFrame":
        """Every judgement (or those of ``campaign``'s tasks) as a DataFrame for the admin view.

        Columns are :data:`JUDGEMENT_COLUMNS`. ``expected`` is a control's known
        answer on the 0..1 scale of the answer given (``expected_grade / 3`` for
        graded answers, 0/1 for like/dislike) and NaN for everything else;
        ``grade`` and ``task_id`` are nullable integers; ``created_at`` is UTC.
        Admin-only: it names every annotator.
        """
        return self._run(lambda s: _judgements_frame(s, campaign))

    def like_rate_by_model(self) -> list[dict[str, Any]]:
        """``[{"model_version", "likes", "dislikes", "like_rate"}]`` over like/dislike feedback, by version."""
        return self._run(_like_rate_by_model)

    def label_counts(self) -> dict[str, int]:
        """Feedback rows per label (every label present, zeros included) plus ``"total"``."""
        return self._run(_label_counts)

    # -------------------------------------------------------------------- settings

    def get_setting(self, key: str) -> Optional[str]:
        """The stored value of ``key``, or None; never creates it."""
        return self._run(lambda s: (row.value if (row := s.get(Setting, key)) is not None else None))

    def get_or_create_setting(self, key: str, make_value: Callable[[], str]) -> str:
        """Return the stored value of ``key``, storing ``make_value()`` on first use (race-safe)."""
        _check_name(key, "setting key", ValueError)
        return self._run(lambda s: _get_or_create_setting(s, key, make_value))

    def export_key(self) -> bytes:
        """This database's random pseudonymisation key, created once so pseudonyms stay stable across exports."""
        return bytes.fromhex(self.get_or_create_setting(EXPORT_KEY_SETTING, lambda: secrets.token_hex(32)))

    # -------------------------------------------------------------------- privacy

    def erase_annotator(self, username: str) -> "ErasureResult":
        """Delete every judgement and task assignment of ``username`` (see :mod:`storage.erasure`)."""
        from storage.erasure import erase_annotator

        _check_name(username, "username", ValueError)
        result = self._run(lambda s: erase_annotator(session=s, username=username))
        logger.info("erased %d judgement(s) and %d assignment(s) of one annotator", result.feedback, result.assignments)
        return result
