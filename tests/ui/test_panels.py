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
    assert [type(c) for c in rec.shown[:5]] == [type(c) for c in up.shown[:5]] == [gr.Gallery, gr.Dataframe,
                                                                                    gr.BarPlot, gr.State, gr.Markdown]
    assert rec.shown[5:] == rec.explanation + rec.media + [rec.feedback_note]
    assert up.shown[5:] == up.explanation + up.media
    assert [type(c) for c in up.explanation] == [type(c) for c in rec.explanation] + [gr.AnnotatedImage]
    # the audio plot and keyframe strip; the Upload tab has its clip's two as well
    assert [type(c) for c in rec.media] == [gr.Image, gr.Gallery]
    assert [type(c) for c in up.media] == [gr.Image, gr.Gallery] * 2
    assert not any(c.visible for c in rec.media + up.media)  # until an explanation has audio or video
    for panel in (rec, up):  # players of the selected item, hidden until one with media is selected
        assert isinstance(panel.audio, gr.Audio) and isinstance(panel.video, gr.Video)
        assert not panel.audio.visible and not panel.video.visible and not panel.audio.interactive
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
    # the panel's results (4), details, explanation (6; 7 on the Upload tab), its audio plot and keyframe strip
    # (2; 4 on the Upload tab), the feedback note (Recommend tab only), the status line
    assert len(recommended) == outputs["ui_recommend"] == 15
    assert len(uploaded) == outputs["ui_upload"] == 17
    state = dict(uploaded[3], selected=uploaded[3]["results"][0])
    assert len(handlers.explain(state, "fast", progress=lambda *a, **k: None)) == 7
    explained = handlers.explain_panel(state, "fast", progress=lambda *a, **k: None)
    assert len(explained) == outputs["ui_upload_explain"] == 7 + 4
    assert outputs["ui_explain"] == outputs["ui_explain_method"] == 6 + 2
    assert outputs["ui_players"] == outputs["ui_upload_players"] == 2
    # Like/Dislike: the liked and disliked items, the catalog tiles, then what Recommend fills
    rated = handlers.like(dict(recommended[3], selected=recommended[3]["results"][0]), ["noimage", "chess"], [],
                          [], 3, 0.0, request)
    assert len(rated) == outputs["ui_like"] == outputs["ui_dislike"] == 3 + outputs["ui_recommend"]


def _cleared(value) -> bool:
    """An output value that empties its component (a plot or image with no value, no text)."""
    value = getattr(value, "value", value) if isinstance(value, gr.components.Component) else value
    return value in (None, "", [])


def test_a_new_query_clears_everything_of_the_old_one(tiny_service) -> None:
    """Details, explanation, score parts, history chart, feedback note and the selection of the previous result
    list are outputs of a new query, and the handlers' values for them clear them (issue 15, defect 5)."""
    handlers = Handlers(tiny_service, Repository.from_url("sqlite://"))
    request = SimpleNamespace(session_hash="s")
    with gr.Blocks():
        rec = results_panel(label="Recommendations", rating=True, details="pick one")
        up = results_panel(label="Similar catalog items", upload=True)
    cases = [(rec, handlers.recommend(["noimage", "chess"], 3, request)),
             (up, handlers.recommend_upload(None, "Chess Master", "board game", 3, request))]
    for panel, values in cases:
        old = [panel.details, *panel.explanation] + ([panel.feedback_note] if panel.feedback_note else [])
        assert set(map(id, old)) <= set(map(id, panel.shown)), "a new query leaves old panel parts on screen"
        shown = dict(zip(map(id, panel.shown), values))
        assert all(_cleared(shown[id(c)]) for c in panel.explanation)
        if panel.feedback_note is not None:
            assert _cleared(shown[id(panel.feedback_note)])
        assert "Select" in shown[id(panel.details)]  # the prompt, not the previous item's details
        assert shown[id(panel.state)]["selected"] is None


def test_the_upload_text_fields_say_their_shared_limit_and_do_not_cut_text(tiny_service) -> None:
    """A browser max_length cut long text silently; the limit is now said beside the fields and checked by the
    service for title + description together (issue 15, defect 8)."""
    demo = build_demo(Handlers(tiny_service, Repository.from_url("sqlite://")))
    upload = next(fn for fn in demo.fns.values() if fn.api_name == "ui_upload")
    title, description = upload.inputs[1], upload.inputs[2]
    limit = f"{tiny_service.config.limits.max_text_chars:,}"
    for box in (title, description):
        assert isinstance(box, gr.Textbox) and box.max_length is None
    said = (title.info or "") + (description.info or "")
    assert limit in said and "together" in said
