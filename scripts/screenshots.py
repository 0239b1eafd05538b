#!/usr/bin/env python3
"""Take a screenshot of each main screen of the studio for the README (docs/*.png).

Starts ``python app.py`` on the bundled demo catalog with the packaged weights (what a visitor
sees), in a throwaway data folder, and drives it in headless Chromium as a person would:

* ``recommend.png``          Recommend: a 3D Chess + DreamChess profile, GNOME Chess selected and explained
* ``explanation-panel.png``  the "Why this recommendation?" panel of that screen alone
* ``upload.png``             Upload: PyChess's icon with a title, the results and the first one explained
* ``label.png``              Label: a task of a small campaign created through the admin API
* ``admin.png``              Admin: the model registry and the fine-tune, campaign and export sections

With ``--media``, the media catalog instead (``--catalog media``, game music and clips):

* ``media-explanation.png``  Recommend: two Colobot tracks liked, a third one played and explained (its waveform
                             coloured by the seconds that raised or lowered the score)
* ``media-upload.png``       Upload: a 30 s music clip alone (a Wesnoth track looped) and the tracks that sound alike
* ``media-video.png``        Recommend: two Freedoom gameplay clips liked, a clip of another Doom engine explained (its
                             keyframe strip: each keyframe's share of the video part, the top one's regions drawn)

Needs Chromium (``apt-get install chromium``) and Playwright (requirements-dev.txt). The first run
extracts the catalog's features (about 25 s on 2 cores); ``--data-dir`` keeps them for the next run.

    python scripts/screenshots.py                 # writes docs/*.png
    python scripts/screenshots.py --out /tmp/shots --tiny   # quick check on the tiny test catalog
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))  # run as a file: the project's packages (and the tests' helpers) import

from tests.browser import studio_page as ui  # noqa: E402  (after the path above)
from tests.app_process import start_app  # noqa: E402  (waits for the first page, then for the catalog)
from tests.browser.chromium import find_chromium, launch  # noqa: E402

# Laptop width; tall enough that each screen's main content fits without scrolling.
VIEWPORT = {"width": 1400, "height": 1100}
STEP_TIMEOUT_MS = 120_000  # the packaged encoders on 2 CPU cores: an explanation can take several seconds

# What each screen shows, for the demo catalog and for the tiny test catalog (tests/conftest.py).
SCENES = {
    "demo": {"profile": ["3D Chess", "DreamChess"], "search": "chess", "explain": "GNOME Chess",
             "upload": REPO_ROOT / "assets/catalog/images/icons/pychess.png", "upload_title": "Chess",
             "upload_text": "Play chess against the computer or a friend."},
    "tiny": {"profile": ["Chess Master", "Checkers"], "search": "", "explain": None,
             "upload": None, "upload_title": "Space", "upload_text": "arcade space shooter"},
    "media": {"profile": ["Centaury - The Lost Hope", "Constructive Destruction"], "search": "colobot",
              "explain": "Crystalium", "upload_track": "wesnoth-battle-music",
              "video_profile": ["Chocolate Doom \u2014 Freedoom: Phase 1 demo",
                                "Crispy Doom \u2014 Freedoom: Phase 1 demo 2"],
              # Explained: the first of these in the results (Freedoom demos played by other engines), else the
              # first result with a clip of its own.
              "video_search": "freedoom", "video_explain": ["Woof!", "DSDA-Doom"]},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "docs", help="folder for the PNG files")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the app's data folder (features, database); default: a new temporary folder")
    p.add_argument("--tiny", action="store_true",
                   help="the tiny test catalog with tiny random encoders (seconds; for checking this script)")
    p.add_argument("--media", action="store_true", help="the media catalog (game music and clips): media-*.png")
    p.add_argument("--timeout", type=float, default=600, help="seconds to wait for the app to serve")
    return p.parse_args(argv)


def settled(page) -> None:
    """Let running events finish and the charts draw before a screenshot."""
    ui.eventually(lambda: page.locator("[data-testid=status-tracker]:not(.hide)").count(), lambda n: n == 0,
                  what="the page to finish its events", timeout_s=STEP_TIMEOUT_MS / 1000, fail=False)
    page.wait_for_timeout(800)


def pick_by_title(page, search: str, titles: list[str]) -> None:
    for title in titles:
        if search:
            box = page.get_by_label("Search")
            box.fill(search)
            box.press("Enter")
        tile = page.locator("#catalog-gallery button.thumbnail-item").filter(
            has=page.locator(".caption-label", has_text=title))
        tile.first.wait_for()
        before = len(ui.liked_titles(page))
        tile.first.click()
        ui.eventually(lambda: len(ui.liked_titles(page)), lambda n: n == before + 1, what=f"{title} liked")


def select_result_titled(page, gallery, title: str | None) -> None:
    items = gallery.locator("button.thumbnail-item")
    if title:
        items = items.filter(has=page.locator(".caption-label", has_text=title))
    items.first.click()
    settled(page)


def recommend_screen(page, scene: dict, out: Path) -> None:
    pick_by_title(page, scene["search"], scene["profile"])
    ui.recommend(page)
    select_result_titled(page, page.locator("#results-gallery"), scene["explain"])
    page.screenshot(path=str(out / "recommend.png"), full_page=True)
    ui.why_panel(page).screenshot(path=str(out / "explanation-panel.png"))


def upload_screen(page, scene: dict, out: Path, fallback_image: Path) -> None:
    ui.open_tab(page, "Upload a new item")
    image = scene["upload"] or fallback_image
    ui.block_labelled(page, "Image (optional)").locator("input[type=file]").set_input_files(str(image))
    # Both fields' info line names "title + description", so match the start of each field's name.
    page.get_by_role("textbox", name=re.compile(r"^Title")).fill(scene["upload_title"])
    page.get_by_role("textbox", name=re.compile(r"^Description")).fill(scene["upload_text"])
    page.get_by_role("button", name="Find similar items").click()
    results = ui.block_labelled(page, "Similar catalog items")
    ui.eventually(lambda: ui.result_captions(page, results), bool, what="upload results",
                  timeout_s=STEP_TIMEOUT_MS / 1000)
    select_result_titled(page, results, None)
    page.screenshot(path=str(out / "upload.png"), full_page=True)


def label_screen(page, url: str, out: Path) -> None:
    from gradio_client import Client

    # Open mode (no --auth-file): everyone is admin, so the API may create the campaign.
    Client(url, verbose=False).predict("screenshots", 4, 3, 1, 1, 1, "graded", api_name="/campaign")
    ui.open_tab(page, "Label")
    campaign = page.get_by_label("Campaign")
    campaign.click()
    page.get_by_role("option", name="screenshots").first.click()
    page.get_by_role("button", name="Get a task").click()
    ui.block_labelled(page, "Item to judge").locator("img").first.wait_for()
    settled(page)
    page.screenshot(path=str(out / "label.png"), full_page=True)


def admin_screen(page, out: Path) -> None:
    ui.open_tab(page, "Admin")
    settled(page)
    page.screenshot(path=str(out / "admin.png"), full_page=True)


def media_recommend_screen(page, scene: dict, out: Path) -> None:
    pick_by_title(page, scene["search"], scene["profile"])
    ui.recommend(page)
    select_result_titled(page, page.locator("#results-gallery"), scene["explain"])
    wait_for_plot(page)
    page.screenshot(path=str(out / "media-explanation.png"), full_page=True)


def wait_for_plot(page) -> None:
    """The audio plot is an image below the fold, loaded lazily (as a person scrolls to it, and never for a full-page
    screenshot): bring its block into view, then wait until the image has decoded."""
    page.locator(".audio-attribution:visible").first.scroll_into_view_if_needed()
    plot = page.locator(".audio-attribution img:visible").first
    plot.wait_for()
    ui.eventually(lambda: plot.evaluate("img => img.complete && img.naturalWidth"), bool,
                  what="the audio plot decoded", timeout_s=STEP_TIMEOUT_MS / 1000)
    page.evaluate("window.scrollTo(0, 0)")
    settled(page)


def media_video_screen(page, scene: dict, out: Path) -> None:
    """Two gameplay clips liked; a recommended item with a clip of its own (marked \u25b6 in its caption, one of
    ``video_explain`` if any is)
    explained, once its keyframe strip and player have drawn."""
    from ui.render import VIDEO_MARK

    pick_by_title(page, scene["video_search"], scene["video_profile"])
    captions = ui.recommend(page)
    liked = scene["video_profile"]
    clips = [i for i, c in enumerate(captions) if VIDEO_MARK in c and not any(c.endswith(t) for t in liked)]
    if not clips:
        raise SystemExit(f"error: no recommended item has a video clip: {captions}")
    title = lambda c: c.split(VIDEO_MARK + " ", 1)[-1]  # noqa: E731  (after "rank · score · ▶ ")
    wanted = [i for i in clips if any(title(captions[i]).startswith(t) for t in scene["video_explain"])]
    index = (wanted or clips)[0]
    print(f"media video: explaining {captions[index]!r}", file=sys.stderr)
    ui.select_result(page, index)
    settled(page)
    wait_for_keyframes(page)
    page.screenshot(path=str(out / "media-video.png"), full_page=True)


def wait_for_keyframes(page) -> None:
    """The keyframe strip's tiles and the clip's player, like the audio plot (:func:`wait_for_plot`): below the
    fold and loaded lazily, so bring each into view and wait until its image (the player's first frame) decoded."""
    strip = page.locator(".keyframe-strip:visible").first
    ui.eventually(lambda: strip.locator(".caption-label").all_inner_texts(),
                  lambda shown: len(shown) >= 2 and sum(c.startswith("\u2605") for c in shown) == 1,
                  what="the keyframe strip with its one marked frame", timeout_s=STEP_TIMEOUT_MS / 1000)
    strip.scroll_into_view_if_needed()
    tiles = strip.locator("img")
    ui.eventually(lambda: tiles.evaluate_all("imgs => imgs.length > 0 && imgs.every(i => i.complete && i.naturalWidth)"),
                  bool, what="the keyframe tiles decoded", timeout_s=STEP_TIMEOUT_MS / 1000)
    player = page.locator(".item-video:visible video").first
    player.scroll_into_view_if_needed()
    ui.eventually(lambda: player.evaluate("v => v.readyState >= 2"), bool,  # HAVE_CURRENT_DATA: a frame to show
                  what="the clip's first frame loaded", timeout_s=STEP_TIMEOUT_MS / 1000)
    page.evaluate("window.scrollTo(0, 0)")
    settled(page)


def media_upload_screen(page, scene: dict, out: Path, scratch: Path) -> None:
    """Upload a 30 s clip (one catalog track looped, as WAV) with no title or image."""
    import wave

    import numpy as np

    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.data.media import decode_audio

    track = resolve_catalog("media").get(scene["upload_track"]).audio_source
    samples = np.resize(decode_audio(track, sample_rate=22050).samples, 30 * 22050)
    clip = scratch / "my-30s-clip.wav"
    with wave.open(str(clip), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(22050)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    ui.open_tab(page, "Upload a new item")
    ui.block_labelled(page, "Audio clip (optional)").locator("input[type=file]").set_input_files(str(clip))
    settled(page)
    page.get_by_role("button", name="Find similar items").click()
    results = ui.block_labelled(page, "Similar catalog items")
    ui.eventually(lambda: ui.result_captions(page, results), bool, what="upload results",
                  timeout_s=STEP_TIMEOUT_MS / 1000)
    select_result_titled(page, results, None)
    wait_for_plot(page)
    page.screenshot(path=str(out / "media-upload.png"), full_page=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from playwright.sync_api import sync_playwright

    executable, why = find_chromium()
    if executable is None:
        raise SystemExit(f"error: {why}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="screenshots-") as scratch:
        scratch = Path(scratch)
        data_dir = args.data_dir or scratch / "data"
        app_args = ["--data-dir", str(data_dir), "--device", "cpu"]
        fallback_image = REPO_ROOT / "assets/catalog/images/icons/pychess.png"
        if args.tiny:
            from tests.conftest import write_tiny_catalog

            catalog = write_tiny_catalog(scratch / "catalog")
            app_args += ["--catalog", str(catalog), "--text-encoder", "tiny-random", "--image-encoder", "tiny-random"]
            fallback_image = catalog / "images" / "space.png"
        elif args.media:
            app_args += ["--catalog", "media"]
        print(f"starting the app (log: {scratch / 'app.log'}) …", file=sys.stderr)
        proc, url = start_app(app_args, scratch / "app.log", args.timeout)
        try:
            with sync_playwright() as playwright:
                browser = launch(playwright, executable)
                scene = SCENES["tiny" if args.tiny else "media" if args.media else "demo"]
                screens = (("recommend", lambda p: recommend_screen(p, scene, args.out)),
                           ("upload", lambda p: upload_screen(p, scene, args.out, fallback_image)),
                           ("label", lambda p: label_screen(p, url, args.out)),
                           ("admin", lambda p: admin_screen(p, args.out)))
                if args.media:
                    screens = (("media recommend", lambda p: media_recommend_screen(p, scene, args.out)),
                               ("media upload", lambda p: media_upload_screen(p, scene, args.out, scratch)),
                               ("media video", lambda p: media_video_screen(p, scene, args.out)))
                for name, take in screens:
                    page = browser.new_page(viewport=VIEWPORT)  # a page per screen: a clean session each
                    page.set_default_timeout(STEP_TIMEOUT_MS)
                    page.goto(url)
                    page.locator("#catalog-gallery img").first.wait_for()
                    take(page)
                    page.close()
                    print(f"{name}: done", file=sys.stderr)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"wrote {', '.join(sorted(p.name for p in args.out.glob('*.png')))} to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
