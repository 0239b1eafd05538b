"""Fixtures of the browser tests: headless Chromium (Playwright), the app on tiny encoders, a page on it.

A developer's plain ``pytest`` without Chromium or Playwright skips these tests with the reason;
``.ci/run`` sets ``REQUIRE_BROWSER=1``, and then a missing browser fails them instead.
On a failure, a screenshot of the page and the app's log go to ``$BROWSER_ARTIFACTS``
(default ``bench-out/browser/``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gradio_client import Client

from tests.app_process import running
from tests.browser.chromium import find_chromium, launch
from tests.conftest import REPO_ROOT, TINY_ROWS, write_tiny_catalog

REQUIRE_BROWSER_ENV = "REQUIRE_BROWSER"
ARTIFACTS_ENV = "BROWSER_ARTIFACTS"
# Wide enough that the catalog column and the results column sit side by side, as on a laptop.
VIEWPORT = {"width": 1400, "height": 1000}
# The longest a person would wait for one step; the tiny encoders answer in well under a second.
STEP_TIMEOUT_MS = 30_000


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_BROWSER_ENV, "").strip() == "1":
        pytest.fail(f"{REQUIRE_BROWSER_ENV}=1 but {reason}", pytrace=False)
    pytest.skip(f"browser tests need Chromium and Playwright: {reason}")


# Per module, not per session: Playwright's sync API keeps its own event loop while it is open, and the
# rest of the suite (apps launched in-process, asyncio code) must not run inside it.
@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -r requirements-dev.txt)")
    executable, why = find_chromium()
    if executable is None:
        _unavailable(why)
    with sync_playwright() as playwright:
        chromium = launch(playwright, executable)
        yield chromium
        chromium.close()


@dataclass(frozen=True)
class RunningApp:
    url: str
    client: Client  # the API, for the values the page must show
    log_path: Path
    catalog_dir: Path  # the tiny catalog the app serves (items.csv, images/)
    titles: dict[str, str]  # item id -> title of the tiny catalog


@pytest.fixture(scope="module")
def browser_app(browser, tmp_path_factory) -> Iterator[RunningApp]:
    """``python app.py`` on the tiny catalog with tiny random encoders (starts in seconds), once per module.

    Depends on ``browser`` so that no app is started when the tests are going to skip anyway.
    """
    root = tmp_path_factory.mktemp("browser-app")
    catalog = write_tiny_catalog(root / "catalog")
    args = ["--catalog", str(catalog), "--text-encoder", "tiny-random", "--image-encoder", "tiny-random",
            "--data-dir", str(root / "data"), "--device", "cpu"]
    log_path = root / "app.log"
    with running(args, log_path, timeout=120) as url:
        yield RunningApp(url, Client(url, verbose=False), log_path, catalog,
                         {row[0]: row[1] for row in TINY_ROWS})


@dataclass(frozen=True)
class PagedApp:
    url: str
    titles: dict[str, str]  # item id -> title, more items than one picker page holds
    last_id: str  # the item the last page ends with


@pytest.fixture(scope="module")
def paged_app(browser, tmp_path_factory) -> Iterator[PagedApp]:
    """The app on a catalog two items longer than one picker page (tiny encoders, plain colour images)."""
    from PIL import Image

    from ui.handlers import CATALOG_PAGE

    root = tmp_path_factory.mktemp("paged-app")
    folder = root / "catalog"
    (folder / "images").mkdir(parents=True)
    titles = {f"item{n:03d}": f"Item {n:03d}" for n in range(1, CATALOG_PAGE + 3)}  # A-Z order = catalog order
    lines = ["item_id,title,description,genres,image"]
    for n, (item_id, title) in enumerate(titles.items()):
        Image.new("RGB", (32, 32), (n * 5 % 256, 90, 160)).save(folder / "images" / f"{item_id}.png")
        lines.append(f"{item_id},{title},test item {n},BoardGame,images/{item_id}.png")
    (folder / "items.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["--catalog", str(folder), "--text-encoder", "tiny-random", "--image-encoder", "tiny-random",
            "--data-dir", str(root / "data"), "--device", "cpu"]
    with running(args, root / "app.log", timeout=120) as url:
        yield PagedApp(url, titles, list(titles)[-1])


@pytest.fixture
def page(browser, browser_app: RunningApp, request: pytest.FixtureRequest):
    """A fresh page (own cookies, so its own Gradio session) with the app loaded and the catalog shown."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    request.node.browser_page = page  # for the screenshot on failure
    request.node.browser_app_log = browser_app.log_path
    page.goto(browser_app.url)
    page.locator("#catalog-gallery img").first.wait_for()
    yield page
    context.close()


def artifacts_dir() -> Path:
    configured = os.environ.get(ARTIFACTS_ENV, "").strip()
    return Path(configured).expanduser() if configured else REPO_ROOT / "bench-out" / "browser"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """After a failed step, keep what the page showed and what the app logged, and name the files in the report.

    An expected failure (xfail) is not a failure here; a strict xfail that passed is, and gets its screenshot.
    """
    report = yield
    page = getattr(item, "browser_page", None)
    if report.failed and report.when in ("setup", "call") and page is not None and not page.is_closed():
        folder = artifacts_dir()
        folder.mkdir(parents=True, exist_ok=True)
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid.split("::", 1)[-1])
        saved = []
        try:
            page.screenshot(path=str(folder / f"{stem}.png"), full_page=True)
            saved.append(folder / f"{stem}.png")
        except Exception as exc:  # a crashed page must not hide the test's own failure
            saved.append(f"(no screenshot: {exc})")
        log_path = getattr(item, "browser_app_log", None)
        if log_path is not None and Path(log_path).is_file():
            (folder / f"{stem}.app.log").write_text(Path(log_path).read_text(errors="replace"))
            saved.append(folder / f"{stem}.app.log")
        report.sections.append(("browser artifacts", "\n".join(map(str, saved))))
    return report
