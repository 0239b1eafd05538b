"""Erase every label of one annotator (privacy request or a careless labeller), in one transaction.

What goes: their judgements (``Feedback``), their task assignments, and their ``Annotator`` row; their
browser sessions stay (they hold impressions of what was shown, not who looked) but lose the link to
them. A fine-tune reads labels from the database when it starts, so no later fine-tune uses the
erased labels. Models trained before the erasure keep what they learned; retrain to drop it.
Label snapshots keep the ids of rows that no longer exist (history of what a past model saw).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import delete, update
from sqlmodel import Session, col

from storage.models import Feedback, LabelSession, TaskAssignment
from storage.repository import _find_annotator

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ErasureResult:
    username: str
    found: bool  # False when nobody of that name ever labelled anything
    feedback: int  # judgements deleted
    assignments: int  # task assignments deleted (their tasks go back to the pool)
    sessions: int  # sessions unlinked from the person


def erase_annotator(*, session: Session, username: str) -> ErasureResult:
    annotator = _find_annotator(session, username)
    if annotator is None:
        return ErasureResult(username, False, 0, 0, 0)
    who = annotator.id
    # Assignments point at feedback rows: delete them first so no foreign key dangles.
    assignments = session.exec(delete(TaskAssignment).where(col(TaskAssignment.annotator_id) == who)).rowcount  # type: ignore[call-overload]
    feedback = session.exec(delete(Feedback).where(col(Feedback.annotator_id) == who)).rowcount  # type: ignore[call-overload]
    sessions = session.exec(  # type: ignore[call-overload]
        update(LabelSession).where(col(LabelSession.annotator_id) == who).values(annotator_id=None)).rowcount
    session.delete(annotator)
    return ErasureResult(username, True, int(feedback or 0), int(assignments or 0), int(sessions or 0))
