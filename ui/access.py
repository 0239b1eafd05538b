"""Who is calling, and may they do this? One check used by every UI event and API endpoint.

Three modes:

- ``--auth-file users.csv`` (local or self-hosted): Gradio's login form checks the file
  (``username,password,role``, passwords plain or hashed); roles ``annotator`` and ``admin``.
- Hugging Face OAuth on Spaces (``hf_oauth: true``, ``--oauth-admins alice,bob``): the person
  signs in with Hugging Face, ``request.username`` is their HF name; the listed names are admins,
  everyone else who signed in is an annotator.
- neither: a local single-user tool. Everyone is the admin ``local``; say so in the UI, and never
  expose such an app to a network.

:meth:`Access.caller` is the one identity rule: every judgement (a 👍/👎 on Recommend, a Label-tab
answer, the API) is stored under the caller's username, ``local`` in open mode.
"""

from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from recsys_core.errors import RecsysError

log = logging.getLogger(__name__)
ROLES = ("annotator", "admin")
F = TypeVar("F", bound=Callable[..., Any])
_RAISE = object()  # admin_only's default: refuse by raising AccessDenied


class AccessDenied(RecsysError, PermissionError):
    """Not logged in, or not allowed: the message says which."""


@dataclass(frozen=True)
class Caller:
    username: str
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class Access:
    def __init__(self, users: dict | None = None, oauth_admins: frozenset[str] | None = None) -> None:
        self.users = users  # username -> storage.auth.User
        self.oauth_admins = oauth_admins

    @classmethod
    def from_options(cls, auth_file: Path | None, oauth_admins: str | None, *, on_space: bool = False) -> "Access":
        """``on_space``: running on Hugging Face Spaces (env ``SPACE_ID``), where open mode would make every
        visitor of a public page an admin; there sign-in is always required, and with no ``oauth_admins``
        nobody is an admin (say so in the log)."""
        if auth_file is not None:
            from storage.auth import load_users

            users = load_users(Path(auth_file))
            log.info("login required: %d user(s) from %s (%d admin)", len(users), auth_file,
                     sum(1 for u in users.values() if u.role == "admin"))
            return cls(users=users)
        admins = frozenset(n.strip() for n in (oauth_admins or "").split(",") if n.strip())
        if admins or on_space:
            if not admins:
                log.warning("on a Space without OAUTH_ADMINS: everyone who signs in is an annotator and nobody "
                            "can use the Admin tab; set the Space variable OAUTH_ADMINS to your HF username")
            return cls(oauth_admins=admins)
        return cls()

    @property
    def mode(self) -> str:
        return "password" if self.users is not None else "oauth" if self.oauth_admins is not None else "open"

    def login(self, username: str, password: str) -> bool:
        """Gradio's ``auth=`` callback (password mode)."""
        from storage.auth import authenticate

        ok = self.users is not None and authenticate(self.users, username, password) is not None
        if not ok:
            log.warning("failed login for %r", username[:64])
        return ok

    def caller(self, request) -> Caller:
        """The person behind ``request``; raises :class:`AccessDenied` when nobody is logged in."""
        if self.mode == "open":
            return Caller("local", "admin")
        username = getattr(request, "username", None) if request is not None else None
        if not username:
            raise AccessDenied("log in first: labels and admin actions need an account")
        if self.users is not None:
            user = self.users.get(username)
            if user is None:  # removed from the file since login
                raise AccessDenied(f"user {username!r} is not allowed any more")
            return Caller(username, user.role)
        return Caller(username, "admin" if username in (self.oauth_admins or ()) else "annotator")

    def admin(self, request) -> Caller:
        caller = self.caller(request)
        if not caller.is_admin:
            raise AccessDenied(f"{caller.username} is an annotator; this needs the admin role")
        return caller


def admin_only(handler: F | None = None, *, refused: Any = _RAISE) -> Any:
    """Declare a handler method admin-only: it runs only when ``self.access`` says the caller is an admin.

    The caller is the handler's ``request`` argument (a ``gr.Request``; a handler without that parameter is
    a TypeError when the class is defined). Anyone else gets :class:`AccessDenied` with :meth:`Access.admin`'s
    message, which ``ui.errors.user_errors`` (put it outside this decorator) shows as a ``gr.Error``; with
    ``refused=value`` they get ``value`` back instead, quietly (the Admin tab's job poller).

    ``functools.wraps`` keeps the handler's signature and annotations visible: Gradio reads them to inject
    ``request`` and to describe API endpoints (``inspect.signature`` follows ``__wrapped__``, and
    ``typing.get_type_hints`` resolves the copied annotations in the handler's own module). Decorated
    handlers carry ``admin_only = True``, so a test can list them.
    """

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)
        if "request" not in signature.parameters:
            raise TypeError(f"{fn.__qualname__} is @admin_only but has no 'request' parameter to say who calls")

        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            # bind (not the position): Gradio passes request positionally, tests and scripts by keyword.
            request = signature.bind(self, *args, **kwargs).arguments.get("request")
            try:
                self.access.admin(request)
            except AccessDenied:
                if refused is _RAISE:
                    raise
                return refused
            return fn(self, *args, **kwargs)

        wrapper.admin_only = True  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate(handler) if handler is not None else decorate
