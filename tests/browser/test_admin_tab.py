"""The Admin tab in a real browser: two versions side by side, the override's confirmation, the job history."""

from __future__ import annotations

from tests.browser.studio_page import eventually, open_tab


def test_the_admin_tab_compares_two_versions_side_by_side(page, browser_app) -> None:
    open_tab(page, "Admin")
    assert page.get_by_label("I understand the gate rejected it").is_visible()  # the override's second step
    assert page.get_by_text("Job history (newest first)").is_visible()
    page.get_by_text("Compare two versions").click()
    serving = browser_app.client.predict(api_name="/finetune_status")["serving"]
    # Both dropdowns are filled when the tab opens (here: the zero-shot model, the only version).
    version_a = page.get_by_label("Version A")
    eventually(version_a.input_value, lambda v: v == serving, what="version A filled with the served version")
    page.get_by_label("Liked items (ids or titles, separated by commas)").fill("chess, Racer")
    page.get_by_role("button", name="Compare", exact=True).click()
    columns = page.locator("#compare-versions h4", has_text=serving)
    columns.nth(1).wait_for()
    assert columns.count() == 2
    expected = browser_app.client.predict(["chess", "racer"], 10, api_name="/recommend")
    rows = page.locator("#compare-versions table tbody tr")
    assert rows.count() == 2 * len(expected)  # both lists in full
    first = rows.first.inner_text()
    assert expected[0]["title"] in first and f"{expected[0]['score']:.4f}" in first and "● #1" in first
    assert f"{len(expected)} of {len(expected)}" in page.get_by_text("items are in both lists").inner_text()
