"""What a person does on the studio's page and what they read back, in one place for the browser tests.

Locators go by what is on screen (labels, titles, button texts) and the few ``elem_id``s the layout
sets (``catalog-gallery``, ``results-gallery``), so a test reads like the steps a person takes.
Chart values are read from the bars' accessible labels, which Vega renders from the data each bar
is drawn from (``"liked item: Chess Master; contribution: −0.0643"``): what a screen reader says and
what the tooltip shows.
"""

from __future__ import annotations

import re
import time
from typing import Callable, TypeVar

HISTORY_CHART = "Contribution of each liked item"
WHY_PANEL = "Why this recommendation?"

T = TypeVar("T")


def pick_tiles(page, *indices: int) -> list[str]:
    """Click catalog tiles in turn (each adds its item to "Items you like") and return the liked titles."""
    tiles = page.locator("#catalog-gallery button.thumbnail-item")
    for index in indices:
        before = liked_titles(page)
        tiles.nth(index).click()
        # The next click waits for this one to land: the server answers each pick with the new liked set.
        eventually(lambda: liked_titles(page), lambda now: len(now) == len(before) + 1, what="the picked tile in "
                   "'Items you like'")
    return liked_titles(page)


def liked_titles(page) -> list[str]:
    """The titles shown as tokens in the "Items you like" box."""
    return box_titles(page, "Items you like")


def disliked_titles(page) -> list[str]:
    """The titles shown as tokens in the "Items you dislike" box."""
    return box_titles(page, "Items you dislike")


def box_titles(page, label: str) -> list[str]:
    box = page.locator(".block").filter(has=page.get_by_label(label)).last
    return box.locator(".token").all_inner_texts()


def rate(page, button: str) -> None:
    """Press "Like" or "Dislike" under the selected result."""
    page.get_by_role("button", name=re.compile(rf"\b{button}$")).click()


def recommend(page) -> list[str]:
    """Press Recommend and return the result captions ("#1 Title · 0.123") once the new list is shown."""
    before = result_captions(page)
    # "2. Recommend" today; the step number may go, and "Why this recommendation?" must not match.
    page.get_by_role("button", name=re.compile(r"\bRecommend$")).click()
    return eventually(lambda: result_captions(page), lambda shown: bool(shown) and shown != before,
                      what="new recommendations in the results gallery")


def result_captions(page, gallery: str = "#results-gallery") -> list[str]:
    """Captions of a results gallery: the Recommend tab's by default, or a CSS selector / locator of another."""
    where = page.locator(gallery) if isinstance(gallery, str) else gallery
    return where.locator(".caption-label").all_inner_texts()


def catalog_captions(page) -> list[str]:
    """Captions of the catalog tiles on the page shown ("\u2713 " before the liked ones)."""
    return page.locator("#catalog-gallery .caption-label").all_inner_texts()


def block_labelled(page, label: str):
    """The visible component block whose label reads ``label`` (for components without an ``elem_id``)."""
    return page.locator(".block:visible").filter(
        has=page.locator("[data-testid=block-label]", has_text=label)).last


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def select_result(page, index: int) -> None:
    page.locator("#results-gallery button.thumbnail-item").nth(index).click()


def why_panel(page):
    """The visible "Why this recommendation?" accordion (each tab has one; only the open tab's is visible)."""
    return page.locator(".gr-accordion:visible").filter(has=page.get_by_text(WHY_PANEL, exact=True)).first


def wait_for_explanation_of(page, score: float) -> None:
    """Wait until the "why" panel prints this score (rounded as the page rounds it): its explanation arrived."""
    panel = why_panel(page)
    text = f"{score:.3f}"
    # The page writes minus signs as U+2212.
    eventually(lambda: panel.inner_text().replace("\u2212", "-"), lambda shown: text in shown,
               what=f"an explanation with score {text}")


def chart_bars(page, title: str) -> list[dict[str, str]]:
    """Each bar of the visible chart titled ``title`` as {field: value} from its accessible label."""
    chart = page.locator("svg.marks:visible").filter(has=page.locator("text", has_text=title))
    labels = chart.locator("[aria-roledescription=bar]").evaluate_all(
        "bars => bars.map(b => b.getAttribute('aria-label'))")
    return [dict(part.split(": ", 1) for part in label.split("; ")) for label in labels if label]


def history_values(page) -> dict[str, float]:
    """Liked item title -> contribution, as the "Contribution of each liked item" chart draws it.

    The chart stacks a "raised" and a "lowered" bar per liked item (one of them of height 0), so an
    item's contribution is the sum of its bars."""
    values: dict[str, float] = {}
    for bar in chart_bars(page, HISTORY_CHART):
        values[bar["liked item"]] = values.get(bar["liked item"], 0.0) + number(bar["contribution"])
    return values


def number(text: str) -> float:
    return float(text.replace("\u2212", "-").replace(",", ""))  # Vega writes minus as U+2212


def eventually(read: Callable[[], T], ok: Callable[[T], bool], *, what: str, timeout_s: float = 15.0,
               fail: bool = True) -> T:
    """Poll ``read()`` until ``ok`` holds and return that value. On timeout fail naming ``what`` and the last
    value, or with ``fail=False`` return the last value (for the test's own assertion to report).

    The page updates after the server answers, so a read right after a click may see the old state.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            if fail:
                raise AssertionError(f"waited {timeout_s:.0f} s for {what}; the page shows {value!r}")
            return value
        time.sleep(0.2)


def visible_text(page) -> str:
    return page.locator("body").inner_text()

