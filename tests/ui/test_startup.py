"""The page before the catalog is prepared: served at once, with the progress in the header (ui/startup.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from storage import Repository
from tests.conftest import make_tiny_service
from tests.studio_app import refusal
from ui.handlers import Handlers
from ui.layout import build_demo


def _fn(demo: gr.Blocks, api_name: str):
    return next(fn for fn in demo.fns.values() if fn.api_name == api_name)


def test_the_page_is_built_without_preparing_and_its_header_follows_the_preparation(tiny_catalog,
                                                                                     tmp_path: Path) -> None:
    service = make_tiny_service(tiny_catalog, tmp_path / "f")
    handlers = Handlers(service, Repository.from_url("sqlite://"))
    demo = build_demo(handlers)
    assert service.status.stage == "waiting"  # building the page encoded nothing
    header, about, timer = _fn(demo, "ui_startup").outputs
    assert isinstance(timer, gr.Timer) and timer.active
    assert "Preparing the catalog:** waiting; 7 items" in header.value
    with service.starting():
        assert "still preparing the catalog" in refusal(
            lambda: handlers.recommend(["chess"], 3, SimpleNamespace(session_hash="s")))
        service.prepare()
        header_text, _, still = _fn(demo, "ui_startup").fn()
        assert "finishing start-up" in header_text and still.active
    header_text, about_text, stopped = _fn(demo, "ui_startup").fn()
    assert stopped.active is False  # ready: the page stops polling
    assert "**model:** `zeroshot-" in header_text and "Preparing" not in about_text


def test_a_failed_preparation_is_shown_and_polling_stops(tiny_catalog, tmp_path: Path, monkeypatch) -> None:
    service = make_tiny_service(tiny_catalog, tmp_path / "f")
    demo = build_demo(Handlers(service, Repository.from_url("sqlite://")))
    monkeypatch.setattr("recsys_core.service.extract_catalog_features",
                        lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError), service.starting():
        service.prepare()
    header_text, _, timer = _fn(demo, "ui_startup").fn()
    assert "could not be prepared:** disk full" in header_text and timer.active is False
