"""Turn exceptions into messages a user can act on; never show a stack trace."""

from __future__ import annotations

import functools
import logging
import uuid
from typing import Any, Callable, TypeVar

import gradio as gr

from recsys_core.errors import RecsysError
from storage import InvalidFeedbackError
from storage.faults import describe_storage_error

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

# Errors whose message is written for the user: shown as they are.
USER_ERRORS: tuple[type[BaseException], ...] = (RecsysError, InvalidFeedbackError)


def user_errors(fn: F) -> F:
    """Show domain errors as ``gr.Error(message)``; log anything else with a reference id."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as exc:
            raise gr.Error(str(exc)) from None
        except Exception as exc:
            storage_problem = describe_storage_error(exc)
            if storage_problem is not None:  # full or read-only disk: the person can act on it
                log.error("storage failure in %s: %s", fn.__name__, getattr(exc, "orig", exc))
                raise gr.Error(storage_problem) from None
            ref = uuid.uuid4().hex[:8]
            log.exception("unexpected error in %s (ref %s)", fn.__name__, ref)
            raise gr.Error(f"Something went wrong on our side (reference {ref}); nothing was changed. "
                           "Please try again.") from None

    return wrapper  # type: ignore[return-value]
