"""The Recommend tab's catalog picker: search, genre names, pages that follow the clicks, liked marks."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pytest

import ui.handlers
from storage import Repository
from ui.handlers import CATALOG_PAGE, Handlers
from ui.layout import build_demo

TITLE_ORDER = ["cards", "checkers", "chess", "puzzle", "racer", "space", "noimage"]  # search("") order


def sel(index) -> SimpleNamespace:
    return SimpleNamespace(index=index)


@pytest.fixture
def handlers(tiny_service) -> Handlers:
    return Handlers(tiny_service, Repository.from_url("sqlite://"))


def test_search_filters_by_genre(handlers) -> None:
    gallery, ids, note, view, prev, next_ = handlers.browse("", "BoardGame", [])
    assert isinstance(gallery, gr.Gallery) and gallery.selected_index is None
    assert ids == ["checkers", "chess"] and view == {"ids": ["checkers", "chess"], "page": 0}
    assert note == "2 item(s) match"
    assert prev.interactive is False and next_.interactive is False  # one page: nowhere to go
    assert handlers.browse("arcade", "ActionGame", [])[1:3] == (["space"], "1 item(s) match")
    assert handlers.browse("nothing matches this", None, [])[1:3] == ([], "0 item(s) match")
    assert handlers.browse("chess", "All genres", None)[1] == ["chess"]
    with pytest.warns(UserWarning, match="search text is 10,001 characters"):  # shown in place, nothing raised
        gallery, ids, note, *_ = handlers.browse("x" * 10_001, None, [])
    assert gallery == ids == gr.skip() and "search text is 10,001 characters" in note


def test_search_shows_items_without_image(handlers) -> None:
    _, ids, note, *_ = handlers.browse("", "All genres", [])
    assert ids == TITLE_ORDER
    assert note == "7 item(s)"


def test_pages_reach_every_item_and_clicks_pick_from_the_page_shown(handlers, monkeypatch) -> None:
    monkeypatch.setattr(ui.handlers, "CATALOG_PAGE", 3)
    _, shown, note, view, prev, next_ = handlers.browse("", None, [])
    assert shown == TITLE_ORDER[:3] and note == "7 item(s) · page 1 of 3 (items 1–3)"
    assert prev.interactive is False and next_.interactive is True
    seen = list(shown)
    for page in (2, 3):
        _, shown, note, view, prev, next_ = handlers.turn_page(view, +1, [])
        seen += shown
        assert f"page {page} of 3" in note and prev.interactive is True
    assert seen == TITLE_ORDER and shown == ["noimage"] and next_.interactive is False
    assert note == "7 item(s) · page 3 of 3 (items 7–7)"
    assert handlers.turn_page(view, +1, [])[1] == ["noimage"]  # past the end stays on the last page
    # A click on the last page's first tile picks the last page's item, not the first page's.
    assert handlers.pick(shown, ["chess"], sel(0)) == ["chess", "noimage"]
    _, shown, _, view, *_ = handlers.turn_page(view, -1, [])
    assert shown == TITLE_ORDER[3:6] and view["page"] == 1
    assert handlers.turn_page(None, -1, [])[1] == handlers.service.catalog.ids[:3]  # no view yet: page 1


def test_a_new_search_starts_at_its_first_page(handlers, monkeypatch) -> None:
    monkeypatch.setattr(ui.handlers, "CATALOG_PAGE", 2)
    _, _, _, view, *_ = handlers.turn_page(handlers.browse("", None, [])[3], +1, [])
    assert view["page"] == 1
    assert handlers.browse("game", "StrategyGame", [])[3] == {"ids": ["noimage", "chess"], "page": 0}


def test_liked_items_are_marked_on_the_tiles(handlers) -> None:
    gallery, shown, note, *_ = handlers.browse("", "BoardGame", ["chess"])
    assert [tile["caption"] for tile in gallery.value] == ["Checkers", "\u2713 Chess Master"]
    marked = handlers.mark_liked(shown, ["checkers"])
    assert [tile["caption"] for tile in marked.value] == ["\u2713 Checkers", "Chess Master"]
    # An id no longer in the catalog (a model swap with another catalog) is left out, not an error.
    assert [tile["caption"] for tile in handlers.mark_liked(["gone", "chess"], []).value] == ["Chess Master"]


def test_genre_dropdown_shows_names_and_sends_ids(handlers) -> None:
    demo = build_demo(handlers)
    dropdown = next(b for b in demo.blocks.values() if isinstance(b, gr.Dropdown) and b.label == "Genre")
    assert ("Board game", "BoardGame") in dropdown.choices and ("All genres", "All genres") in dropdown.choices
    gallery = next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "catalog-gallery")
    assert gallery.fit_columns is False and gallery.object_fit == "contain" and gallery.allow_preview is False
    buttons = {b.value for b in demo.blocks.values() if isinstance(b, gr.Button)}
    assert {"Search", "\u2190 Previous page", "Next page \u2192"} <= buttons
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"ui_search", "ui_page_prev", "ui_page_next", "ui_pick", "ui_mark_liked"} <= names


def test_the_page_size_fits_the_demo_catalog_in_a_few_pages() -> None:
    assert 189 / CATALOG_PAGE <= 4  # the demo's items in at most 4 pages of tiles
