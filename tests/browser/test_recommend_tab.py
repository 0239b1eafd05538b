"""The Recommend tab in a real browser: pick tiles, recommend, select results, read the explanation.

Expected values come from the app's own API (gradio_client) for the same profile; the page must
show them. The history-chart and new-query tests are issue 15's defects 1 and 5 (they failed before
their fixes).
"""

from __future__ import annotations

import pytest

from tests.browser import studio_page as ui
from tests.browser.conftest import STEP_TIMEOUT_MS, VIEWPORT
from ui.handlers import CATALOG_PAGE

# The first two tiles of the tiny catalog (tests/conftest.py TINY_ROWS), in catalog order.
PROFILE = ["chess", "checkers"]
# Matches the chart's labels: Vega prints three significant digits (0.0658 for 0.065825).
CHART_PRECISION = {"rel": 6e-3, "abs": 1e-4}


def _open_results(page) -> list[str]:
    ui.pick_tiles(page, 0, 1)
    return ui.recommend(page)


def _expected_history(app, item_id: str) -> tuple[dict, dict[str, float]]:
    explanation = app.client.predict(PROFILE, item_id, "fast", api_name="/explain")
    return explanation, {app.titles[h["item_id"]]: h["contribution"] for h in explanation["history"]}


def test_two_picked_tiles_and_recommend_show_results(page, browser_app) -> None:
    assert ui.pick_tiles(page, 0, 1) == ["Chess Master", "Checkers"]

    captions = ui.recommend(page)

    expected = browser_app.client.predict(PROFILE, 10, api_name="/recommend")
    assert len(expected) == 5  # 7 tiny items, 2 liked
    assert captions == [f"{r['rank']} · {r['score']:.3f} · {r['title']}".replace("-", "\u2212") for r in expected]
    assert "5 recommendations for 2 liked item(s)" in ui.visible_text(page)


def test_each_selected_recommendation_shows_its_own_history_chart(page, browser_app) -> None:
    recs = browser_app.client.predict(PROFILE, 10, api_name="/recommend")
    first, last = recs[0]["item_id"], recs[-1]["item_id"]
    explained = {item: _expected_history(browser_app, item) for item in (first, last)}
    # Otherwise a chart stuck on the first item's bars would pass.
    assert explained[first][1] != pytest.approx(explained[last][1], **CHART_PRECISION)
    _open_results(page)

    for index, item in ((0, first), (len(recs) - 1, last)):
        explanation, want = explained[item]
        ui.select_result(page, index)
        ui.wait_for_explanation_of(page, explanation["score"])
        shown = ui.eventually(lambda: ui.history_values(page), lambda v: v == pytest.approx(want, **CHART_PRECISION),
                              what=f"the history bars of {item}", timeout_s=5, fail=False)
        assert shown == pytest.approx(want, **CHART_PRECISION), f"chart after selecting #{index + 1} {item}"


def test_a_new_query_clears_the_old_explanation_and_rating(page, browser_app) -> None:
    _open_results(page)
    ui.select_result(page, 0)
    top = browser_app.client.predict(PROFILE, 1, api_name="/recommend")[0]["item_id"]
    old = browser_app.client.predict(PROFILE, top, "fast", api_name="/explain")
    ui.wait_for_explanation_of(page, old["score"])
    # the old explanation is on screen before the new query (its chart draws a moment after its text)
    assert ui.eventually(lambda: ui.history_values(page), bool, what="the history chart's bars")
    page.get_by_role("button", name="Dislike").click()
    ui.eventually(lambda: ui.visible_text(page), lambda text: "Saved: you" in text, what="the saved-rating note")

    ui.pick_tiles(page, 2)  # a third liked item: a new query
    ui.recommend(page)

    # The gallery may redraw a moment before the panels the same answer clears.
    why = ui.eventually(lambda: ui.why_panel(page).inner_text(), lambda text: f"{old['score']:.3f}" not in text,
                        what="the old explanation cleared", fail=False)
    assert f"{old['score']:.3f}" not in why
    assert ui.eventually(lambda: ui.history_values(page), lambda bars: bars == {}, what="no bars", fail=False) == {}
    assert "Saved: you" not in ui.eventually(lambda: ui.visible_text(page), lambda text: "Saved: you" not in text,
                                             what="the old rating note cleared", fail=False)


def test_paging_reaches_the_last_catalog_item(browser, paged_app) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.goto(paged_app.url)
        page.locator("#catalog-gallery img").first.wait_for()
        pages = -(-len(paged_app.titles) // CATALOG_PAGE)
        assert f"page 1 of {pages}" in ui.visible_text(page)
        last_title = paged_app.titles[paged_app.last_id]
        assert last_title not in ui.catalog_captions(page)

        for number in range(2, pages + 1):
            page.get_by_role("button", name="Next page").click()
            ui.eventually(lambda: ui.visible_text(page), lambda text: f"page {number} of {pages}" in text,
                          what=f"page {number} of {pages}")
        assert page.get_by_role("button", name="Next page").is_disabled()
        captions = ui.eventually(lambda: ui.catalog_captions(page), lambda shown: last_title in shown,
                                 what=f"the last item {last_title!r} on the last page")

        assert ui.pick_tiles(page, captions.index(last_title)) == [last_title]
        assert ui.eventually(lambda: ui.catalog_captions(page), lambda shown: f"\u2713 {last_title}" in shown,
                             what="the picked tile marked as liked")
    finally:
        context.close()


def test_the_recommend_tab_fits_a_phone_screen(browser, browser_app) -> None:
    """At 390 px (a phone) nothing sticks out sideways: no horizontal scrolling, captions inside their tiles."""
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.set_default_timeout(STEP_TIMEOUT_MS)
        page.goto(browser_app.url)
        page.locator("#catalog-gallery img").first.wait_for()
        ui.pick_tiles(page, 0, 1)
        ui.recommend(page)
        ui.select_result(page, 0)
        page.get_by_text("item id:").first.wait_for()  # the selected result's details
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        overflowing = page.locator("#results-gallery .caption-label").evaluate_all(
            "labels => labels.filter(l => l.getBoundingClientRect().right > "
            "l.closest('button').getBoundingClientRect().right + 1).length")
        assert overflowing == 0
        # Every tile inside its gallery's box: a grid wider than the screen hides its last columns.
        for gallery in ("#catalog-gallery", "#results-gallery"):
            outside = page.locator(f"{gallery} button.thumbnail-item").evaluate_all(
                "tiles => tiles.filter(t => t.getBoundingClientRect().right > "
                "t.closest('.grid-wrap').getBoundingClientRect().right + 1).length")
            assert outside == 0, f"{outside} tile(s) of {gallery} cut off at 390 px"
    finally:
        context.close()


def test_a_negative_part_is_drawn_negative(page, browser_app) -> None:
    """A part of the score below zero is a bar below zero, in the "lowered" colour, and the heatmap says so."""
    from ui.render import LOWERED

    profile = ["checkers"]
    recs = browser_app.client.predict(profile, 10, api_name="/recommend")
    found = None
    for index, rec in enumerate(recs):  # the tiny catalog: checkers -> cards has image -0.013
        explanation = browser_app.client.predict(profile, rec["item_id"], "fast", api_name="/explain")
        negative = {part: v for part, v in explanation["modality_scores"].items() if v < 0}
        if negative:
            found = index, explanation, negative
            break
    assert found, "no recommendation for ['checkers'] has a negative part of the score"
    index, explanation, negative = found
    part, value = next(iter(negative.items()))

    ui.pick_tiles(page, 1)  # Checkers
    ui.recommend(page)
    ui.select_result(page, index)
    ui.wait_for_explanation_of(page, explanation["score"])

    def drawn() -> list[dict[str, str]]:
        return [bar for bar in ui.chart_bars(page, "Parts of the score")
                if bar.get("part") == part and ui.number(bar["score part"]) != 0]

    bars = ui.eventually(drawn, bool, what=f"a non-zero {part!r} bar in 'Parts of the score'")
    assert len(bars) == 1, bars
    assert ui.number(bars[0]["score part"]) < 0
    assert ui.number(bars[0]["score part"]) == pytest.approx(value, **CHART_PRECISION)
    assert bars[0]["effect"] == LOWERED
    if part == "image":
        heat_label = page.locator("[data-testid=block-label]:visible", has_text="Image regions that")
        label = ui.eventually(lambda: heat_label.first.inner_text(), lambda text: "lowered" in text,
                              what="the heatmap's label saying 'lowered'", fail=False)
        assert "lowered" in label


def test_like_on_a_result_joins_the_liked_items_and_refreshes_the_results(page, browser_app) -> None:
    """Likes at serving time: Like on a result stores the label, adds the item to "Items you like" and shows
    the list for the new profile at once (no Recommend press); Dislike puts it in "Items you dislike"."""
    before = _open_results(page)
    expected = browser_app.client.predict(PROFILE, 10, api_name="/recommend")
    liked = expected[0]
    ui.select_result(page, 0)
    page.get_by_text("item id:").first.wait_for()  # the selected result's details

    ui.rate(page, "Like")

    now = ui.eventually(lambda: ui.liked_titles(page), lambda titles: len(titles) == 3,
                        what="the liked result in 'Items you like'")
    assert now == ["Chess Master", "Checkers", liked["title"]]
    refreshed = ui.eventually(lambda: ui.result_captions(page), lambda shown: shown and shown != before,
                              what="the results for the new profile")
    want = browser_app.client.predict(PROFILE + [liked["item_id"]], 10, api_name="/recommend")
    assert refreshed == [f"{r['rank']} · {r['score']:.3f} · {r['title']}".replace("-", "\u2212") for r in want]
    assert not any(caption.endswith(liked["title"]) for caption in refreshed)
    text = ui.visible_text(page)
    assert f"you 👍 liked {liked['title']}" in text and "joined Items you like" in text
    assert "4 recommendations for 3 liked item(s)" in text

    ui.select_result(page, 0)
    page.get_by_text("item id:").first.wait_for()
    ui.rate(page, "Dislike")
    disliked = ui.eventually(lambda: ui.disliked_titles(page), lambda titles: len(titles) == 1,
                             what="the disliked result in 'Items you dislike'")
    assert disliked == [want[0]["title"]]
    shown = ui.eventually(lambda: ui.result_captions(page), lambda s: len(s) == 3, what="the list without it")
    assert not any(caption.endswith(want[0]["title"]) for caption in shown)
    assert ui.liked_titles(page) == now
