"""The studio's handlers wired as ``app.py`` wires them, with accounts, on the tiny service (no server)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import warnings
from typing import Any, Callable

import gradio as gr

from storage import Repository
from studio.jobs import FinetuneJobs
from studio.registry import ModelManager
from ui.access import Access
from ui.admin import AdminHandlers
from ui.handlers import Handlers
from ui.labelling import LabellingHandlers
from ui.rate_limit import LabelRateLimit

USERS = "username,password,role\nann1,a,annotator\nann2,b,annotator\nann3,c,annotator\nboss,d,admin\n"


def req(username: str | None) -> SimpleNamespace:
    """What Gradio hands a handler as ``request`` for a logged-in ``username`` (None: nobody logged in)."""
    return SimpleNamespace(username=username, session_hash=f"s-{username}")


def studio_app(service, tmp_path: Path, *, rate_limit: int = 0, accounts: bool = True) -> SimpleNamespace:
    """``accounts=False``: open mode (no --auth-file), where everyone is the local admin."""
    users = tmp_path / "users.csv"
    users.write_text(USERS)
    access = Access.from_options(users if accounts else None, None)
    repository = Repository.from_url(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    manager = ModelManager(service, repository)
    manager.sync_at_startup()
    jobs = FinetuneJobs(manager=manager, database_url="sqlite://", data_dir=tmp_path, catalog_args=[])
    limit = LabelRateLimit(rate_limit)
    return SimpleNamespace(
        main=Handlers(service, repository, access, limit),
        label=LabellingHandlers(service, repository, access, limit),
        admin=AdminHandlers(service, repository, access, manager, jobs, tmp_path / "exports"),
        repository=repository, service=service, access=access)


def refusal(call: Callable[[], Any]) -> str:
    """The message a refused call shows: an API endpoint raises it as ``gr.Error``; a UI event returns and shows
    it as a ``gr.Warning`` (a Python warning outside a running app). Empty if nothing was refused."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            call()
        except gr.Error as exc:
            return exc.message
    return " ".join(str(w.message) for w in caught if issubclass(w.category, UserWarning))
