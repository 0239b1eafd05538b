"""Crowd-labelling campaigns: tasks, handing them out (:func:`next_task`), skips, undos, progress and overview.

Storing an *answer* is storing a judgement, so it lives with the judgements in
:mod:`storage.feedback`, which calls :func:`find_assignment` and :func:`mark_answered` here;
this module never imports :mod:`storage.feedback` (one direction, no cycle).
Nothing here returns other annotators' answers, a task's kind or its expected
answer to an annotator, so controls stay blind.

Skip (:func:`skip_task`): the task is given back unanswered. The assignment row stays, stamped
``skipped_at``, so the same annotator is never served it again (a small campaign would otherwise
hand the task they cannot judge straight back), while it stops holding one of the task's
``overlap`` slots, so another annotator gets it. Skips are counted per annotator
(:func:`annotator_progress`), which tells an admin whose tasks are hard to judge.

Undo (:func:`undo_last_answer`): nothing is deleted or overwritten. The annotator's latest answer
in the campaign is re-opened (its assignment is "assigned" again and still names that answer in
``feedback_id``), the task is handed back to them first, and their next answer is a new
feedback row that supersedes it: the assignment then names the new row, and the label
aggregation and agreement keep an annotator's latest judgement of a unit (the highest feedback
id), while the exports keep both rows as history. Until they answer again the earlier answer
stands; skipping a re-opened task keeps it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from sqlalchemy import case, exists, func, update
from sqlmodel import Session, col, select

from storage._common import aware, check_name, insert_or_fetch, is_int, row_id
from storage.annotators import find_annotator, get_or_create_annotator
from storage.models import GRADE_MAX, GRADE_MIN, TASK_KINDS, Feedback, LabelTask, TaskAssignment, utc_now

__all__ = [
    "TaskIn",
    "TaskOut",
    "InvalidTaskError",
    "check_tasks",
    "add_tasks",
    "find_assignment",
    "mark_answered",
    "next_task",
    "skip_task",
    "undo_last_answer",
    "annotator_progress",
    "list_campaigns",
    "campaign_overview",
]

logger = logging.getLogger(__name__)


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
    """What an annotator is shown for a task: deliberately without kind or expected answer.

    ``previous`` is set on a task the annotator re-opened with an undo: their own earlier answer as
    (label, grade), which their next answer supersedes; never anyone else's.
    """

    task_id: int
    campaign: str
    item_id: str
    context_ids: tuple[str, ...]
    assigned_at: datetime
    previous: Optional[tuple[str, Optional[int]]] = None


class InvalidTaskError(ValueError):
    """A task (or campaign name) rejected before anything was stored."""


def _validate_task(index: int, task: TaskIn) -> None:
    where = f"tasks[{index}]"  # position in the list given to add_tasks, counted from 0
    if not isinstance(task.item_id, str) or not task.item_id.strip():
        raise InvalidTaskError(f"{where}: item_id is empty; send the id of the item to be judged")
    if isinstance(task.context_ids, str) or not all(isinstance(c, str) for c in task.context_ids):
        raise InvalidTaskError(f"{where}: context_ids must be a sequence of item ids (strings)")
    check_name(task.model_version, f"{where}: model_version", InvalidTaskError)
    if task.kind not in TASK_KINDS:
        raise InvalidTaskError(f"{where}: kind {task.kind!r} is not allowed; use one of: {', '.join(TASK_KINDS)}")
    if task.kind == "control":
        grade = task.expected_grade
        if grade is None or not is_int(grade) or not GRADE_MIN <= grade <= GRADE_MAX:
            raise InvalidTaskError(
                f"{where}: a control needs expected_grade in {GRADE_MIN}..{GRADE_MAX} "
                f"(0/1 for like/dislike campaigns); got {task.expected_grade!r}"
            )
    elif task.expected_grade is not None:
        raise InvalidTaskError(
            f"{where}: expected_grade is only for controls; kind {task.kind!r} must have expected_grade=None"
        )
    if not is_int(task.overlap) or task.overlap < 1:
        raise InvalidTaskError(
            f"{where}: overlap is {task.overlap!r}; use an integer >= 1 (distinct annotators per task)"
        )


def _task_out(session: Session, task: LabelTask, assignment: TaskAssignment) -> TaskOut:
    previous = None
    if assignment.status == "assigned" and assignment.feedback_id is not None:  # re-opened by an undo
        earlier = session.get(Feedback, assignment.feedback_id)
        if earlier is not None:
            previous = (earlier.label, earlier.grade)
    return TaskOut(
        task_id=row_id(task),
        campaign=task.campaign,
        item_id=task.item_id,
        context_ids=tuple(task.context_ids),
        assigned_at=aware(assignment.assigned_at),
        previous=previous,
    )


def _holds_slot():  # type: ignore[no-untyped-def]
    """An assignment holds one of its task's ``overlap`` slots unless it was skipped."""
    return col(TaskAssignment.skipped_at).is_(None)


def _n_assigned():  # type: ignore[no-untyped-def]
    """Correlated subquery: how many annotators hold a slot of a task (skips give theirs back)."""
    return (
        select(func.count())
        .select_from(TaskAssignment)
        .where(col(TaskAssignment.task_id) == col(LabelTask.id), _holds_slot())
        .correlate(LabelTask)
        .scalar_subquery()
    )


def _available_tasks_stmt(campaign: str, annotator_id: Optional[int]):  # type: ignore[no-untyped-def]
    """Tasks of ``campaign`` with a free slot that were never handed to ``annotator_id`` (nor skipped by them).

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


def find_assignment(session: Session, task_id: int, annotator_id: int) -> Optional[TaskAssignment]:
    """The assignment of task ``task_id`` to annotator ``annotator_id``, or None."""
    return session.exec(
        select(TaskAssignment).where(TaskAssignment.task_id == task_id, TaskAssignment.annotator_id == annotator_id)
    ).first()


def mark_answered(session: Session, assignment_id: int, feedback_id: int) -> bool:
    """Flip an assignment from "assigned" to "answered" by ``feedback_id``; False when it was not open any more.

    A conditional UPDATE (``status='assigned'``, not skipped), so two concurrent answers from the
    same annotator cannot both succeed even on PostgreSQL, where writers are not
    serialised as they are on SQLite, and a skipped task (whose slot another annotator may
    hold by now) cannot be answered. On a re-opened assignment ``feedback_id`` moves from the
    superseded answer to the new one.
    """
    flipped = session.execute(
        update(TaskAssignment)
        .where(col(TaskAssignment.id) == assignment_id, col(TaskAssignment.status) == "assigned", _holds_slot())
        .values(status="answered", feedback_id=feedback_id, answered_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    return flipped.rowcount == 1


def check_tasks(campaign: str, tasks: Sequence[TaskIn]) -> list[TaskIn]:
    """Validate ``campaign`` and every task before anything is stored; returns the tasks as a list."""
    check_name(campaign, "campaign", InvalidTaskError)
    tasks = list(tasks)
    for index, task in enumerate(tasks):
        _validate_task(index, task)
    return tasks


def add_tasks(*, session: Session, campaign: str, tasks: Sequence[TaskIn]) -> int:
    """See :meth:`storage.repository.Repository.add_tasks` (``tasks`` already passed :func:`check_tasks`)."""
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


def next_task(*, session: Session, campaign: str, username: str, batch: int = 16) -> Optional[TaskOut]:
    """See :meth:`storage.repository.Repository.next_task`; ``batch`` candidates are read per query."""
    annotator = get_or_create_annotator(session=session, username=username)
    annotator_id = row_id(annotator)
    own_open = session.exec(
        select(TaskAssignment, LabelTask)
        .join(LabelTask, col(LabelTask.id) == col(TaskAssignment.task_id))
        .where(
            col(TaskAssignment.annotator_id) == annotator_id,
            col(TaskAssignment.status) == "assigned",
            _holds_slot(),
            col(LabelTask.campaign) == campaign,
        )
        # Re-opened answers first. Each undo goes one answer further back, so the one re-opened
        # last is the one with the lowest feedback id: repeated undos unwind like a stack.
        .order_by(col(TaskAssignment.feedback_id).is_(None), col(TaskAssignment.feedback_id),
                  col(TaskAssignment.id))
    ).first()
    if own_open is not None:
        assignment, task = own_open
        return _task_out(session, task, assignment)

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
                select(func.count()).select_from(TaskAssignment)
                .where(col(TaskAssignment.task_id) == task_id, _holds_slot())
            ).one()
            if int(taken) >= task.overlap:
                continue
            assignment, created = insert_or_fetch(
                session,
                TaskAssignment(task_id=task_id, annotator_id=annotator_id),
                lambda: find_assignment(session, task_id, annotator_id),
            )
            if not created and (assignment.status != "assigned" or assignment.skipped_at is not None):
                continue  # the same annotator took and answered (or skipped) it concurrently; look further
            logger.info("task %d of campaign %r assigned to %r", task_id, campaign, username)
            return _task_out(session, task, assignment)


def _own_assignment(session: Session, task_id: int, username: str) -> Optional[TaskAssignment]:
    annotator = find_annotator(session, username)
    return None if annotator is None else find_assignment(session, task_id, row_id(annotator))


def skip_task(*, session: Session, task_id: int, username: str) -> str:
    """See :meth:`storage.repository.Repository.skip_task`: "skipped", or "kept" for a re-opened task."""
    assignment = _own_assignment(session, task_id, username)
    if assignment is None or assignment.status != "assigned" or assignment.skipped_at is not None:
        raise InvalidTaskError(
            f"task {task_id} is not open for {username!r}; only the task you were given and have not "
            "answered or skipped can be skipped"
        )
    if assignment.feedback_id is not None:
        # A re-opened answer: skipping means "leave it as it was", so the earlier answer stands again.
        kept = session.execute(
            update(TaskAssignment)
            .where(col(TaskAssignment.id) == assignment.id, col(TaskAssignment.status) == "assigned")
            .values(status="answered")
            .execution_options(synchronize_session=False)
        )
        if kept.rowcount != 1:
            raise InvalidTaskError(f"task {task_id} was answered meanwhile; nothing was skipped")
        logger.info("re-opened task %d kept its earlier answer by %r", task_id, username)
        return "kept"
    skipped = session.execute(
        update(TaskAssignment)
        .where(col(TaskAssignment.id) == assignment.id, col(TaskAssignment.status) == "assigned", _holds_slot())
        .values(skipped_at=utc_now())
        .execution_options(synchronize_session=False)
    )
    if skipped.rowcount != 1:
        raise InvalidTaskError(f"task {task_id} was answered meanwhile; nothing was skipped")
    logger.info("task %d skipped by %r", task_id, username)
    return "skipped"


def undo_last_answer(*, session: Session, campaign: str, username: str) -> Optional[TaskOut]:
    """See :meth:`storage.repository.Repository.undo_last_answer`."""
    annotator = find_annotator(session, username)
    if annotator is None:
        return None
    latest = session.exec(
        select(TaskAssignment, LabelTask)
        .join(LabelTask, col(LabelTask.id) == col(TaskAssignment.task_id))
        .where(
            col(TaskAssignment.annotator_id) == row_id(annotator),
            col(TaskAssignment.status) == "answered",
            col(LabelTask.campaign) == campaign,
        )
        .order_by(col(TaskAssignment.feedback_id).desc())  # ids only grow: the highest is the latest answer
    ).first()
    if latest is None:
        return None
    assignment, task = latest
    reopened = session.execute(
        update(TaskAssignment)
        .where(col(TaskAssignment.id) == assignment.id, col(TaskAssignment.status) == "answered")
        .values(status="assigned")
        .execution_options(synchronize_session=False)
    )
    if reopened.rowcount == 1:  # else a concurrent undo of the same answer won: hand out what it re-opened
        logger.info("answer %s to task %d re-opened by %r", assignment.feedback_id, row_id(task), username)
    session.expire(assignment)
    return _task_out(session, task, assignment)


def annotator_progress(*, session: Session, campaign: str, username: str) -> dict[str, int]:
    """See :meth:`storage.repository.Repository.annotator_progress`."""
    annotator = find_annotator(session, username)
    annotator_id = None if annotator is None else annotator.id
    counts = {"answered": 0, "open": 0, "skipped": 0}
    if annotator_id is not None:
        skipped = col(TaskAssignment.skipped_at).is_not(None)
        rows = session.exec(
            select(col(TaskAssignment.status), skipped, func.count())
            .join(LabelTask, col(LabelTask.id) == col(TaskAssignment.task_id))
            .where(col(TaskAssignment.annotator_id) == annotator_id, col(LabelTask.campaign) == campaign)
            .group_by(col(TaskAssignment.status), skipped)
        ).all()
        for status, was_skipped, n in rows:
            key = "skipped" if was_skipped else "answered" if status == "answered" else "open"
            counts[key] += int(n)
    available = _available_tasks_stmt(campaign, annotator_id).order_by(None).subquery()
    remaining = int(session.exec(select(func.count()).select_from(available)).one())
    return {**counts, "remaining": remaining}


def campaign_overview(*, session: Session, campaign: str) -> dict[str, int]:
    """See :meth:`storage.repository.Repository.campaign_overview`."""
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
        .where(col(LabelTask.campaign) == campaign, _holds_slot())  # a skipped task is not open
        .group_by(col(TaskAssignment.status))
    ).all()
    by_status = {status: int(n) for status, n in rows}
    return {
        "tasks": int(tasks),
        "complete": int(complete),
        "answers": by_status.get("answered", 0),
        "open": by_status.get("assigned", 0),
    }


def list_campaigns(*, session: Session) -> list[str]:
    """Names of every campaign that has tasks, sorted."""
    return sorted(session.exec(select(LabelTask.campaign).distinct()).all())
