"""Turn exceptions into messages a user can act on; never show a stack trace.

Two decorators, one rule for what is logged: a user's mistake is one WARNING line, a storage failure
one ERROR line, and only an unexpected error (a bug) a traceback, under a reference id the user sees.

* :func:`user_errors` for API endpoints (and the GPU functions): the message travels as ``gr.Error``,
  which a ``gradio_client`` caller receives as the exception's text.
* :func:`ui_event` for UI events: nothing is raised to Gradio (which would turn every output of the
  event into a red "Error" badge); the message is a ``gr.Warning`` toast and, where the event has one,
  an inline note, and every other output keeps what it showed (``gr.skip()``).
"""

from __future__ import annotations

import functools
import html
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
# A toast is a reminder; the inline note keeps the message. Short, so an old one does not sit beside a later success.
WARNING_SECONDS = 6


def _shown(message: str) -> gr.Error:
    # print_exception=False: Gradio would print a traceback for every refused input otherwise.
    return gr.Error(message, print_exception=False)


def user_errors(fn: F) -> F:
    """Show domain errors as ``gr.Error(message)``; log anything else with a reference id."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error as exc:
            if exc.print_exception:  # raised as gr.Error by other code: log it once, as a line
                log.warning("%s refused: %s", fn.__name__, exc.message)
                exc.print_exception = False
            raise
        except USER_ERRORS as exc:
            log.warning("%s refused: %s", fn.__name__, exc)
            raise _shown(str(exc)) from None
        except Exception as exc:
            storage_problem = describe_storage_error(exc)
            if storage_problem is not None:  # full or read-only disk: the person can act on it
                log.error("storage failure in %s: %s", fn.__name__, getattr(exc, "orig", exc))
                raise _shown(storage_problem) from None
            ref = uuid.uuid4().hex[:8]
            log.exception("unexpected error in %s (ref %s)", fn.__name__, ref)
            raise _shown(f"Something went wrong on our side (reference {ref}); nothing was changed. "
                         "Please try again.") from None

    return wrapper  # type: ignore[return-value]


def note_text(message: str) -> str:
    """An inline note (Markdown) for a message the user should act on."""
    # Markup is escaped (a message may quote what the user typed); quotes are harmless in Markdown text.
    return f"⚠ {html.escape(message, quote=False)}"


def ui_event(outputs: int = 1, note: int | None = None) -> Callable[[F], F]:
    """Declare a UI event handler: any problem becomes a toast and, when ``note`` is the index of an inline
    note among the event's ``outputs`` values, that note; every other output is left as it was.

    Messages are :func:`user_errors`' (logged there: one line for a mistake, a traceback only for a bug).
    """
    if note is not None and not -outputs <= note < outputs:
        raise ValueError(f"note is {note}; an index into {outputs} outputs")

    def decorate(fn: F) -> F:
        checked = user_errors(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return checked(*args, **kwargs)
            except gr.Error as exc:
                gr.Warning(exc.message, duration=WARNING_SECONDS)
                if note is None:
                    return gr.skip()  # one skip() leaves every output of the event as it is
                values = [gr.skip()] * outputs
                values[note] = note_text(exc.message)
                return values[0] if outputs == 1 else tuple(values)

        return wrapper  # type: ignore[return-value]

    return decorate
