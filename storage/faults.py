"""Name storage failures a person can act on (disk full, read-only files, server gone) in plain words.

A full or read-only disk must not look like a bug: the label was not stored, the person should be told
so and why, and everything that only reads (recommendations, explanations) keeps working.
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy.exc import DBAPIError

# Substrings of the driver messages (SQLite and PostgreSQL) for each condition.
_PROBLEMS = (
    (("database or disk is full", "no space left", "disk full", "could not extend file"),
     "the database disk is full"),
    (("readonly database", "read-only", "read only", "permission denied", "unable to open database"),
     "the database is read-only or cannot be opened for writing"),
    (("could not connect", "connection refused", "server closed the connection", "terminating connection"),
     "the database server cannot be reached"),
)


def describe_storage_error(exc: BaseException) -> Optional[str]:
    """A user-facing sentence for a known storage failure, or None for anything else (a real bug).

    Follows the exception chain: when SQLite meets a full disk inside a SAVEPOINT it rolls back the
    whole transaction, so what surfaces is "no such savepoint" from the rollback, caused by the real
    "database or disk is full" underneath.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError):
            message = str(current.orig if current.orig is not None else current).lower()
            for needles, what in _PROBLEMS:
                if any(n in message for n in needles):
                    return (f"Nothing was saved: {what}. Recommendations still work; tell the administrator, and "
                            "send the label again once it is fixed (resending the same request_id is safe).")
        current = current.__cause__ or current.__context__
    return None
