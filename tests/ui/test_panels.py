"""ui.panels: one results block for the Recommend and Upload tabs, and the handlers' outputs fit it."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr

from storage import Repository
from ui.handlers import Handlers
from ui.layout import build_demo
from ui.panels import results_panel


def test_the_two_tabs_get_the_same_block_but_for_rating_and_the_upload_heatmap() -> None:
    with gr.Blocks():
        rec = results_panel(label="Recommendations", elem_id="results-gallery", rating=True, details="pick one")
        up = results_panel(label="Similar catalog items", upload=True)
    assert rec.events == "ui" and up.events == "ui_upload"
    assert [type(c) for c in rec.shown] == [type(c) for c in up.shown] == [gr.Gallery, gr.Dataframe, gr.BarPlot,
                                                                            gr.State]
    assert [type(c) for c in up.explanation] == [type(c) for c in rec.explanation] + [gr.AnnotatedImage]
    assert rec.like is not None and rec.dislike is not None and up.like is None and up.feedback_note is None
    assert rec.gallery.elem_id == "results-gallery" and up.gallery.elem_id is None
    assert rec.details.value == "pick one" and up.details.value is None


def test_the_handlers_fill_the_panel_outputs_the_layout_wires(tiny_service) -> None:
    handlers = Handlers(tiny_service, Repository.from_url("sqlite://"))
    request = SimpleNamespace(session_hash="s")
    demo = build_demo(handlers)
    outputs = {fn.api_name: len(fn.outputs) for fn in demo.fns.values() if fn.api_name}
    recommended = handlers.recommend(["noimage", "chess"], 3, request)
    uploaded = handlers.recommend_upload(None, "Chess Master", "board game", 3, request)
    assert len(recommended) == outputs["ui_recommend"] == 6  # the panel's 4, its details, the status line
    assert len(uploaded) == outputs["ui_upload"] == 5  # the panel's 4, the status line
    state = dict(uploaded[3], selected=uploaded[3]["results"][0])
    explained = handlers.explain(state, "fast", progress=lambda *a, **k: None)
    assert len(explained) == outputs["ui_upload_explain"] == 6
    assert outputs["ui_explain"] == outputs["ui_explain_method"] == 5
