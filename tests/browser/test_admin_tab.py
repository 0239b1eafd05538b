"""The Admin and Label tabs in a real browser: two versions side by side, the override's confirmation, the job
history, a promotion named in the page header, labelling by keyboard with undo."""

from __future__ import annotations

from pathlib import Path

from storage import Repository, default_database_url
from tests.browser.studio_page import block_labelled, eventually, open_tab, visible_text


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


def _repository(app) -> Repository:
    """The app's own database (its data dir sits next to the catalog, see ``browser_app``)."""
    return Repository.from_url(default_database_url(Path(app.catalog_dir).parent / "data"))


def test_labelling_by_keyboard_stores_the_answer_and_undo_supersedes_it(page, browser_app) -> None:
    from recsys_core.labels.aggregation import aggregate

    # Open mode: everyone is admin. No controls: every task is a real one that aggregation keeps.
    browser_app.client.predict("keys", 2, 2, 0, 0, 1, "graded", api_name="/campaign")
    repo = _repository(browser_app)
    open_tab(page, "Label")
    page.get_by_role("combobox", name="Campaign").click()
    page.get_by_role("option", name="keys").first.click()
    page.get_by_role("button", name="Get a task").click()
    block_labelled(page, "Item to judge").locator("img").first.wait_for()

    def judgements():
        frame = repo.judgements_frame(campaign="keys")
        return frame.sort_values("feedback_id") if not frame.empty else frame

    page.locator("body").click(position={"x": 5, "y": 5})  # the focus on the page, not in a text box
    page.keyboard.press("3")
    eventually(lambda: page.locator("#label-answer input[type=radio]:checked").count(), lambda n: n == 1,
               what="the answer 3 chosen by its key")
    page.keyboard.press("Enter")
    first = eventually(judgements, lambda f: len(f) == 1, what="one stored judgement", timeout_s=10, fail=False)
    assert len(first) == 1 and int(first["grade"].iloc[0]) == 3, first
    task = first["task_id"].iloc[0]

    page.keyboard.press("U")  # back to that task
    # The re-opened task comes back with the earlier answer chosen: a key pressed before it arrives is overwritten.
    eventually(lambda: visible_text(page), lambda text: "Undone: your last answer is open again." in text,
               what="the undo taken")
    page.keyboard.press("0")
    eventually(lambda: page.locator("#label-answer input[type=radio][value='0']:checked").count(),
               lambda n: n == 1, what="the answer 0 chosen by its key")
    page.keyboard.press("Enter")
    both = eventually(judgements, lambda f: len(f) == 2, what="two judgements", timeout_s=10, fail=False)
    assert len(both) == 2 and list(both["task_id"]) == [task, task], both
    assert [int(g) for g in both["grade"]] == [3, 0]
    examples = aggregate(both).examples
    assert len(examples) == 1, examples  # the later answer supersedes the undone one
    assert float(examples["label"].iloc[0]) == 0.0, examples  # grade 0


def test_after_a_promotion_the_header_names_the_promoted_model(page, browser_app, tmp_path) -> None:
    """Issue 15, defect 6, in the browser: Promote redraws the page header's model line without a reload."""
    from studio.registry import ModelManager
    from tests.conftest import make_tiny_service
    from tests.studio.test_registry import _candidate
    from dataclasses import replace

    from recsys_core.data.catalog import load_catalog_folder

    # A fine-tuned candidate on the same tiny catalog and encoders, registered in the app's registry.
    service = make_tiny_service(load_catalog_folder(browser_app.catalog_dir), tmp_path / "features")
    service.prepare()
    repo = _repository(browser_app)
    serving = browser_app.client.predict(api_name="/finetune_status")["serving"]
    result = _candidate(service, tmp_path, "browser-cand")
    result = replace(result, parent=serving)
    version = ModelManager(service, repo).register_candidate(result, auto_promote=False, by="test")
    rejected = repo.get_model(version).status == "rejected"
    header = page.locator("p").filter(has_text="model:").first  # the page header's model line
    assert version not in header.inner_text()

    open_tab(page, "Admin")
    page.get_by_role("button", name="Refresh").click()
    choice = page.get_by_label("Model version")
    choice.click()
    page.get_by_role("option", name=version).first.click()
    if rejected:
        page.get_by_label("override the gate").check()
        page.get_by_label("I understand the gate rejected it").check()
    page.get_by_role("button", name="Promote", exact=True).click()

    shown = eventually(header.inner_text, lambda text: f"model: {version}" in text,
                       what=f"the header naming {version}", fail=False)
    assert f"model: {version}" in shown
    assert browser_app.client.predict(api_name="/finetune_status")["serving"] == version
