"""UI/API handlers called directly (no server): validation, storage side effects, error mapping, rendering."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from recsys_core.data.catalog import Item
from storage import Repository
from ui import render
from ui.handlers import FEEDBACK_NOTE, Handlers, _file_path


def req(session_hash: str | None = "session-1") -> SimpleNamespace:
    """Stands in for ``gr.Request``: the handlers only read ``session_hash``."""
    return SimpleNamespace(session_hash=session_hash)


def sel(index) -> SimpleNamespace:
    """Stands in for ``gr.SelectData``: the handlers only read ``index``."""
    return SimpleNamespace(index=index)


@pytest.fixture
def repo() -> Repository:
    return Repository.from_url("sqlite://")


@pytest.fixture
def handlers(tiny_service, repo) -> Handlers:
    return Handlers(tiny_service, repo)


# -- API ---------------------------------------------------------------------------------------------


def test_api_recommend_shape_and_impressions(handlers, repo) -> None:
    out = handlers.api_recommend(["chess", "cards"], 3, None)
    assert len(out) == 3
    assert all(set(row) == {"item_id", "title", "score", "rank"} for row in out)
    assert [row["rank"] for row in out] == [1, 2, 3]
    assert not {"chess", "cards"} & {row["item_id"] for row in out}
    assert all(isinstance(row["score"], float) for row in out)
    assert repo.count_impressions() == 3
    handlers.api_recommend(["chess"], 2, req("abc"))
    assert repo.count_impressions() == 5


def test_api_recommend_matches_service(handlers, tiny_service) -> None:
    out = handlers.api_recommend(["space"], 4, None)
    assert [row["item_id"] for row in out] == [r.item_id for r in tiny_service.recommend(["space"], 4)]


@pytest.mark.parametrize(
    ("liked", "k", "message"),
    [
        (["ghost", "chess", "phantom"], 3, "unknown item id(s): 'ghost', 'phantom'"),
        ([], 3, "no liked items given"),
        ("chess", 3, "liked_ids must be a list of item ids"),
        (["chess"], 0, "k is 0; allowed 1..100"),
        (["chess"], 101, "k is 101; allowed 1..100"),
    ],
)
def test_api_recommend_user_errors(handlers, repo, liked, k, message) -> None:
    with pytest.raises(gr.Error) as info:
        handlers.api_recommend(liked, k, None)
    assert message in info.value.message
    assert repo.count_impressions() == 0


def test_api_feedback_idempotent_per_request_id(handlers, repo) -> None:
    first = handlers.api_feedback(["chess"], "checkers", "like", "req-1", None)
    assert first["stored"] is True and isinstance(first["feedback_id"], int)
    again = handlers.api_feedback(["chess"], "checkers", "like", "req-1", None)
    assert again == {"stored": False, "feedback_id": first["feedback_id"]}
    assert repo.count_feedback() == 1
    other = handlers.api_feedback(["chess"], "checkers", "dislike", "req-2", req())
    assert other["stored"] is True and other["feedback_id"] != first["feedback_id"]
    assert repo.count_feedback() == 2
    rows = repo.list_feedback()
    assert sorted((f.request_id, f.item_id, f.label) for f in rows) == [
        ("req-1", "checkers", "like"), ("req-2", "checkers", "dislike"),
    ]
    assert all(f.context_ids == ["chess"] for f in rows)


def test_api_feedback_refuses_a_resent_request_id_with_another_label(handlers, repo) -> None:
    first = handlers.api_feedback(["chess"], "checkers", "like", "req-1", req())
    with pytest.raises(gr.Error) as info:
        handlers.api_feedback(["chess"], "checkers", "dislike", "req-1", req())
    assert info.value.message == ("request_id 'req-1' is already stored with a different judgement; the first "
                                  "label stands. Send a new request_id for a new label")
    assert [(f.id, f.label) for f in repo.list_feedback()] == [(first["feedback_id"], "like")]
    assert handlers.api_feedback(["chess"], "checkers", "like", "req-1", req()) == {
        "stored": False, "feedback_id": first["feedback_id"]}


@pytest.mark.parametrize(
    ("liked", "item_id", "label", "request_id", "message"),
    [
        (["chess"], "checkers", "meh", "r1", "label 'meh' is not allowed; use one of: like, dislike"),
        (["chess"], "ghost", "like", "r2", "unknown item id(s): 'ghost'"),
        (["chess", "phantom"], "checkers", "like", "r3", "unknown item id(s): 'phantom'"),
        ("chess", "checkers", "like", "r4", "liked_ids must be a list"),
        (["chess"], "checkers", "like", "", "request_id is empty"),
    ],
)
def test_api_feedback_rejects_and_stores_nothing(handlers, repo, liked, item_id, label, request_id, message) -> None:
    with pytest.raises(gr.Error) as info:
        handlers.api_feedback(liked, item_id, label, request_id, None)
    assert message in info.value.message
    assert repo.count_feedback() == 0


def test_api_recommend_upload_path_dict_bytes_and_text(handlers, repo, tiny_catalog_dir: Path) -> None:
    image = tiny_catalog_dir / "images" / "racer.png"
    out = handlers.api_recommend_upload({"path": str(image)}, "", "", 2, None)
    assert [row["rank"] for row in out] == [1, 2]
    assert out[0]["item_id"] == "racer"
    assert handlers.api_recommend_upload(str(image), None, None, 1, None)[0]["item_id"] == "racer"
    assert handlers.api_recommend_upload(SimpleNamespace(path=str(image)), "", "", 1, None)[0]["item_id"] == "racer"
    text_only = handlers.api_recommend_upload(None, "Chess Master", "board game", 3, req())
    assert len(text_only) == 3
    assert repo.count_impressions() == 2 + 1 + 1 + 3


def test_api_recommend_upload_errors(handlers, repo, tmp_path: Path) -> None:
    with pytest.raises(gr.Error) as info:
        handlers.api_recommend_upload(None, "", "", 3, None)
    assert "give an image, a title or a description" in info.value.message
    bad = tmp_path / "bad.png"
    bad.write_text("not an image", encoding="utf-8")
    with pytest.raises(gr.Error) as info:
        handlers.api_recommend_upload({"path": str(bad)}, "", "", 3, None)
    assert "image 'bad.png' could not be read as an image" in info.value.message
    assert repo.count_impressions() == 0


def test_file_path_forms() -> None:
    assert _file_path(None) is None
    assert _file_path("") is None
    assert _file_path({"path": "/x/y.png"}) == "/x/y.png"
    assert _file_path({"path": None}) is None
    assert _file_path("/a.png") == "/a.png"
    assert _file_path(SimpleNamespace(path="/b.png")) == "/b.png"


# -- UI events ---------------------------------------------------------------------------------------


def _state(outputs: tuple) -> dict:
    """The ``gr.State`` value among a UI handler's outputs (the only dict; robust to extra outputs)."""
    states = [x for x in outputs if isinstance(x, dict)]
    assert len(states) == 1
    return states[0]


def _recommend(handlers, k: int = 3) -> dict:
    # "noimage" is liked, so it is excluded and every result has an image for the gallery.
    return _state(handlers.recommend(["noimage", "chess"], k, req()))


def _rate(handlers, label: str, state, request=None, *, liked=None, disliked=None, k: int = 3) -> tuple:
    """Like/Dislike as the page sends it: the result list's state, the liked and disliked boxes, the catalog page
    shown, the two sliders."""
    liked = list((state or {}).get("liked") or []) if liked is None else liked
    rate = handlers.like if label == "like" else handlers.dislike
    return rate(state, liked, disliked or [], ["chess", "checkers"], k, 0.0, request)


def _note(outputs) -> str:
    """The feedback note among a rating's outputs (a refusal's only value when it returns one)."""
    return outputs[FEEDBACK_NOTE] if isinstance(outputs, tuple) else outputs


def test_recommend_select_like_flow(handlers, repo, tiny_service) -> None:
    outputs = handlers.recommend(["noimage", "chess"], 3, req())
    gallery, table, status = outputs[0], outputs[1], outputs[-1]
    state = _state(outputs)
    assert isinstance(gallery, gr.Gallery)
    assert state["liked"] == ["noimage", "chess"]
    assert len(state["results"]) == 3 and state["selected"] is None
    assert table["rank"].tolist() == [1, 2, 3]
    assert table["item id"].tolist() == state["results"]
    assert status.startswith("3 recommendations for 2 liked item(s)")
    assert tiny_service.model_version in status
    assert repo.count_impressions() == 3

    state, shown = handlers.select_result(state, sel(1))
    picked = state["results"][1]
    assert state["selected"] == picked
    assert f"### {tiny_service.item(picked).title}" in shown
    assert "**Rank 2**" in shown

    message = _note(_rate(handlers, "like", state, req()))
    assert message.startswith("Saved: you 👍 liked **")
    assert repo.count_feedback() == 1
    message = _note(_rate(handlers, "like", state, req()))  # the same click again (the old list's state)
    assert message.startswith("Already saved: you 👍 liked **")
    assert repo.count_feedback() == 1
    message = _note(_rate(handlers, "dislike", state, req()))
    assert message.startswith("Saved: you 👎 disliked **")
    assert repo.count_feedback() == 2
    rows = repo.list_feedback()
    assert sorted(f.label for f in rows) == ["dislike", "like"]
    assert {f.item_id for f in rows} == {picked}
    assert all(f.context_ids == ["noimage", "chess"] for f in rows)


def test_same_click_in_a_new_result_list_is_a_new_label(handlers, repo) -> None:
    state = _recommend(handlers)
    state, _ = handlers.select_result(state, sel(0))
    _rate(handlers, "like", state)
    state2 = _recommend(handlers)
    state2, _ = handlers.select_result(state2, sel(0))
    assert _note(_rate(handlers, "like", state2)).startswith("Saved:")
    assert repo.count_feedback() == 2


def test_select_result_ignores_bad_indices(handlers) -> None:
    state = _recommend(handlers)
    assert handlers.select_result(state, sel(99)) == (state, "")
    assert handlers.select_result(state, sel(None)) == (state, "")
    assert handlers.select_result(None, sel(0)) == ({}, "")
    new_state, _ = handlers.select_result(state, sel([2, 0]))  # gallery events may give [index, ...]
    assert new_state["selected"] == state["results"][2]


def test_feedback_without_selection(handlers, repo) -> None:
    state = _recommend(handlers)
    for bad_state in (state, None, {}):
        with pytest.warns(UserWarning, match="select a recommendation first, then press Like or Dislike"):
            outputs = _rate(handlers, "like", bad_state, req(), liked=["chess"])
        assert _note(outputs) == "⚠ select a recommendation first, then press Like or Dislike"  # in the feedback note
        assert all(v == gr.skip() for i, v in enumerate(outputs) if i != len(outputs) + FEEDBACK_NOTE)
    assert repo.count_feedback() == 0


def test_pick_toggles(handlers) -> None:
    shown = ["chess", "cards", "space"]
    assert handlers.pick(shown, None, sel(1)) == ["cards"]
    assert handlers.pick(shown, ["cards"], sel(0)) == ["cards", "chess"]
    assert handlers.pick(shown, ["cards", "chess"], sel(1)) == ["chess"]
    assert handlers.pick(shown, ["chess"], sel([2, 0])) == ["chess", "space"]
    assert handlers.pick(shown, ["chess"], sel(7)) == ["chess"]
    assert handlers.pick(shown, ["chess"], sel(None)) == ["chess"]


def test_recommend_results_with_an_image_less_item(handlers) -> None:
    outputs = handlers.recommend(["chess"], 6, req())
    assert "noimage" in _state(outputs)["results"] and len(outputs[1]) == 6


def test_recommend_upload_ui(handlers, repo, tiny_catalog_dir: Path) -> None:
    image = str(tiny_catalog_dir / "images" / "racer.png")
    outputs = handlers.recommend_upload(image, "", "", 1, req())
    gallery, table, status = outputs[0], outputs[1], outputs[-1]
    state = _state(outputs)
    assert isinstance(gallery, gr.Gallery)
    assert state["results"] == ["racer"] and state["selected"] is None
    assert table["item id"].tolist() == ["racer"]
    assert status == "1 catalog items similar to your upload"
    assert repo.count_impressions() == 1
    state, details = handlers.select_result(state, sel(0))
    assert state["selected"] == "racer" and "### Racer" in details


def test_unexpected_error_becomes_reference_message(handlers, repo, tiny_service, monkeypatch, caplog) -> None:
    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(tiny_service, "recommend", boom)
    with caplog.at_level(logging.ERROR, logger="ui.errors"):
        with pytest.raises(gr.Error) as info:
            handlers.api_recommend(["chess"], 3, None)
    message = info.value.message
    match = re.fullmatch(r"Something went wrong on our side \(reference ([0-9a-f]{8})\); nothing was changed\. "
                         r"Please try again\.", message)
    assert match is not None
    assert "secret internal detail" not in message
    assert f"ref {match.group(1)}" in caplog.text and "RuntimeError" in caplog.text
    with pytest.warns(UserWarning, match="reference"):  # a UI event shows it in place too
        assert "Something went wrong on our side (reference" in handlers.recommend(["chess"], 3, req())[-1]
    assert repo.count_impressions() == 0


def test_storage_failure_does_not_block_recommendations(handlers, repo, monkeypatch) -> None:
    def broken(**kwargs):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(repo, "add_impressions", broken)
    out = handlers.api_recommend(["chess"], 2, None)
    assert [row["rank"] for row in out] == [1, 2]


# -- render ------------------------------------------------------------------------------------------


def test_esc() -> None:
    assert render.esc("<script>alert('x')</script>") == "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;"
    assert render.esc('a & "b"') == "a &amp; &quot;b&quot;"


def test_item_details_escapes_item_data() -> None:
    item = Item(item_id="<i>id</i>", title="<img src=x onerror=alert(1)>", description="<b>bold</b>\nline two",
                genres=("<Genre>",), tags=("<tag>",), attribution="<a href='evil'>me</a>",
                url="javascript:alert(1)")
    html = render.item_details(item)
    assert html.startswith("### &lt;img src=x onerror=alert(1)&gt;")
    assert "<img" not in html and "<b>" not in html and "<i>" not in html and "<Genre>" not in html
    assert "&lt;b&gt;bold&lt;/b&gt;<br>line two" in html
    assert "&lt;a href=&#x27;evil&#x27;&gt;me&lt;/a&gt;" in html
    assert "javascript:" not in html  # only http(s) links are rendered
    assert "<code>&lt;i&gt;id&lt;/i&gt;</code>" in html


def test_item_details_link_and_long_description() -> None:
    item = Item(item_id="x", title="X", description="word " * 200, url="https://example.org/?a=1&b=2")
    html = render.item_details(item)
    assert '<a href="https://example.org/?a=1&amp;b=2" target="_blank" rel="noopener">home page</a>' in html
    paragraph = html.split("\n\n")[1]
    assert paragraph.endswith(" …") and len(paragraph) <= render.DESCRIPTION_CHARS + 2


def test_results_table_and_gallery(tiny_service) -> None:
    recs = tiny_service.recommend(["noimage", "chess"], 2)
    table = render.results_table(recs)
    assert [row[0] for row in table] == [1, 2]
    assert table[0][1] == recs[0].title and table[0][-1] == recs[0].item_id
    assert table[0][2] == round(recs[0].score, 4)
    gallery = render.results_gallery(recs)
    assert gallery[0] == (str(recs[0].image), f"1 · {render.num(recs[0].score)} · {recs[0].title}")


# -- explanation panel -------------------------------------------------------------------------------


def _explain(handlers, state: dict) -> tuple:
    return handlers.explain(state, "fast", progress=lambda *a, **k: None)


def _bars(frame, x: str, y: str) -> dict[str, float]:
    """What a stacked, sign-coloured bar chart draws: the sum of ``y`` per ``x`` label."""
    return {label: round(float(v), 4) for label, v in frame.groupby(x, sort=False)[y].sum().items()}


def test_history_chart_shows_each_selections_own_contributions(handlers, tiny_service) -> None:
    """Defect 1: select #1, then #3, then #2; each chart is that item's own ``/explain`` history.

    The chart's update must be its value alone: returning a new ``y_lim`` with the value made Gradio's
    NativePlot rebuild the Vega spec from the previous rows (new axis, old bars).
    """
    import pandas as pd

    state = _recommend(handlers, k=3)
    seen = []
    for index in (0, 2, 1):
        state, _ = handlers.select_result(state, sel(index))
        history = _explain(handlers, state)[3]
        assert isinstance(history, pd.DataFrame), "a value-only update (no y_lim or other chart props)"
        expected = tiny_service.explain(state["liked"], state["selected"], "fast").history
        titles = [tiny_service.item(h.item_id).title for h in expected]
        assert _bars(history, "liked item", "contribution") == {
            t: round(h.contribution, 4) for t, h in zip(titles, expected)}
        seen.append(tuple(_bars(history, "liked item", "contribution").values()))
    assert len(set(seen)) == 3  # three items, three different charts


# -- user mistakes in UI events: a message in place, the panel keeps working, one log line (defect 7) ---


def _one_warning_line(caplog) -> logging.LogRecord:
    records = [r for r in caplog.records if r.name.startswith("ui")]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert records[0].exc_info is None and "Traceback" not in caplog.text
    return records[0]


def test_a_text_file_named_png_shows_its_message_and_keeps_the_upload_panel(handlers, repo, tmp_path, caplog) -> None:
    bad = tmp_path / "notes.png"
    bad.write_text("just some text renamed to .png\n", encoding="utf-8")
    with caplog.at_level(logging.INFO), pytest.warns(UserWarning, match="could not be read as an image"):
        outputs = handlers.recommend_upload(str(bad), "", "", 3, req())  # no exception reaches Gradio
    *panel, status = outputs
    assert all(value == gr.skip() for value in panel)  # the panel keeps what it showed, no "Error" badges
    assert status.startswith("⚠ image 'notes.png' could not be read as an image")
    assert "could not be read as an image" in _one_warning_line(caplog).getMessage()
    assert repo.count_impressions() == 0


def test_gradio_hands_a_broken_upload_to_the_handler_instead_of_failing_before_it(tiny_service, tmp_path) -> None:
    """gr.Image(type="filepath") opens the file with PIL before the handler runs; a text file renamed .png
    failed there, with Gradio's bare "Error" badge and a traceback in the log."""
    from gradio.data_classes import ImageData

    from ui.layout import build_demo

    bad = tmp_path / "notes.png"
    bad.write_text("not an image", encoding="utf-8")
    demo = build_demo(Handlers(tiny_service, Repository.from_url("sqlite://")))
    image = next(fn for fn in demo.fns.values() if fn.api_name == "ui_upload").inputs[0]
    assert image.preprocess(ImageData(path=str(bad), orig_name="notes.png")) == str(bad)
    assert image.preprocess(None) is None
    drawn = next(c for c in demo.get_config_file()["components"] if c["id"] == image._id)
    assert drawn["type"] == "image" and drawn["props"]["label"] == "Image (optional)"  # drawn as gr.Image is


def test_ui_mistakes_are_shown_in_place_not_raised(handlers, caplog) -> None:
    state = _recommend(handlers)
    with caplog.at_level(logging.INFO), pytest.warns(UserWarning, match="select a recommendation first"):
        note = _note(_rate(handlers, "like", state, req()))
    assert "select a recommendation first, then press Like or Dislike" in note
    _one_warning_line(caplog)
    with pytest.warns(UserWarning, match="no liked items given"):
        outputs = handlers.recommend([], 3, req())
    assert "no liked items given" in outputs[-1] and all(v == gr.skip() for v in outputs[:-1])
    with pytest.warns(UserWarning, match="select a recommendation first"):
        assert handlers.explain({}, "thorough", progress=lambda *a, **k: None) == gr.skip()


def test_api_mistakes_still_raise_with_their_message_and_log_one_line(handlers, caplog) -> None:
    with caplog.at_level(logging.INFO), pytest.raises(gr.Error) as info:
        handlers.api_recommend(["ghost"], 3, None)
    assert "unknown item id(s): 'ghost'" in info.value.message
    assert info.value.print_exception is False  # Gradio prints no traceback for it
    _one_warning_line(caplog)
