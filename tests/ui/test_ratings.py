"""Likes and dislikes at serving time on the Recommend tab: a rating is stored as before (the label source) and
the rated item joins the liked or disliked items, and the list is made again for that profile at once."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from storage import Repository
from tests.hybrid_checkpoint import save_hybrid_checkpoint
from tests.studio_app import refusal, studio_app
from ui import render
from ui.handlers import FEEDBACK_NOTE, RATE_OUTPUTS, Handlers

PAGE = ["chess", "checkers", "cards"]  # the catalog tiles on screen (their liked marks are redrawn)


def req(session_hash: str = "session-1", username: str | None = None) -> SimpleNamespace:
    return SimpleNamespace(session_hash=session_hash, username=username)


@pytest.fixture
def repo() -> Repository:
    return Repository.from_url("sqlite://")


@pytest.fixture
def handlers(tiny_service, repo) -> Handlers:
    return Handlers(tiny_service, repo)


@pytest.fixture
def hybrid(tiny_service, tmp_path):
    """The tiny service serving a small hybrid checkpoint (tests/hybrid_checkpoint.py): collaborative part on."""
    tiny_service.load_model(save_hybrid_checkpoint(tiny_service, tmp_path / "hybrid"))
    assert tiny_service.active_model.mix["collaborative"] > 0
    return tiny_service


def _state(outputs) -> dict:
    states = [x for x in outputs if isinstance(x, dict)]
    assert len(states) == 1
    return states[0]


def _shown(handlers, liked, disliked=(), k: int = 5) -> dict:
    """The result list's state after Recommend for these boxes."""
    return _state(handlers.recommend(list(liked), k, req(), 0.0, list(disliked)))


def _rate(handlers, label: str, state: dict, liked, disliked=(), k: int = 5, request=None) -> tuple:
    rate = handlers.like if label == "like" else handlers.dislike
    return rate(state, list(liked), list(disliked), PAGE, k, 0.0, request or req())


def _select(handlers, state: dict, item_id: str) -> dict:
    state, _ = handlers.select_result(state, SimpleNamespace(index=state["results"].index(item_id)))
    return state


def _scores(state: dict) -> dict[str, float]:
    return {item: rec.score for item, rec in state["recs"].items()}


@pytest.mark.parametrize("model", ["zeroshot", "hybrid"])
def test_a_like_joins_the_profile_and_the_very_next_list_is_made_for_it(handlers, repo, request, model) -> None:
    if model == "hybrid":
        request.getfixturevalue("hybrid")
    before = _shown(handlers, ["chess"])
    top = before["results"][0]
    outputs = _rate(handlers, "like", _select(handlers, before, top), ["chess"])

    assert len(outputs) == RATE_OUTPUTS
    liked, disliked, tiles = outputs[0], outputs[1], outputs[2]
    assert liked == ["chess", top] and disliked == []  # shown in "Items you like"
    after = _state(outputs)
    assert after["liked"] == ["chess", top] and top not in after["results"]
    assert after["results"] != before["results"] and after["request_id"] != before["request_id"]
    assert after["selected"] is None  # a new list: nothing of the old one stays selected
    # the catalog page is redrawn with the liked marks of the new profile
    expected = render.catalog_gallery([handlers.service.item(i) for i in PAGE], liked)
    assert [t["caption"] for t in tiles.value] == [caption for _, caption in expected]
    assert "2 liked item(s)" in outputs[-1]
    note = outputs[FEEDBACK_NOTE]
    assert note.startswith("Saved: you 👍 liked **") and "joined *Items you like*" in note
    # The judgement is stored exactly as before: one label, with the profile the rated list was made for.
    (label,) = repo.list_feedback()
    assert (label.item_id, label.label, label.context_ids) == (top, "like", ["chess"])
    # ... and the list is what Recommend gives for the new profile.
    assert after["results"] == [r.item_id for r in handlers.service.recommend(["chess", top], 5)]


def test_a_dislike_joins_the_dislikes_keeps_the_item_out_and_lowers_its_look_alikes(handlers, repo, hybrid) -> None:
    before = _shown(handlers, ["chess"])
    top = before["results"][0]
    outputs = _rate(handlers, "dislike", _select(handlers, before, top), ["chess"])

    liked, disliked = outputs[0], outputs[1]
    assert liked == ["chess"] and disliked == [top]  # shown in "Items you dislike", removable there
    after = _state(outputs)
    assert after["disliked"] == [top] and top not in after["results"]
    neighbour = next(r.item_id for r in hybrid.similar(top, 6) if r.item_id in after["results"])
    assert _scores(after)[neighbour] < _scores(before)[neighbour]
    assert "1 disliked item(s) kept out" in outputs[-1]
    assert "is in *Items you dislike*" in outputs[FEEDBACK_NOTE]
    (label,) = repo.list_feedback()
    assert (label.item_id, label.label, label.context_ids) == (top, "dislike", ["chess"])
    # Recommend keeps the dislike (the box is one of its inputs) until it is removed there.
    again = _shown(handlers, liked, disliked)
    assert again["results"] == after["results"]
    assert top in _shown(handlers, liked, [])["results"]


def test_a_like_takes_the_item_out_of_the_dislikes_and_a_dislike_out_of_the_likes(handlers) -> None:
    state = _shown(handlers, ["chess"], k=6)
    item = state["results"][0]
    # The item somehow sits in both lists' way: the rating decides, the other list lets it go.
    liked_out = _rate(handlers, "like", _select(handlers, state, item), ["chess"], [item, "puzzle"])
    assert liked_out[0] == ["chess", item] and liked_out[1] == ["puzzle"]
    disliked_out = _rate(handlers, "dislike", _select(handlers, state, item), ["chess", item])
    assert disliked_out[0] == ["chess"] and disliked_out[1] == [item]


def test_the_boxes_never_hold_one_item_twice(handlers) -> None:
    # A tile click that likes a disliked item takes it out of the dislikes ...
    liked, disliked, _ = handlers.pick_and_mark(PAGE, ["chess"], ["cards", "racer"], SimpleNamespace(index=2))
    assert liked == ["chess", "cards"] and disliked == ["racer"]
    # ... so does typing it into the liked box, and typing a liked item into the dislikes takes it out of the likes.
    tiles, disliked = handlers.liked_edited(PAGE, ["chess", "racer"], ["racer", "puzzle"])
    assert disliked == ["puzzle"] and isinstance(tiles, gr.Gallery)
    liked, tiles = handlers.disliked_edited(PAGE, ["chess", "puzzle"], ["chess", "cards"])
    assert liked == ["cards"]
    assert render.LIKED_MARK + "Chess Master" not in [t["caption"] for t in tiles.value]
    # Should both boxes still name an item, Recommend lets the like win instead of refusing the request.
    state = _shown(handlers, ["chess", "cards"], ["cards", "racer"])
    assert state["liked"] == ["chess", "cards"] and state["disliked"] == ["racer"]


def test_a_refused_label_changes_nothing(tiny_service, tmp_path) -> None:
    """With accounts, an anonymous Like is refused as before, and then neither the boxes nor the list change."""
    app = studio_app(tiny_service, tmp_path)
    state = _state(app.main.recommend(["chess"], 3, req(username="ann1")))
    state = _select(app.main, state, state["results"][0])
    anonymous = req(username=None)
    message = refusal(lambda: app.main.like(state, ["chess"], [], PAGE, 3, 0.0, anonymous))
    assert "log in first" in message
    with pytest.warns(UserWarning):
        outputs = app.main.like(state, ["chess"], [], PAGE, 3, 0.0, anonymous)
    assert all(v == gr.skip() for i, v in enumerate(outputs) if i != RATE_OUTPUTS + FEEDBACK_NOTE)
    assert "log in first" in outputs[FEEDBACK_NOTE]
    assert app.repository.count_feedback() == 0
    outputs = app.main.like(state, ["chess"], [], PAGE, 3, 0.0, req(username="ann1"))
    assert outputs[0] == ["chess", state["selected"]] and app.repository.count_feedback() == 1


def test_a_stored_label_whose_new_list_is_refused_says_both(handlers, repo) -> None:
    """The label is the product: it stays stored when the list cannot be made again, and the note says why."""
    state = _select(handlers, _shown(handlers, ["chess"]), _shown(handlers, ["chess"])["results"][0])
    with pytest.warns(UserWarning):
        outputs = _rate(handlers, "like", state, ["chess", "ghost"])  # the liked box names an unknown item
    assert repo.count_feedback() == 1
    note = outputs[FEEDBACK_NOTE]
    assert note.startswith("Saved: you 👍 liked") and "The list was not made again" in note and "ghost" in note
    assert outputs[0] == gr.skip() and outputs[1] == gr.skip()


def test_the_explanation_of_a_list_with_dislikes_names_them(handlers, hybrid) -> None:
    liked, disliked = ["chess", "checkers"], ["space"]
    state = _shown(handlers, liked, disliked)
    item = state["results"][0]
    *_, table, summary = handlers.explain(_select(handlers, state, item), "fast", progress=lambda *a, **k: None)
    expected = hybrid.explain(liked, item, "fast", disliked)
    assert [h.item_id for h in expected.history] == liked + disliked
    assert table["item"].tolist()[:3] == ["Chess Master", "Checkers", "Space Shooter" + render.DISLIKED_MARK]
    space = next(h for h in expected.history if h.disliked)
    assert table["contribution"].tolist()[2] == pytest.approx(space.contribution, abs=5e-4)
    assert "Your dislikes moved it by: **Space Shooter**" in summary
