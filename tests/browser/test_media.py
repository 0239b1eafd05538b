"""Audio and video in a real browser: the selected item's player, the audio plot and the keyframe strip are on
screen (not only in the API's answer), and an uploaded clip finds the items that sound like it.

The plot is checked by its drawn size: an image block shown after the page loaded once collapsed to 2 px,
which no handler test can see.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.app_process import running
from tests.browser import studio_page as ui
from tests.browser.conftest import STEP_TIMEOUT_MS, VIEWPORT
from tests.ui.media_catalog import write_media_catalog


@dataclass(frozen=True)
class MediaApp:
    url: str
    catalog_dir: Path
    log_path: Path


@pytest.fixture(scope="module")
def media_app(browser, tmp_path_factory) -> Iterator[MediaApp]:
    """``python app.py`` on the tiny catalog with tones and clips, every encoder tiny (starts in seconds)."""
    root = tmp_path_factory.mktemp("media-browser")
    catalog = write_media_catalog(root / "catalog")
    args = ["--catalog", str(catalog), "--text-encoder", "tiny-random", "--image-encoder", "tiny-random",
            "--audio-encoder", "tiny-random", "--data-dir", str(root / "data"), "--device", "cpu"]
    with running(args, root / "app.log", timeout=120) as url:
        yield MediaApp(url, catalog, root / "app.log")


@pytest.fixture
def media_page(browser, media_app: MediaApp, request: pytest.FixtureRequest):
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    request.node.browser_page = page  # for the screenshot on failure (tests/browser/conftest.py)
    request.node.browser_app_log = media_app.log_path
    page.goto(media_app.url)
    page.locator("#catalog-gallery img").first.wait_for()
    yield page
    context.close()


def _drawn_height(page, selector: str) -> float:
    """Height in pixels of the tallest shown block matching ``selector`` (0 when none is shown), read in one go:
    a block may be hidden between two separate reads."""
    return page.locator(selector).evaluate_all(
        "els => Math.max(0, ...els.map(e => e.offsetParent === null ? 0 : e.getBoundingClientRect().height))")


def _select(page, title: str) -> None:
    captions = ui.result_captions(page)
    index = next(i for i, caption in enumerate(captions) if caption.endswith(title))
    ui.select_result(page, index)


def test_an_explained_track_is_played_and_drawn(media_page) -> None:
    page = media_page
    titles = ui.catalog_captions(page)
    ui.pick_tiles(page, titles.index("Chess Master"))
    captions = ui.recommend(page)
    assert any(c.endswith("\u266a Card Solitaire") for c in captions)  # the track's mark before the title
    _select(page, "Card Solitaire")
    ui.eventually(lambda: _drawn_height(page, ".audio-attribution"), lambda h: h > 150,
                  what="the audio attribution plot drawn at its height")
    assert page.locator(".audio-attribution:visible img").first.get_attribute("src")
    assert _drawn_height(page, ".item-audio") > 50 and _drawn_height(page, ".item-video") == 0
    assert "Audio part" in ui.why_panel(page).inner_text()
    # An item without media: no player, no plot; the previous item's are gone.
    _select(page, "Logic Puzzle")
    ui.eventually(lambda: (_drawn_height(page, ".item-audio"), _drawn_height(page, ".audio-attribution")),
                  lambda heights: heights == (0, 0), what="the players and the plot hidden")


def test_an_explained_clip_shows_its_keyframes(media_page) -> None:
    page = media_page
    ui.pick_tiles(page, ui.catalog_captions(page).index("Racer"))
    ui.recommend(page)
    _select(page, "Checkers")  # a silent clip of its own, compared with Racer's
    ui.eventually(lambda: page.locator(".keyframe-strip:visible .caption-label").all_inner_texts(),
                  lambda shown: len(shown) >= 2 and sum(c.startswith("\u2605") for c in shown) == 1,
                  what="the keyframe strip with its one marked frame")
    assert _drawn_height(page, ".item-video") > 50


def test_an_uploaded_clip_finds_its_item(media_page, media_app: MediaApp) -> None:
    page = media_page
    ui.open_tab(page, "Upload a new item")
    clip = media_app.catalog_dir / "media" / "cards.ogg"
    ui.block_labelled(page, "Audio clip (optional)").locator("input[type=file]").set_input_files(str(clip))
    page.get_by_role("button", name="Find similar items").click()
    results = ui.block_labelled(page, "Similar catalog items")
    captions = ui.eventually(lambda: ui.result_captions(page, results), bool, what="results for the clip")
    assert captions[0].endswith("Card Solitaire")  # its own track first
    assert "catalog items similar to your upload" in ui.visible_text(page)
