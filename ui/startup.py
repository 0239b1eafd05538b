"""What the page shows while the app prepares the catalog after launch (see ``app.main``).

The page is served at once; until the service is ready the header says how far preparation is, a
``gr.Timer`` refreshes it every second and stops itself once the studio is ready. Requests made
meanwhile get the service's own "still preparing" message (a ``NotReadyError``, shown as ``gr.Error``).
"""

from __future__ import annotations

from typing import Any, Callable

import gradio as gr

from ui import render

POLL_S = 1.0  # how often a page waiting for the catalog asks again; the answer is a string, so this is cheap


def preparing_note(service: Any) -> str:
    """The header line while the catalog is prepared (or could not be)."""
    status = service.status
    if status.stage == "failed":
        return f"**The catalog could not be prepared:** {render.esc(status.error or '')}. See the server log."
    return (f"**Preparing the catalog:** {render.esc(status.describe())}. You can already search and pick items; "
            "Recommend and Upload work as soon as it is ready.")


def waiting(service: Any) -> bool:
    """True while the page should keep polling: not ready, and not failed (the app stops then)."""
    return not service.ready and service.status.stage != "failed"


def poller(service: Any, *texts: Callable[[], str]) -> tuple[gr.Timer, Callable[[], tuple]]:
    """A timer (created in the open layout) and its tick handler: ``texts`` re-rendered, then the timer
    switched off once the studio is ready. Wire it as ``timer.tick(tick, None, [*outputs, timer])``."""
    timer = gr.Timer(POLL_S, active=waiting(service))

    def tick() -> tuple:
        return (*(text() for text in texts), gr.Timer(active=waiting(service)))

    return timer, tick
