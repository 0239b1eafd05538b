"""The Upload tab in a real browser: an upload finds similar items; a file that is no image says so on the page."""

from __future__ import annotations

import pytest
from gradio_client import handle_file

from tests.browser import studio_page as ui

TAB = "Upload a new item"
RESULTS = "Similar catalog items"


def _upload_and_search(page, path) -> None:
    ui.open_tab(page, TAB)
    ui.block_labelled(page, "Image (optional)").locator("input[type=file]").set_input_files(str(path))
    page.get_by_role("button", name="Find similar items").click()


def test_an_uploaded_image_finds_similar_items(page, browser_app) -> None:
    icon = browser_app.catalog_dir / "images" / "space.png"
    expected = browser_app.client.predict(handle_file(str(icon)), "", "", 10, api_name="/recommend_upload")

    _upload_and_search(page, icon)

    captions = ui.eventually(lambda: ui.result_captions(page, ui.block_labelled(page, RESULTS)), bool,
                             what=f"results in '{RESULTS}'")
    # "rank · score · title": rank and score first, so a cut title never hides them
    assert [c.split(" · ", 2) for c in captions] == [
        [str(r["rank"]), f"{r['score']:.3f}".replace("-", "\u2212"), r["title"]] for r in expected]
    assert captions[0].endswith("Space Shooter")  # its own icon is the closest item
    assert f"{len(expected)} catalog items similar to your upload" in ui.visible_text(page)


def test_a_text_file_named_png_shows_its_message(page, browser_app, tmp_path) -> None:
    fake = tmp_path / "not-an-image.png"
    fake.write_text("hello, I am text")
    with pytest.raises(Exception, match="could not be read as an image"):  # what the API says
        browser_app.client.predict(handle_file(str(fake)), "", "", 5, api_name="/recommend_upload")

    _upload_and_search(page, fake)

    ui.eventually(lambda: ui.visible_text(page), lambda text: "could not be read as an image" in text,
                  what="the upload's error message on the page", timeout_s=10)
