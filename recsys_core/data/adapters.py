"""Named catalogs: the bundled demo catalog and adapters for datasets kept outside the repository.

``resolve_catalog("demo")`` serves the bundled games catalog, ``resolve_catalog("media")`` the bundled game
music and video catalog, ``resolve_catalog("movielens-100k",
data_root=...)`` reads a MovieLens-100K copy (with posters and plots) in place; anything else is a
folder in the generic format (see :mod:`recsys_core.data.catalog`).
"""

from __future__ import annotations

import logging
from pathlib import Path

from recsys_core.data.catalog import Catalog, Item, RowProblem, _as_list, _as_text, load_catalog_folder
from recsys_core.errors import CatalogError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_CATALOG = REPO_ROOT / "assets" / "catalog"
MEDIA_CATALOG = REPO_ROOT / "assets" / "media"
NAMED_CATALOGS = ("demo", "media", "movielens-100k")

MOVIELENS_ATTRIBUTION = (
    "MovieLens 100K, GroupLens Research, University of Minnesota (F. M. Harper and J. A. Konstan, "
    "2015); posters and plots as collected in the local copy. Research use only: not redistributed."
)


def resolve_catalog(spec: str | None, *, data_root: str | Path | None = None, max_image_pixels: int = 40_000_000,
                    media_limits=None) -> Catalog:
    """Turn ``--catalog`` (+ ``--data-root``) into a loaded :class:`Catalog`; ``media_limits``: the audio/video
    size and duration limits (``recsys_core.data.media.MediaLimits``, default limits when None)."""
    if spec in (None, "", "demo"):
        return load_catalog_folder(DEMO_CATALOG, max_image_pixels=max_image_pixels, media_limits=media_limits)
    if spec == "media":
        return load_catalog_folder(MEDIA_CATALOG, max_image_pixels=max_image_pixels, media_limits=media_limits)
    if spec == "movielens-100k":
        if data_root is None:
            raise CatalogError("--catalog movielens-100k needs --data-root pointing at your MovieLens-100K copy")
        return load_movielens_100k(Path(data_root), max_image_pixels=max_image_pixels)
    return load_catalog_folder(Path(spec), max_image_pixels=max_image_pixels, media_limits=media_limits)


def load_movielens_100k(root: Path, *, max_image_pixels: int = 40_000_000) -> Catalog:
    """MovieLens-100K with plots and posters (``items.csv`` + ``posters/``), read in place.

    Title and genres are always there; description, director, cast and poster are used when present,
    so a movie without a plot or poster still gets a vector.
    """
    import pandas as pd

    items_csv = root / "items.csv"
    if not items_csv.is_file():
        raise CatalogError(f"{items_csv} not found; --data-root must be the folder holding items.csv and posters/")
    frame = pd.read_csv(items_csv, dtype=str, keep_default_na=False)
    items: list[Item] = []
    problems: list[RowProblem] = []
    for i, record in enumerate(frame.to_dict(orient="records")):
        row = i + 2
        item_id, title = _as_text(record.get("item_id")), _as_text(record.get("title"))
        if not item_id or not title:
            problems.append(RowProblem(row, item_id or None, "missing item_id or title", True))
            continue
        details = []
        if _as_text(record.get("description")):
            details.append(_as_text(record["description"]))
        if _as_text(record.get("director")):
            details.append("Director: " + ", ".join(_as_list(record["director"])) + ".")
        if _as_text(record.get("cast")):
            details.append("Cast: " + ", ".join(_as_list(record["cast"])[:5]) + ".")
        poster = None
        rel = _as_text(record.get("poster_path"))
        if rel:
            candidate = (root / rel).resolve()
            if candidate.is_file() and candidate.is_relative_to(root.resolve()):
                poster = candidate
            else:
                problems.append(RowProblem(row, item_id, f"poster {rel!r} not found; item kept without an image", False))
        genres = tuple(g for g in _as_list(record.get("genres")) if g != "unknown")
        items.append(
            Item(
                item_id=item_id,
                title=title,
                description=" ".join(details),
                genres=genres,
                image=poster,
                license="research use only (MovieLens terms)",
                attribution=MOVIELENS_ATTRIBUTION,
                url=_as_text(record.get("imdb_title_url")) or _as_text(record.get("imdb_url")),
            )
        )
    if problems:
        log.info("movielens-100k: %d row problem(s), e.g. %s", len(problems), problems[0])
    return Catalog(
        name="MovieLens-100K",
        root=root,
        items=tuple(items),
        problems=tuple(problems),
        description="1,682 movies from MovieLens-100K (research use only).",
    )
