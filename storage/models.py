"""SQLModel tables for annotators, labelling sessions, impressions and feedback.

Only generic SQLAlchemy types are used (``String``, ``Integer``, ``Float``,
``JSON``, ``DateTime(timezone=True)``) so the same schema works on SQLite for
local runs and on PostgreSQL in deployment without dialect-specific code.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Final, Optional

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field, SQLModel

__all__ = [
    "ALLOWED_LABELS",
    "ALLOWED_CLIENTS",
    "REQUEST_ID_MAX_LENGTH",
    "Annotator",
    "LabelSession",
    "Impression",
    "Feedback",
    "utc_now",
]

#: Labels an annotator may give; anything else is rejected before it reaches the DB.
ALLOWED_LABELS: Final[tuple[str, ...]] = ("like", "dislike")
#: Where a labelling session came from: the Gradio UI or the programmatic API.
ALLOWED_CLIENTS: Final[tuple[str, ...]] = ("ui", "api")
#: Request ids are client-chosen idempotency keys; bounding them keeps the UNIQUE index small.
REQUEST_ID_MAX_LENGTH: Final[int] = 128


def utc_now() -> datetime:
    """Return an aware UTC timestamp.

    A function (not ``datetime.utcnow``) so every row gets the time of its own
    creation and the value is unambiguous across servers in different zones.
    """
    return datetime.now(timezone.utc)


def _timestamp_field() -> Any:
    # timezone=True maps to TIMESTAMPTZ on PostgreSQL; SQLite stores text either way.
    return Field(default_factory=utc_now, sa_type=DateTime(timezone=True), nullable=False)


class Annotator(SQLModel, table=True):
    """A person (or service account) who gives feedback."""

    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=128)
    role: str = Field(default="annotator", max_length=32)
    created_at: datetime = _timestamp_field()


class LabelSession(SQLModel, table=True):
    """One web (or API) session; ``session_key`` is the Gradio session hash."""

    id: Optional[int] = Field(default=None, primary_key=True)
    session_key: str = Field(unique=True, index=True, max_length=128)
    annotator_id: Optional[int] = Field(default=None, foreign_key="annotator.id", nullable=True)
    client: str = Field(default="ui", max_length=16)
    started_at: datetime = _timestamp_field()


class Impression(SQLModel, table=True):
    """An item that was shown to a user, so feedback can later be joined to exposure."""

    id: Optional[int] = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, max_length=REQUEST_ID_MAX_LENGTH)
    session_id: Optional[int] = Field(default=None, foreign_key="labelsession.id", nullable=True)
    item_id: str = Field(index=True, max_length=256)
    rank: int
    score: float
    model_version: str = Field(max_length=128)
    context_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    shown_at: datetime = _timestamp_field()


class Feedback(SQLModel, table=True):
    """A like/dislike; ``request_id`` is UNIQUE so resent requests are stored once."""

    id: Optional[int] = Field(default=None, primary_key=True)
    request_id: str = Field(unique=True, index=True, max_length=REQUEST_ID_MAX_LENGTH)
    annotator_id: Optional[int] = Field(default=None, foreign_key="annotator.id", nullable=True)
    session_id: Optional[int] = Field(default=None, foreign_key="labelsession.id", nullable=True)
    context_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    item_id: str = Field(index=True, max_length=256)
    label: str = Field(max_length=16)
    model_version: str = Field(max_length=128)
    created_at: datetime = _timestamp_field()
