"""Small helpers every aggregate module of :mod:`storage` shares (ids, race-safe inserts, checks, UTC).

Private to the package: nothing outside ``storage/`` imports from here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Optional, TypeVar

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from storage.models import (
    ALLOWED_CLIENTS,
    REQUEST_ID_MAX_LENGTH,
    Annotator,
    Feedback,
    LabelSession,
    LabelTask,
    ModelVersion,
    TaskAssignment,
)

T = TypeVar("T")


def row_id(row: Annotator | LabelSession | Feedback | LabelTask | TaskAssignment | ModelVersion) -> int:
    """Primary key of a flushed row (always set after INSERT; checked to satisfy typing)."""
    if row.id is None:
        raise RuntimeError(f"{type(row).__name__} has no id after flush")
    return row.id


def insert_or_fetch(session: Session, row: T, fetch: Callable[[], Optional[T]]) -> tuple[T, bool]:
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


def is_int(value: object) -> bool:
    # bool is an int subclass, but True as a grade is almost certainly a bug.
    return isinstance(value, int) and not isinstance(value, bool)


def check_name(value: object, what: str, error: type[ValueError], max_length: int = 128) -> str:
    if not isinstance(value, str) or not value.strip():
        raise error(f"{what} is empty; send a non-empty name")
    if len(value) > max_length:
        raise error(f"{what} is {len(value)} characters long; at most {max_length} are allowed")
    return value


def check_request_id(request_id: str, error: type[ValueError]) -> None:
    if not isinstance(request_id, str) or not request_id.strip():
        raise error("request_id is empty; send a non-empty idempotency key (e.g. a UUID)")
    if len(request_id) > REQUEST_ID_MAX_LENGTH:
        raise error(
            f"request_id is {len(request_id)} characters long; "
            f"at most {REQUEST_ID_MAX_LENGTH} are allowed"
        )


def check_client(client: str, error: type[ValueError]) -> None:
    if client not in ALLOWED_CLIENTS:
        raise error(f"client {client!r} is not allowed; use one of: {', '.join(ALLOWED_CLIENTS)}")


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes even for ``DateTime(timezone=True)``; they were stored as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def aware_opt(value: Optional[datetime]) -> Optional[datetime]:
    return None if value is None else aware(value)
