"""Annotators (people who label), their labelling sessions, and erasing one annotator.

Erasing (:func:`erase_annotator`) removes every label of one annotator (privacy request or a careless
labeller) in one transaction.

What goes: their judgements (``Feedback``), their task assignments, and their ``Annotator`` row; their
browser sessions stay (they hold impressions of what was shown, not who looked) but lose the link to
them. A fine-tune reads labels from the database when it starts, so no later fine-tune uses the
erased labels. Models trained before the erasure keep what they learned; retrain to drop it.
Label snapshots keep the ids of rows that no longer exist (history of what a past model saw).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from storage._common import check_client, insert_or_fetch
from storage.models import Annotator, Feedback, LabelSession, TaskAssignment

__all__ = [
    "ErasureResult",
    "erase_annotator",
    "find_annotator",
    "get_or_create_annotator",
    "get_or_create_session",
    "username_of",
]

logger = logging.getLogger(__name__)


def find_annotator(session: Session, username: str) -> Optional[Annotator]:
    """The annotator called ``username``, or None: the one lookup every aggregate uses."""
    return session.exec(select(Annotator).where(Annotator.username == username)).first()


def _find_session(session: Session, session_key: str) -> Optional[LabelSession]:
    return session.exec(select(LabelSession).where(LabelSession.session_key == session_key)).first()


def username_of(session: Session, annotator_id: Optional[int]) -> Optional[str]:
    if annotator_id is None:
        return None
    row = session.get(Annotator, annotator_id)
    return None if row is None else row.username


def get_or_create_annotator(*, session: Session, username: str, role: str = "annotator") -> Annotator:
    """Return the annotator called ``username``, creating it on first use."""
    existing = find_annotator(session, username)
    if existing is not None:
        return existing
    annotator, created = insert_or_fetch(
        session, Annotator(username=username, role=role), lambda: find_annotator(session, username)
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
    check_client(client, ValueError)
    existing = _find_session(session, session_key)
    if existing is None:
        existing, _created = insert_or_fetch(
            session,
            LabelSession(session_key=session_key, annotator_id=annotator_id, client=client),
            lambda: _find_session(session, session_key),
        )
    if existing.annotator_id is None and annotator_id is not None:
        existing.annotator_id = annotator_id
        session.add(existing)
        session.flush()
    return existing


# ---------------------------------------------------------------------- erasure


@dataclass(frozen=True)
class ErasureResult:
    """What :func:`erase_annotator` removed."""

    username: str
    found: bool  # False when nobody of that name ever labelled anything
    feedback: int  # judgements deleted
    assignments: int  # task assignments deleted (their tasks go back to the pool)
    sessions: int  # sessions unlinked from the person


def erase_annotator(*, session: Session, username: str) -> ErasureResult:
    """Erase every label of ``username`` (see the module docstring for what goes and what stays)."""
    annotator = find_annotator(session, username)
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
