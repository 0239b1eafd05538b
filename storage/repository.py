"""Write/read API for feedback and impressions.

The module-level functions take a caller-owned ``Session`` so a web handler
can group several writes in one transaction; :class:`Repository` wraps them
for the common "one event, one transaction" case and adds retry on transient
SQLite lock errors.

Idempotency and get-or-create are race-safe by relying on the database's
UNIQUE constraints instead of locks in Python: an insert that loses a race
raises ``IntegrityError`` inside a SAVEPOINT, which is rolled back alone
(the caller's outer transaction survives) and the winner's row is re-selected.
This works across processes and hosts, which an in-process lock would not.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Optional, TypeVar

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from storage.db import init_db, make_engine
from storage.models import (
    ALLOWED_CLIENTS,
    ALLOWED_LABELS,
    REQUEST_ID_MAX_LENGTH,
    Annotator,
    Feedback,
    Impression,
    LabelSession,
)

__all__ = [
    "FeedbackIn",
    "ImpressionIn",
    "FeedbackResult",
    "InvalidFeedbackError",
    "validate_feedback",
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


@dataclass(frozen=True)
class FeedbackIn:
    """One like/dislike as received from the UI or API (not yet validated)."""

    request_id: str
    item_id: str
    label: str
    context_ids: tuple[str, ...]
    model_version: str
    session_key: Optional[str] = None
    annotator: Optional[str] = None
    client: str = "ui"


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


def validate_feedback(feedback: FeedbackIn) -> None:
    """Raise :class:`InvalidFeedbackError` if ``feedback`` must not be stored.

    Validation happens before any query so that bad input never leaves a
    half-written annotator/session row behind.
    """
    _check_request_id(feedback.request_id, InvalidFeedbackError)
    if feedback.label not in ALLOWED_LABELS:
        raise InvalidFeedbackError(
            f"label {feedback.label!r} is not allowed; use one of: {', '.join(ALLOWED_LABELS)}"
        )
    if not isinstance(feedback.item_id, str) or not feedback.item_id.strip():
        raise InvalidFeedbackError("item_id is empty; send the id of the item being labelled")
    if not all(isinstance(c, str) for c in feedback.context_ids):
        raise InvalidFeedbackError("context_ids must all be strings (item ids)")
    _check_client(feedback.client, InvalidFeedbackError)
    if feedback.session_key is not None and not feedback.session_key.strip():
        raise InvalidFeedbackError("session_key is empty; send None or a non-empty session key")
    if feedback.annotator is not None and not feedback.annotator.strip():
        raise InvalidFeedbackError("annotator is empty; send None or a non-empty username")


# ----------------------------------------------------------------- session functions


def _row_id(row: Annotator | LabelSession | Feedback) -> int:
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


def add_feedback(*, session: Session, feedback: FeedbackIn) -> FeedbackResult:
    """Store one like/dislike exactly once per ``request_id``.

    Clients resend on timeouts, so a known ``request_id`` is answered with
    ``stored=False`` and the original row id rather than an error; the same
    holds when two copies race and the UNIQUE constraint rejects the second.
    """
    validate_feedback(feedback)
    existing = _find_feedback(session, feedback.request_id)
    if existing is not None:
        return FeedbackResult(stored=False, feedback_id=_row_id(existing))

    annotator_id = None
    if feedback.annotator is not None:
        annotator_id = get_or_create_annotator(session=session, username=feedback.annotator).id
    session_id = None
    if feedback.session_key is not None:
        session_id = get_or_create_session(
            session=session,
            session_key=feedback.session_key,
            annotator_id=annotator_id,
            client=feedback.client,
        ).id

    row = Feedback(
        request_id=feedback.request_id,
        annotator_id=annotator_id,
        session_id=session_id,
        context_ids=list(feedback.context_ids),
        item_id=feedback.item_id,
        label=feedback.label,
        model_version=feedback.model_version,
    )
    stored_row, created = _insert_or_fetch(session, row, lambda: _find_feedback(session, feedback.request_id))
    if not created:
        logger.info("duplicate feedback request_id %r ignored (concurrent resend)", feedback.request_id)
    return FeedbackResult(stored=created, feedback_id=_row_id(stored_row))


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


# ------------------------------------------------------------------------ Repository


def _is_transient_lock_error(exc: OperationalError) -> bool:
    message = str(exc.orig if exc.orig is not None else exc).lower()
    return "locked" in message or "busy" in message


class Repository:
    """Engine-owning facade: one ``Session`` and one transaction per call.

    SQLite can still report "database is locked" when the busy timeout runs out
    under heavy write load; those calls are retried with exponential back-off
    and jitter (so retrying threads do not collide again in lock-step). Every
    unit of work here is idempotent or append-only, so a retry is safe.
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
        """Make the engine for ``url``, create missing tables and wrap it."""
        engine = make_engine(url)
        init_db(engine)
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
