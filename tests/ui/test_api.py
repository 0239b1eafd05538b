"""The script-facing endpoints a client needs besides /recommend: /search, /item, /similar, /explain_upload."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import pytest

from storage import Repository
from ui.handlers import Handlers


@pytest.fixture
def handlers(tiny_service) -> Handlers:
    return Handlers(tiny_service, Repository.from_url("sqlite://"))


def test_search_finds_by_words_and_genre(handlers) -> None:
    assert [r["item_id"] for r in handlers.api_search("board game")] == ["checkers", "chess"]
    assert handlers.api_search("board", "StrategyGame") == [
        {"item_id": "chess", "title": "Chess Master", "genres": ["BoardGame", "StrategyGame"]}]
    assert len(handlers.api_search("", "", 3)) == 3
    assert len(handlers.api_search()) == 7  # "" = the whole catalog, up to the default limit


@pytest.mark.parametrize("query, genre, limit, message", [
    ("", "NoSuchGenre", 5, "unknown genre 'NoSuchGenre'; the catalog's genres are: "),
    ("", "", 0, "limit is 0; give a whole number of 1 or more"),
    ("x" * 10_001, "", 5, "search text is 10,001 characters; the limit is 10,000"),
])
def test_search_refuses_bad_input_with_its_reason(handlers, query, genre, limit, message) -> None:
    with pytest.raises(gr.Error) as info:
        handlers.api_search(query, genre, limit)
    assert message in info.value.message


def test_item_gives_metadata_without_server_paths(handlers, tiny_catalog_dir: Path) -> None:
    item = handlers.api_item("chess")
    assert item == {"item_id": "chess", "title": "Chess Master", "description": "board game chess strategy",
                    "genres": ["BoardGame", "StrategyGame"], "tags": [], "has_image": True, "screenshots": 0,
                    "license": "CC0-1.0", "attribution": "test fixture", "url": "", "has_audio": False,
                    "has_video": False, "collection": ""}
    assert str(tiny_catalog_dir) not in str(item)
    assert handlers.api_item("noimage")["has_image"] is False
    with pytest.raises(gr.Error) as info:
        handlers.api_item("nope")
    assert "nope" in info.value.message


def test_similar_is_the_one_item_profile_without_the_item(handlers, tiny_service) -> None:
    out = handlers.api_similar("chess", 3)
    assert [r["item_id"] for r in out] == [r.item_id for r in tiny_service.recommend(["chess"], 3)]
    assert "chess" not in {r["item_id"] for r in out} and [r["rank"] for r in out] == [1, 2, 3]
    assert handlers.repository.count_impressions() == 3
    with pytest.raises(gr.Error):
        handlers.api_similar("chess", 0)


def test_explain_upload_explains_the_match_and_maps_the_upload(handlers, tiny_catalog_dir: Path) -> None:
    image = str(tiny_catalog_dir / "images" / "racer.png")
    out = handlers.api_explain_upload({"path": image}, "Racer", "arcade racing", "racer", "fast")
    assert out["item_id"] == "racer" and out["method"] == "fast"
    assert out["tokens"] and out["image_heatmap"] and out["query_heatmap"]
    assert len(out["query_heatmap"]) == len(out["image_heatmap"])
    assert out["history"] == []  # an upload has no liked items
    with pytest.raises(gr.Error) as info:
        handlers.api_explain_upload(None, "", "", "racer", "fast")
    assert "give an image, a title or a description" in info.value.message
