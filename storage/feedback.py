"""Judgements (like/dislike/graded feedback, task answers included) and impressions: validation and writes.

Idempotent on ``request_id``: a resend of the same judgement is answered with
``stored=False`` and the original id (the same id with another label is refused);
the insert race is decided by the UNIQUE constraint inside a SAVEPOINT
(:func:`storage._common.insert_or_fetch`), not by a lock in Python.
A task answer is a judgement, so it is stored here; the task side (is it
assigned, mark it answered) comes from :mod:`storage.tasks`. Reading judgements
back is :mod:`storage.views`' job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

from sqlmodel import Session, select

from storage._common import check_client, check_request_id, insert_or_fetch, is_int, row_id
from storage.annotators import find_annotator, get_or_create_annotator, get_or_create_session, username_of
from storage.models import FEEDBACK_LABELS, GRADE_MAX, GRADE_MIN, GRADED_LABEL, Feedback, Impression, LabelTask
from storage.tasks import find_assignment, mark_answered
from storage.views import is_anonymous

__all__ = [
    "FeedbackIn",
    "ImpressionIn",
    "FeedbackResult",
    "InvalidFeedbackError",
    "RequestIdConflictError",
    "TaskNotAssignedError",
    "TaskAlreadyAnsweredError",
    "validate_feedback",
    "add_impressions",
    "add_feedback",
    "check_answer",
    "answer_task",
]

logger = logging.getLogger(__name__)


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


class InvalidFeedbackError(ValueError):
    """Feedback rejected before touching the database; the message says what to fix."""


class RequestIdConflictError(InvalidFeedbackError):
    """A ``request_id`` that is already stored for another annotator, another task or another judgement.

    Raised instead of answering ``stored=False`` because that answer would tell
    the second annotator "your label is saved" when it is not, and would hand
    them the id of someone else's judgement. The message names neither.
    """


class TaskNotAssignedError(InvalidFeedbackError):
    """An annotator tried to answer a task that was never handed to them."""


class TaskAlreadyAnsweredError(InvalidFeedbackError):
    """An annotator tried to answer the same task a second time with a new request_id."""


def _check_label_grade(label: str, grade: Optional[int]) -> None:
    if label not in FEEDBACK_LABELS:
        raise InvalidFeedbackError(
            f"label {label!r} is not allowed; use one of: {', '.join(FEEDBACK_LABELS)}"
        )
    if label == GRADED_LABEL:
        if grade is None or not is_int(grade) or not GRADE_MIN <= grade <= GRADE_MAX:
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
    check_request_id(feedback.request_id, InvalidFeedbackError)
    _check_label_grade(feedback.label, feedback.grade)
    if not isinstance(feedback.item_id, str) or not feedback.item_id.strip():
        raise InvalidFeedbackError("item_id is empty; send the id of the item being labelled")
    if not all(isinstance(c, str) for c in feedback.context_ids):
        raise InvalidFeedbackError("context_ids must all be strings (item ids)")
    check_client(feedback.client, InvalidFeedbackError)
    if feedback.session_key is not None and not feedback.session_key.strip():
        raise InvalidFeedbackError("session_key is empty; send None or a non-empty session key")
    if feedback.annotator is not None and not feedback.annotator.strip():
        raise InvalidFeedbackError("annotator is empty; send None or a non-empty username")
    if feedback.annotator is not None and is_anonymous(feedback.annotator):
        # Reserved: judgements_frame names judgements without an annotator this way (storage.views).
        raise InvalidFeedbackError(
            f"annotator {feedback.annotator!r} is reserved for judgements without an annotator; "
            "send None or another username"
        )
    if feedback.task_id is not None:
        if not is_int(feedback.task_id) or feedback.task_id < 1:
            raise InvalidFeedbackError(
                f"task_id {feedback.task_id!r} is not a task id; send None or a positive integer"
            )
        if feedback.annotator is None:
            raise InvalidFeedbackError("a task answer needs the annotator's username; send annotator=...")


def _find_feedback(session: Session, request_id: str) -> Optional[Feedback]:
    return session.exec(select(Feedback).where(Feedback.request_id == request_id)).first()


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
    check_request_id(request_id, ValueError)
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


def _resend_result(session: Session, existing: Feedback, feedback: FeedbackIn) -> FeedbackResult:
    """Answer a request_id that is already stored.

    A resend of the same judgement by the same annotator (or an anonymous
    resend, as before graded labels existed) gets ``stored=False`` and the
    original id. A resend that names a different annotator, or a different
    task, is refused: it is not a resend but a reused key, and answering it
    would misreport the label as saved and expose another annotator's row id.
    So is a resend with a different label, grade, item or context: answering
    ``stored=False`` would let the client believe its new label was kept while
    the first one stands.
    """
    if feedback.annotator is not None and username_of(session, existing.annotator_id) != feedback.annotator:
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
    if (existing.label, existing.grade, existing.item_id, list(existing.context_ids)) != (
        feedback.label, feedback.grade, feedback.item_id, list(feedback.context_ids)
    ):
        raise RequestIdConflictError(
            f"request_id {feedback.request_id!r} is already stored with a different judgement; the first label "
            "stands. Send a new request_id for a new label"
        )
    return FeedbackResult(stored=False, feedback_id=row_id(existing))


def _session_id_for(session: Session, feedback: FeedbackIn, annotator_id: Optional[int]) -> Optional[int]:
    if feedback.session_key is None:
        return None
    return get_or_create_session(
        session=session,
        session_key=feedback.session_key,
        annotator_id=annotator_id,
        client=feedback.client,
    ).id


def _add_task_answer(session: Session, feedback: FeedbackIn) -> FeedbackResult:
    """Store the answer to a labelling task and mark the annotator's assignment answered.

    Refuses answers to tasks that were not handed to this annotator (so nobody
    can pick tasks, or answer for others) and second answers to the same task.
    The assignment is flipped with :func:`storage.tasks.mark_answered` (a conditional
    UPDATE), so two concurrent answers from the same annotator cannot both succeed.
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
    annotator = find_annotator(session, feedback.annotator)
    if task is None or annotator is None:
        raise not_assigned
    assignment = find_assignment(session, row_id(task), row_id(annotator))
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
    stored_row, created = insert_or_fetch(session, row, lambda: _find_feedback(session, feedback.request_id))
    if not created:
        return _resend_result(session, stored_row, feedback)
    if not mark_answered(session, row_id(assignment), row_id(stored_row)):
        # a concurrent answer won; the caller's transaction is rolled back
        raise TaskAlreadyAnsweredError(
            f"task {feedback.task_id} was already answered by {feedback.annotator!r}; "
            "each annotator answers a task once (to resend, reuse the original request_id)"
        )
    session.expire(assignment)
    return FeedbackResult(stored=True, feedback_id=row_id(stored_row))


def add_feedback(*, session: Session, feedback: FeedbackIn) -> FeedbackResult:
    """Store one judgement exactly once per ``request_id``.

    Clients resend on timeouts, so a known ``request_id`` is answered with
    ``stored=False`` and the original row id rather than an error; the same
    holds when two copies race and the UNIQUE constraint rejects the second.
    A "resend" that names a different annotator than the stored row, or a
    different label, grade, item or context, raises
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
    stored_row, created = insert_or_fetch(session, row, lambda: _find_feedback(session, feedback.request_id))
    if not created:
        logger.info("duplicate feedback request_id %r ignored (concurrent resend)", feedback.request_id)
        return _resend_result(session, stored_row, feedback)
    return FeedbackResult(stored=True, feedback_id=row_id(stored_row))


def check_answer(username: str, task_id: int, label: str, grade: Optional[int], request_id: str) -> None:
    """The checks :meth:`storage.repository.Repository.answer_task` makes before opening a transaction."""
    check_request_id(request_id, InvalidFeedbackError)
    _check_label_grade(label, grade)
    if not isinstance(username, str) or not username.strip():
        raise InvalidFeedbackError("username is empty; a task answer needs the annotator's username")
    if not is_int(task_id) or task_id < 1:
        raise InvalidFeedbackError(f"task_id {task_id!r} is not a task id; send a positive integer")


def answer_task(
    *,
    session: Session,
    username: str,
    task_id: int,
    label: str,
    grade: Optional[int],
    request_id: str,
    model_version: Optional[str] = None,
    session_key: Optional[str] = None,
    client: str = "ui",
) -> FeedbackResult:
    """See :meth:`storage.repository.Repository.answer_task` (arguments already passed :func:`check_answer`)."""
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
