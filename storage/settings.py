"""Small key/value settings kept in the database (e.g. the export pseudonym key)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Optional

from sqlmodel import Session

from storage._common import insert_or_fetch
from storage.models import Setting

__all__ = ["EXPORT_KEY_SETTING", "get_setting", "get_or_create_setting", "set_setting"]

logger = logging.getLogger(__name__)

#: Key of the :class:`~storage.models.Setting` row that holds the export pseudonym key.
EXPORT_KEY_SETTING = "export.pseudonym_key"


def get_or_create_setting(*, session: Session, key: str, make_value: Callable[[], str]) -> str:
    """The stored value of ``key``, storing ``make_value()`` on first use (race-safe)."""
    existing = session.get(Setting, key)
    if existing is not None:
        return existing.value
    row, created = insert_or_fetch(session, Setting(key=key, value=make_value()), lambda: session.get(Setting, key))
    if created:
        logger.info("setting %r created", key)  # never the value: it may be a secret
    return row.value


def get_setting(*, session: Session, key: str) -> Optional[str]:
    """The stored value of ``key``, or None; never creates it."""
    row = session.get(Setting, key)
    return None if row is None else row.value


def set_setting(*, session: Session, key: str, value: str) -> None:
    """Store ``value`` under ``key``, replacing an earlier value (last writer wins)."""
    row, created = insert_or_fetch(session, Setting(key=key, value=value), lambda: session.get(Setting, key))
    if not created:
        row.value = value
        session.add(row)
