"""Typed errors raised across the ``recsys_core`` boundary.

The UI maps every subclass of :class:`RecsysError` to a user-facing message; anything else is a bug
and is logged, never shown to the user.
"""

from __future__ import annotations


class RecsysError(Exception):
    """Base class: the message is written for the person who made the request."""


class InvalidInputError(RecsysError, ValueError):
    """The request itself is malformed (bad ``k``, unreadable image, text too long...)."""


class UnknownItemError(RecsysError, KeyError):
    """One or more item ids are not in the catalog."""

    def __init__(self, item_ids: list[str] | tuple[str, ...]) -> None:
        self.item_ids = tuple(item_ids)
        shown = ", ".join(repr(i) for i in self.item_ids[:5])
        more = f" (and {len(self.item_ids) - 5} more)" if len(self.item_ids) > 5 else ""
        super().__init__(f"unknown item id(s): {shown}{more}; use ids from the catalog")

    def __str__(self) -> str:  # KeyError would otherwise wrap the message in quotes
        return self.args[0]


class EmptyProfileError(RecsysError, ValueError):
    """A recommendation was asked for without any liked item."""

    def __init__(self) -> None:
        super().__init__("no liked items given: pick at least one item you like first")


class CatalogError(RecsysError, ValueError):
    """A catalog folder cannot be served at all (as opposed to single bad rows, which are skipped)."""


class NotReadyError(RecsysError):
    """A request came while the service was still preparing the catalog (start-up): retry in a few seconds."""
