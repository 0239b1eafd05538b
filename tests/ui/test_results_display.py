"""The results block as people read it: short captions with the score, the item's images and credits,
a note when diversity re-orders the list, and rating buttons that need no emoji font."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pytest

from recsys_core.data.catalog import Item
from storage import Repository
from ui import render
from ui.handlers import Handlers
from ui.layout import build_demo


@pytest.fixture
def handlers(tiny_service) -> Handlers:
    return Handlers(tiny_service, Repository.from_url("sqlite://"))


def test_result_captions_put_rank_and_score_before_the_title(tiny_service) -> None:
    recs = tiny_service.recommend(["chess"], 3)
    captions = [caption for _, caption in render.results_gallery(recs)]
    assert captions == [f"{r.rank} · {render.num(r.score)} · {r.title}" for r in recs]


def test_item_images_are_the_icon_then_the_screenshots(tmp_path: Path) -> None:
    shots = (tmp_path / "a.png", tmp_path / "b.png")
    item = Item("x", "X", image=tmp_path / "icon.png", extra_images=shots)
    assert render.item_images(item) == [(str(tmp_path / "icon.png"), "icon"), (str(shots[0]), "screenshot 1"),
                                        (str(shots[1]), "screenshot 2")]
    assert render.item_images(Item("y", "Y")) == []


def test_details_give_licence_and_attribution_and_readable_genres() -> None:
    item = Item("x", "X", genres=("2DGraphics", "BoardGame"), license="GPL-3+", attribution="by someone",
                extra_images=(Path("s.png"),))
    text = render.item_details(item)
    assert "Licence: GPL-3+" in text and "by someone" in text and "1 screenshot(s)" in text
    assert "**Genres:** 2D graphics, Board game" in text


def test_the_image_strip_follows_the_selected_result(handlers) -> None:
    strip = handlers.item_images({"selected": "chess"})
    assert strip.visible is True and [tile["caption"] for tile in strip.value] == ["icon"]
    assert handlers.item_images({"selected": "noimage"}).visible is False  # no image: nothing to show
    assert handlers.item_images({"selected": None}).visible is False  # a new list: cleared
    assert handlers.item_images(None).visible is False


def test_diversity_that_reorders_says_so_above_the_results(handlers, tiny_service, monkeypatch) -> None:
    request = SimpleNamespace(session_hash="s")
    plain = handlers.recommend(["chess"], 5, request)
    assert "re-ordered" not in plain[-1]
    recs = tiny_service.recommend(["chess"], 5, diversity=1.0)
    assert render.reordered(recs), "the tiny catalog's look-alikes should move at diversity 1"
    status = handlers.recommend(["chess"], 5, request, 1.0)[-1]
    assert "Diversity re-ordered this list" in status and "no longer sorted by score" in status
    table = render.results_table(recs)
    moved = next(r for r in recs if r.score_rank != r.rank)
    row = table[moved.rank - 1]
    headers = render.results_headers(recs)
    assert row[headers.index("rank by score")] == moved.score_rank
    assert row[headers.index("diversity gain")] == round(moved.diversity_gain, 3)
    details = render.item_details(tiny_service.item(moved.item_id), moved)
    assert f"rank {moved.score_rank} by score alone" in details and "diversity gain" in details
    assert render.results_table(tiny_service.recommend(["chess"], 2))[0][-3:-1] == ["", ""]  # no MMR: empty


def test_panels_have_no_emoji_and_an_image_strip(handlers) -> None:
    demo = build_demo(handlers)
    labels = [b.value for b in demo.blocks.values() if isinstance(b, gr.Button)]
    assert "\u2713 Like" in labels and "\u2717 Dislike" in labels
    assert not any(ch in str(label) for label in labels for ch in "👍👎")
    strips = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery) and b.label == "Images of this item"]
    assert len(strips) == 2  # Recommend and Upload tabs
    results = [b for b in demo.blocks.values() if isinstance(b, gr.Gallery) and "results-gallery" in (b.elem_classes or [])]
    assert len(results) == 2 and all(g.columns == 4 and g.fit_columns is False for g in results)
    names = {fn.api_name for fn in demo.fns.values()}
    assert {"ui_images", "ui_upload_images"} <= names
