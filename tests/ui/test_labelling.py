"""The Label tab's handlers: keyboard wiring, skip, undo, progress, guidelines and empty states."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

from recsys_core.labels.aggregation import aggregate
from tests.studio_app import refusal, req, studio_app
from tests.ui.media_catalog import AUDIO_ITEMS
from ui import render
from ui.labelling import ALL_DONE, KEYS_JS, NO_CAMPAIGN, cut_at_word, progress_bar

PROFILE, IMAGE, CARD, ANSWER, STATE, PROGRESS, NOTE = range(7)


@pytest.fixture
def app(tiny_service, tmp_path):
    return studio_app(tiny_service, tmp_path)


def _campaign(app, name="c", scale="graded", guidelines="", per_profile=2, overlap=1) -> int:
    note = app.admin.create_campaign(name, 1, per_profile, 0, 0, overlap, scale, req("boss"), guidelines)
    return int(note.split(": ")[1].split(" ")[0])


def test_empty_states_say_what_to_do(app) -> None:
    dropdown, guidelines, progress = app.label.campaigns(req("ann1"))
    assert dropdown["choices"] == [] and guidelines == NO_CAMPAIGN and progress == ""
    assert "No campaign yet: an admin creates one in the **Admin** tab" in NO_CAMPAIGN
    _campaign(app, per_profile=1)
    view = app.label.next_task("c", req("ann1"))
    done = app.label.answer(view[STATE], 3, req("ann1"))
    assert done[CARD].startswith(ALL_DONE) and done[STATE] == {} and done[NOTE] == "Saved."
    assert "1 of 1 answered" in done[PROGRESS] and 'aria-valuenow="1"' in done[PROGRESS]


def test_guidelines_are_set_per_campaign_by_the_admin_and_shown_when_chosen(app) -> None:
    _campaign(app, "a", guidelines="**3** = you would recommend it")
    _campaign(app, "b")
    dropdown, guidelines, progress = app.label.campaigns(req("ann1"))
    assert dropdown["value"] == "a" and "**3** = you would recommend it" in guidelines
    assert "0 of 2 answered" in progress
    assert "No guidelines for this campaign" in app.label.choose("b", req("ann1"))[0]
    _campaign(app, "a")  # more tasks, no new guidelines: the old ones stay
    assert "you would recommend it" in app.label.choose("a", req("ann1"))[0]
    _campaign(app, "a", guidelines="new text")
    assert "new text" in app.label.choose("a", req("ann1"))[0]
    guidelines, progress = app.label.choose("a", req(None))  # shown before logging in; no progress
    assert "new text" in guidelines and progress == "Log in to label."
    assert "the limit is 20000" in refusal(
        lambda: app.admin.create_campaign("c", 1, 1, 0, 0, 1, "graded", req("boss"), "x" * 20_001))


def test_skip_hands_out_the_next_task_and_stores_no_answer(app) -> None:
    _campaign(app, per_profile=2)
    first = app.label.next_task("c", req("ann1"))
    after = app.label.skip(first[STATE], req("ann1"))
    assert after[STATE]["task_id"] != first[STATE]["task_id"]
    assert after[NOTE].startswith("Skipped") and "1 skipped" in after[PROGRESS]
    assert app.repository.count_feedback() == 0
    assert app.label.next_task("c", req("ann2"))[STATE]["task_id"] == first[STATE]["task_id"]  # someone else's now
    assert "is not open for 'ann1'" in refusal(lambda: app.label.skip(first[STATE], req("ann1")))  # a stale page
    assert "get a task first" in refusal(lambda: app.label.skip({}, req("ann1")))


def test_undo_reopens_the_last_answer_and_the_new_answer_supersedes_it(app) -> None:
    _campaign(app, per_profile=2)
    view = app.label.next_task("c", req("ann1"))
    first_task = view[STATE]["task_id"]
    view = app.label.answer(view[STATE], 3, req("ann1"))
    undone = app.label.undo("c", req("ann1"))
    assert undone[STATE]["task_id"] == first_task and undone[ANSWER]["value"] == 3  # starts from the old answer
    assert "You re-opened this answer" in undone[CARD] and undone[NOTE].startswith("Undone")
    assert "0 of 2 answered" in undone[PROGRESS]
    again = app.label.answer(undone[STATE], 0, req("ann1"))
    assert again[STATE]["task_id"] != first_task  # back to the task that was on screen before the undo
    frame = app.repository.judgements_frame("c")
    assert frame["grade"].tolist() == [3, 0]  # both rows kept
    assert aggregate(frame).feedback_ids == (2,)  # only the new one counts
    assert app.label.undo("c", req("ann2"))[NOTE] == "Nothing to undo: you have not answered a task here yet."


def test_binary_campaign_offers_like_dislike_with_their_keys(app) -> None:
    _campaign(app, scale="binary")
    view = app.label.next_task("c", req("ann1"))
    assert [v for _, v in view[ANSWER]["choices"]] == ["like", "dislike"]
    assert [label[0] for label, _ in view[ANSWER]["choices"]] == ["1", "2"]  # the key is on the label
    assert app.label.answer(view[STATE], "dislike", req("ann1"))[NOTE] == "Saved."
    assert app.label.api_undo("c", req("ann1"))["previous"] == "dislike"


def test_api_skip_and_undo(app) -> None:
    _campaign(app, per_profile=2)
    task = app.label.api_next("c", req("ann1"))
    assert app.label.api_skip(task["task_id"], req("ann1")) == {"outcome": "skipped"}
    assert app.label.api_undo("c", req("ann1")) == {}
    task = app.label.api_next("c", req("ann1"))
    app.label.api_answer(task["task_id"], "2", "r1", req("ann1"))
    undone = app.label.api_undo("c", req("ann1"))
    assert (undone["task_id"], undone["previous"], undone["scale"]) == (task["task_id"], "2", "graded")
    assert app.label.api_answer(task["task_id"], "1", "r2", req("ann1"))["stored"] is True


def test_keyboard_script_targets_the_tabs_elements_and_ignores_text_fields() -> None:
    for needle in ('"label-submit"', '"label-skip"', '"label-undo"', "#label-answer input[type=radio]",
                   '"1": "like", "2": "dislike"', "TEXTAREA", "offsetParent", "/^[0-3]$/"):
        assert needle in KEYS_JS


def test_keyboard_wiring_and_element_ids_are_in_the_page(app) -> None:
    from ui.layout import build_demo

    demo = build_demo(app.main, labelling=app.label, admin=app.admin)
    config = demo.get_config_file()
    ids = {c["props"].get("elem_id") for c in config["components"]}
    assert {"label-tab", "label-submit", "label-skip", "label-undo", "label-answer", "label-guidelines"} <= ids
    assert any(dep.get("js") and "studioLabelKeys" in dep["js"] for dep in config["dependencies"])
    gallery = next(c for c in config["components"] if c["props"].get("elem_id") == "label-profile")
    assert gallery["props"]["object_fit"] == "contain"


@pytest.mark.parametrize("text, limit, expected", [
    ("short text", 600, "short text"),
    ("alpha beta gamma delta", 13, "alpha beta…"),  # "gamma" would be cut: it goes whole
    ("alpha beta gamma delta", 16, "alpha beta gamma…"),  # the limit falls right after a whole word
    ("alpha beta, gamma", 11, "alpha beta…"),  # no dangling comma before the ellipsis
    ("https://example.org/a-very-long-address", 20, "https://example.org/…"),  # one long word is cut inside
])
def test_descriptions_are_cut_at_a_word(text, limit, expected) -> None:
    assert cut_at_word(text, limit) == expected


def test_progress_bar_is_answered_out_of_assigned() -> None:
    html = progress_bar("ann<1>", "c", {"answered": 3, "open": 1, "skipped": 2, "remaining": 6})
    assert 'aria-valuenow="3"' in html and 'aria-valuemax="10"' in html and "width:30.0%" in html
    assert "3 of 10 answered · 2 skipped" in html and "ann&lt;1&gt;" in html


def test_an_annotator_can_play_the_item_and_the_profile_before_judging(media_service, tmp_path) -> None:
    """On a catalog with audio and video (tests/ui/media_catalog.py): the task's item has players, and a click on a
    profile tile plays that item; players are hidden for what has nothing to play."""
    app = studio_app(media_service, tmp_path)
    app.admin.create_campaign("m", 2, 2, 0, 0, 1, "graded", req("boss"), "")
    seen = {"item player": 0, "profile player": 0}
    for _ in range(8):  # every task of the campaign (4): profiles and items drawn from the whole catalog
        view = app.label.next_task("m", req("ann1"))
        state = view[4]
        if not state:
            break
        target_audio, target_video, profile_audio, profile_video, hint = app.label.task_media(state)
        item = media_service.item(state["item_id"])
        assert target_audio.visible == (item.audio is not None) and target_video.visible == (item.video is not None)
        seen["item player"] += target_audio.visible or target_video.visible
        assert not profile_audio.visible and not profile_video.visible  # until a tile is clicked
        assert state["profile"] and all(media_service.has_item(i) for i in state["profile"])
        captions = [caption for _, caption in view[PROFILE]]  # tiles in the order of state["profile"]
        for caption, item_id in zip(captions, state["profile"]):
            assert caption.endswith(media_service.item(item_id).title)
            assert caption.startswith(render.AUDIO_MARK) == (media_service.item(item_id).audio_source is not None)
        playable = [i for i in state["profile"] if i in AUDIO_ITEMS or media_service.item(i).video is not None]
        assert bool(hint) == bool(playable)
        for index, item_id in enumerate(state["profile"]):
            audio, video, note = app.label.play_profile_item(state, SimpleNamespace(index=index))
            profile_item = media_service.item(item_id)
            assert audio.visible == (profile_item.audio is not None)
            assert video.visible == (profile_item.video is not None)
            assert render.esc(profile_item.title) in note
            seen["profile player"] += audio.visible or video.visible
        app.label.answer(state, 2, req("ann1"))
    assert all(seen.values()), seen  # the catalog is mostly media: both kinds of player were shown
    audio, video, note = app.label.play_profile_item({}, SimpleNamespace(index=3))  # no task: nothing to play
    assert not audio.visible and not video.visible and note == ""
