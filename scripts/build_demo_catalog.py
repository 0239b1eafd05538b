#!/usr/bin/env python3
"""Build the bundled demo catalog (``assets/catalog``) from the Debian games data set.

The source folder (``shared/data/debian-games``, see its PROVENANCE.md) holds 189 games from
Debian 12 "bookworm" ``main`` with icons, manual screenshots and the packages' copyright files.
This script converts it into the project's generic catalog format:

* ``items.jsonl``   one JSON object per item (sorted by ``item_id``, fixed key order)
* ``catalog.json``  catalog-level metadata
* ``LICENSES.md``   licence / attribution overview
* ``images/icons/``, ``images/screenshots/``  copied byte-for-byte
* ``licenses/<pkg>.copyright`` (only the referenced ones) and ``licenses/common-licenses/``

The output folder is wiped and rewritten on every run; the output is deterministic.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

LOG = logging.getLogger("build_demo_catalog")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = "../shared/data/debian-games"
DEFAULT_OUT = "assets/catalog"

CATALOG_NAME = "Debian games (demo catalog)"
CATALOG_DESCRIPTION = (
    "189 free-software games packaged in Debian 12 \"bookworm\" main, with their icons, "
    "descriptions, genres and manual screenshots, bundled as a licence-clean demo catalog."
)
CATALOG_SOURCE = (
    "Debian 12 \"bookworm\" main: AppStream/DEP-11 metadata (Components-amd64.yml.gz) and "
    "128x128 icons (icons-128x128.tar.gz), screenshots from the games' bundled user manuals, "
    "copyright files from the packages' /usr/share/doc/<pkg>/copyright"
)

CC_BY_SA_LEGALCODE = {
    "3.0": "https://creativecommons.org/licenses/by-sa/3.0/legalcode",
    "4.0": "https://creativecommons.org/licenses/by-sa/4.0/legalcode",
}

# Files written by this script; an existing non-empty out folder must contain one of them
# before it is wiped (guards against wiping an unrelated folder by a mistyped --out).
MARKER_FILES = ("items.jsonl", "catalog.json")


def resolve(path_str: str) -> Path:
    """Resolve a path relative to the repository root (absolute paths are kept)."""
    path = Path(path_str)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path.resolve()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Build the bundled demo catalog (generic catalog format: items.jsonl, catalog.json, "
            "LICENSES.md, images/, licenses/) from the Debian games data set. The output folder "
            "is wiped and rewritten."
        )
    )
    parser.add_argument(
        "--source",
        default=DEFAULT_SOURCE,
        help=f"source data folder, relative to the repo root (default: {DEFAULT_SOURCE})",
    )
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"output folder, relative to the repo root; wiped first (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="wipe the output folder even if it does not look like a previous catalog build",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


# --------------------------------------------------------------------------- item conversion


def cc_by_sa_link(license_name: str) -> str | None:
    """Legal-code URL for a CC-BY-SA 3.0/4.0 licence string, else None."""
    if "CC-BY-SA" not in license_name.upper():
        return None
    for version, url in CC_BY_SA_LEGALCODE.items():
        if version in license_name:
            return url
    return None


def item_license(game: dict[str, Any], license_file: str) -> str:
    star = (game.get("copyright_files_star_license") or "").strip()
    return star if star else f"see {license_file}"


def build_attribution(game: dict[str, Any], license_file: str, shots: list[dict[str, Any]]) -> str:
    parts = [
        f"Icon, text: Debian package '{game['debian_package']}' {game['debian_version']} "
        "(Debian 12 main)"
    ]
    if game.get("developer"):
        parts.append(f"developer: {game['developer']}")
    if game.get("homepage"):
        parts.append(f"homepage: {game['homepage']}")
    star = (game.get("copyright_files_star_license") or "").strip()
    if star:
        parts.append(f"licence: {star} ({license_file})")
    else:
        parts.append(f"licence: see {license_file}")
    if game.get("metadata_license"):
        parts.append(f"text (AppStream metadata) licence: {game['metadata_license']}")
    text = "; ".join(parts) + "."

    if shots:
        licences: list[str] = []
        for shot in shots:
            name = shot["license"]
            link = cc_by_sa_link(name)
            label = f"{name} ({link})" if link else name
            if label not in licences:
                licences.append(label)
        noun = "Screenshot" if len(shots) == 1 else f"Screenshots ({len(shots)})"
        text += f" {noun}: from the game's manual, {', '.join(licences)}."
    return text


def build_description(game: dict[str, Any]) -> str:
    pieces = [(game.get("summary") or "").strip(), (game.get("description") or "").strip()]
    return "\n\n".join(p for p in pieces if p)


def convert_item(game: dict[str, Any]) -> dict[str, Any]:
    item_id = game["id"]
    license_file = game["copyright_file"]
    shots = list(game.get("screenshots") or [])
    return {
        "item_id": item_id,
        "title": game["name"],
        "description": build_description(game),
        "genres": list(game.get("categories") or []),
        "tags": list(game.get("keywords") or []),
        "image": game["icon"]["path"],
        "extra_images": [s["path"] for s in shots],
        "license": item_license(game, license_file),
        "license_file": license_file,
        "attribution": build_attribution(game, license_file, shots),
        "url": game.get("homepage") or None,
    }


# --------------------------------------------------------------------------- validation / io


def check_relpath(rel: str, expected_prefix: str) -> None:
    path = Path(rel)
    if path.is_absolute() or ".." in path.parts or not rel.startswith(expected_prefix):
        raise ValueError(f"unexpected path in source catalog: {rel!r}")


def validate_source(source: Path, games: list[dict[str, Any]]) -> None:
    ids = [g["id"] for g in games]
    dupes = sorted(k for k, v in Counter(ids).items() if v > 1)
    if dupes:
        raise ValueError(f"duplicate ids in source catalog: {dupes}")
    missing: list[str] = []
    for game in games:
        icon = game["icon"]["path"]
        check_relpath(icon, "images/icons/")
        if icon != f"images/icons/{game['id']}.png":
            raise ValueError(f"{game['id']}: icon path {icon!r} does not match id")
        check_relpath(game["copyright_file"], "licenses/")
        rels = [icon, game["copyright_file"]]
        for shot in game.get("screenshots") or []:
            check_relpath(shot["path"], "images/screenshots/")
            rels.append(shot["path"])
        missing.extend(r for r in rels if not (source / r).is_file())
    if not (source / "licenses" / "common-licenses").is_dir():
        missing.append("licenses/common-licenses/")
    if missing:
        raise FileNotFoundError(f"{len(missing)} source files missing, e.g. {missing[:5]}")


def prepare_out(out: Path, source: Path, force: bool) -> None:
    if out == REPO_ROOT or out in REPO_ROOT.parents or out == source or out in source.parents:
        raise ValueError(f"refusing to use {out} as output folder")
    if source.is_relative_to(out) or out.is_relative_to(source):
        raise ValueError(f"output folder {out} overlaps the source folder {source}")
    if out.exists():
        if not out.is_dir():
            raise ValueError(f"output path {out} exists and is not a folder")
        non_empty = any(out.iterdir())
        if non_empty and not force and not any((out / m).is_file() for m in MARKER_FILES):
            raise ValueError(
                f"{out} is not empty and does not look like a catalog build; use --force to wipe it"
            )
        LOG.info("wiping %s", out)
        shutil.rmtree(out)
    out.mkdir(parents=True)


def copy_file(source: Path, out: Path, rel: str) -> None:
    dst = out / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source / rel, dst)


def write_text(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


# --------------------------------------------------------------------------- LICENSES.md


def count_table(title: str, counts: Counter[str], unit: str) -> list[str]:
    lines = [f"| {title} | {unit} |", "|---|---:|"]
    for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {name} | {n} |")
    lines.append(f"| **total** | **{sum(counts.values())}** |")
    return lines


def build_licenses_md(games: list[dict[str, Any]], common_licenses: list[str]) -> str:
    n_items = len(games)
    shots = [s for g in games for s in g.get("screenshots") or []]
    n_shot_games = sum(1 for g in games if g.get("screenshots"))
    n_copyright = len({g["copyright_file"] for g in games})

    item_counts: Counter[str] = Counter(
        (g.get("copyright_files_star_license") or "").strip()
        or "free-form copyright file (read the file)"
        for g in games
    )
    shot_counts: Counter[str] = Counter(s["license"] for s in shots)
    text_counts: Counter[str] = Counter(
        g.get("metadata_license") or "none stated (text from .desktop / Debian package "
        "description, covered by the copyright file)"
        for g in games
    )

    lines = [
        f"# {CATALOG_NAME} — licences and attribution",
        "",
        "This folder is the demo catalog bundled with the project: "
        f"{n_items} free-software games with title, description, genres, tags, a 128×128 icon "
        f"and, for {n_shot_games} games, {len(shots)} screenshots, in the project's generic "
        "catalog format (`items.jsonl`, `catalog.json`). It was generated by "
        "`scripts/build_demo_catalog.py`; do not edit it by hand.",
        "",
        "**The project's own code is licensed under Apache-2.0. This folder is not: it keeps "
        "the licences of its sources, described below.**",
        "",
        "## Source",
        "",
        "All content comes from the **Debian 12 \"bookworm\" `main`** archive, whose packages have "
        "passed Debian's DFSG licence review (redistribution and modification allowed, "
        "commercial use allowed):",
        "",
        "* **Text and icons** — Debian AppStream/DEP-11 metadata of `bookworm/main` "
        "(`dists/bookworm/main/dep11/Components-amd64.yml.gz`) and its 128×128 icon tarball "
        "(`dists/bookworm/main/dep11/icons-128x128.tar.gz`). The icons are the games' own "
        "icons shipped in the game package or its `-data` package (same source package).",
        "* **Screenshots** — copied from the user manuals shipped inside the games' Debian "
        "packages (KDE: `usr/share/doc/HTML/en/<app>/`, GNOME: `usr/share/help/C/<app>/figures/`).",
        "* **Copyright files** — each package's verbatim `/usr/share/doc/<pkg>/copyright` "
        f"({n_copyright} files in `licenses/`), plus the Debian `/usr/share/common-licenses` "
        "texts they refer to (`licenses/common-licenses/`).",
        "",
        "## Licences",
        "",
        "* **Icon and text of each item** are under the licence stated in that item's "
        "`license_file` (`licenses/<pkg>.copyright`), which is authoritative. The item's "
        "`license` field gives the `Files: *` licence of machine-readable (DEP-5) copyright "
        "files, or `see licenses/<pkg>.copyright` for free-form ones. Note that a copyright "
        "file may give game art (icons, pixmaps, data) a different licence than the code; "
        "read the file. Licence texts referred to by name (GPL, LGPL, GFDL, BSD, Apache-2.0, "
        "CC0, MPL, Artistic) are in `licenses/common-licenses/`.",
        "* **Description text** from upstream AppStream metainfo is additionally under the "
        "metadata licence named in the item's `attribution` (CC0-1.0, FSFAP, MIT, CC-BY-SA, "
        "GFDL, …); text without a stated metadata licence comes from the package's .desktop "
        "file / Debian package description and is covered by the copyright file.",
        "* **Screenshots** are under the licence of the manual they come from, named in the "
        "item's `attribution`:",
        "  * GFDL-1.2-or-later (KDE manuals, `&underFDL;`) and GFDL-1.1-or-later (GNOME DocBook "
        "manuals) — texts: `licenses/common-licenses/GFDL-1.2`, `licenses/common-licenses/GFDL-1.3`;",
        f"  * CC-BY-SA 3.0 (GNOME Mallard help) — legal code: {CC_BY_SA_LEGALCODE['3.0']};",
        f"  * CC-BY-SA 4.0 — legal code: {CC_BY_SA_LEGALCODE['4.0']}.",
        "",
        "  The game artwork visible in a screenshot is also under the game's own licence "
        "(its copyright file).",
        "* **Copyleft:** modified versions of images under GPL, LGPL, GFDL or CC-BY-SA "
        "(icons, screenshots) must be distributed under the same licence, with attribution.",
        "",
        "## Attribution",
        "",
        "Every line of `items.jsonl` carries an `attribution` string (Debian package and "
        "version, developer and homepage where known, licence and copyright file, text "
        "metadata licence, screenshot licences) and a `license_file` path. Keep them, and keep "
        "`licenses/` next to `images/`, when redistributing this folder or parts of it.",
        "",
        "## Trademarks",
        "",
        "Names and logos of games (and the name Debian) may be trademarks of their respective "
        "owners. They are used here only to identify the games; no endorsement by, or "
        "affiliation with, their owners or the Debian project is implied.",
        "",
        "## Licence counts",
        "",
        *count_table("Icon / text licence (`Files: *` of the copyright file)", item_counts,
                     "items"),
        "",
        *count_table("Screenshot licence", shot_counts, "screenshots"),
        "",
        *count_table("Text metadata licence (AppStream)", text_counts, "items"),
        "",
        "Common licence texts bundled in `licenses/common-licenses/`: "
        + ", ".join(f"`{name}`" for name in common_licenses)
        + ".",
        "",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def build(source: Path, out: Path, force: bool = False) -> dict[str, int]:
    catalog_path = source / "catalog.json"
    LOG.info("reading %s", catalog_path)
    games = json.loads(catalog_path.read_text(encoding="utf-8"))
    if not isinstance(games, list):
        raise ValueError(f"{catalog_path}: expected a JSON list of games")
    games = sorted(games, key=lambda g: g["id"])
    validate_source(source, games)

    prepare_out(out, source, force)

    items = [convert_item(g) for g in games]
    with (out / "items.jsonl").open("w", encoding="utf-8", newline="\n") as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    LOG.info("wrote %d items to %s", len(items), out / "items.jsonl")

    icon_rels = sorted({it["image"] for it in items})
    shot_rels = sorted({p for it in items for p in it["extra_images"]})
    license_rels = sorted({it["license_file"] for it in items})
    for rel in [*icon_rels, *shot_rels, *license_rels]:
        copy_file(source, out, rel)
    LOG.info(
        "copied %d icons, %d screenshots, %d copyright files",
        len(icon_rels), len(shot_rels), len(license_rels),
    )

    common_src = source / "licenses" / "common-licenses"
    common_dst = out / "licenses" / "common-licenses"
    shutil.copytree(common_src, common_dst, copy_function=shutil.copyfile)
    common_names = sorted(p.name for p in common_dst.iterdir())
    LOG.info("copied %d common licence texts", len(common_names))

    meta = {
        "name": CATALOG_NAME,
        "description": CATALOG_DESCRIPTION,
        "source": CATALOG_SOURCE,
        "item_count": len(items),
    }
    write_text(out / "catalog.json", json.dumps(meta, ensure_ascii=False, indent=2) + "\n")
    write_text(out / "LICENSES.md", build_licenses_md(games, common_names))
    LOG.info("wrote catalog.json and LICENSES.md")

    return {
        "items": len(items),
        "icons": len(icon_rels),
        "screenshots": len(shot_rels),
        "copyright_files": len(license_rels),
        "common_licenses": len(common_names),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    source = resolve(args.source)
    out = resolve(args.out)
    try:
        stats = build(source, out, force=args.force)
    except (OSError, ValueError, KeyError) as exc:
        LOG.error("build failed: %s", exc)
        return 1
    LOG.info("done: %s", ", ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
