"""Find a Chromium binary and launch it headless with Playwright, offline (browser tests and docs screenshots).

Playwright drives the system's Chromium through ``executable_path``: ``playwright install`` would
download a browser build, which a machine without internet cannot do. Debian's ``chromium`` package
(``apt-get install chromium``; ``.ci/run`` installs it) is the one CI uses.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

#: Set it to a Chromium or Chrome binary to use that one instead of the first found on PATH.
CHROMIUM_ENV = "CHROMIUM"
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Without the background-networking flags Chromium keeps trying to reach Google's services (updates,
# safe browsing, sync); on a closed network those connections are refused and slow the start.
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def find_chromium() -> tuple[Path | None, str]:
    """The binary to launch, or None and why none was found (for a skip or failure message)."""
    configured = os.environ.get(CHROMIUM_ENV, "").strip()
    if configured:
        path = Path(configured).expanduser()
        if path.is_file() and os.access(path, os.X_OK):
            return path, ""
        return None, f"{CHROMIUM_ENV}={configured} is not an executable file"
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return Path(found), ""
    return None, (f"no Chromium found (looked for {', '.join(CANDIDATES)} on PATH and ${CHROMIUM_ENV}); "
                  "install it with: apt-get install chromium")


def launch(playwright, executable: Path):
    """A headless Chromium ``Browser`` from a started ``sync_playwright()``."""
    return playwright.chromium.launch(executable_path=str(executable), args=LAUNCH_ARGS)
