"""Catalog folders: load, validate and search the items the app recommends.

Generic format (what users bring): a folder with ``items.csv`` or ``items.jsonl`` whose columns are

=================  ========  ==========================================================
``item_id``        required  unique id (kept as a string)
``title``          required  display name
``description``    optional  free text
``genres``         optional  ``|``-separated (CSV) or a list (JSONL); used by the genre filter
``tags``           optional  ``|``-separated or a list; searched and embedded, not filtered on
``image``          optional  path relative to the folder
``extra_images``   optional  ``|``-separated or a list of relative paths (screenshots)
``audio``          optional  path of a sound file (ogg, oga, opus, mp3, wav, flac): a track, an excerpt
``video``          optional  path of a clip (webm, ogv, mp4); its soundtrack counts as the item's audio
                             when the item has no ``audio`` of its own
``collection``     optional  the album, game or series the item belongs to (shown; used by benchmarks)
``license``        optional  short licence of the item's image/text
``license_file``   optional  relative path of the licence/copyright file
``attribution``    optional  who made it / where it comes from (shown in the app)
``url``            optional  home page
=================  ========  ==========================================================

Bad rows never stop the catalog from loading: they are skipped (missing id or title, duplicate id)
or kept without their image, audio or video (missing, unreadable, too long: only the header is read,
see :func:`recsys_core.data.media.probe_media`), and every problem is reported with its row number
(the line number in the file, header = line 1 for CSV).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from recsys_core.errors import CatalogError, UnknownItemError

if TYPE_CHECKING:
    from recsys_core.data.media import MediaLimits

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("item_id", "title")
OPTIONAL_COLUMNS = (
    "description", "genres", "tags", "image", "extra_images", "audio", "video", "collection",
    "license", "license_file", "attribution", "url",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class Item:
    item_id: str
    title: str
    description: str = ""
    genres: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    image: Path | None = None
    extra_images: tuple[Path, ...] = ()
    license: str = ""
    license_file: Path | None = None
    attribution: str = ""
    url: str = ""
    audio: Path | None = None
    video: Path | None = None
    video_has_audio: bool = False  # the clip carries a soundtrack (read from its header when the catalog loads)
    collection: str = ""

    @property
    def audio_source(self) -> Path | None:
        """What the audio encoder reads: the item's own audio, else its video's soundtrack (None: no audio)."""
        if self.audio is not None:
            return self.audio
        return self.video if self.video is not None and self.video_has_audio else None

    @property
    def text(self) -> str:
        """What the text encoder reads: title, description, genres and tags."""
        parts = [self.title.strip()] if self.title.strip() else []
        if self.description.strip():
            parts.append(self.description.strip())
        if self.genres:
            parts.append("Genres: " + ", ".join(_split_camel(g) for g in self.genres) + ".")
        if self.tags:
            parts.append("Keywords: " + ", ".join(self.tags) + ".")
        return "\n".join(parts)

    def to_api(self) -> dict[str, object]:
        """The item's metadata for API clients; says whether it has images, never where they are on the server."""
        return {"item_id": self.item_id, "title": self.title, "description": self.description,
                "genres": list(self.genres), "tags": list(self.tags), "has_image": self.image is not None,
                "screenshots": len(self.extra_images), "license": self.license, "attribution": self.attribution,
                "url": self.url, "has_audio": self.audio_source is not None, "has_video": self.video is not None,
                "collection": self.collection}


@dataclass(frozen=True)
class RowProblem:
    row: int
    item_id: str | None
    message: str
    skipped: bool  # True: the row was left out; False: kept with the problem fixed (e.g. no image)

    def __str__(self) -> str:
        who = f" (item {self.item_id!r})" if self.item_id else ""
        action = "skipped" if self.skipped else "kept"
        return f"row {self.row}{who}: {self.message} [{action}]"


@dataclass(frozen=True)
class Catalog:
    name: str
    root: Path
    items: tuple[Item, ...]
    problems: tuple[RowProblem, ...] = ()
    description: str = ""
    _by_id: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.items:
            raise CatalogError(f"catalog {self.name!r} has no usable items")
        self._by_id.update({item.item_id: i for i, item in enumerate(self.items)})

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._by_id

    @property
    def ids(self) -> list[str]:
        return [item.item_id for item in self.items]

    def index_of(self, item_id: str) -> int:
        try:
            return self._by_id[item_id]
        except KeyError:
            raise UnknownItemError([item_id]) from None

    def get(self, item_id: str) -> Item:
        return self.items[self.index_of(item_id)]

    def check_ids(self, item_ids: Iterable[str]) -> list[int]:
        """Indices of ``item_ids``; one error listing every unknown id."""
        ids = list(item_ids)
        unknown = [i for i in ids if i not in self._by_id]
        if unknown:
            raise UnknownItemError(unknown)
        return [self._by_id[i] for i in ids]

    def genres(self) -> list[str]:
        counts: dict[str, int] = {}
        for item in self.items:
            for genre in item.genres:
                counts[genre] = counts.get(genre, 0) + 1
        return sorted(counts, key=lambda g: (-counts[g], g.lower()))

    def search(self, query: str = "", genre: str | None = None, limit: int | None = None) -> list[Item]:
        """Items whose title/genres/tags/description contain every word of ``query``.

        Title hits come first, then alphabetical order, so typing a name finds it at the top.
        """
        words = [w for w in query.lower().split() if w]
        hits: list[tuple[int, str, Item]] = []
        for item in self.items:
            if genre and genre not in item.genres:
                continue
            title = item.title.lower()
            haystack = " ".join([title, " ".join(item.genres), " ".join(item.tags), item.collection,
                                 item.description]).lower()
            if all(w in haystack for w in words):
                in_title = sum(w in title for w in words)
                hits.append((-in_title, title, item))
        hits.sort(key=lambda h: (h[0], h[1]))
        found = [h[2] for h in hits]
        return found[:limit] if limit else found


def _split_camel(name: str) -> str:
    """``BoardGame`` -> ``board game`` so the text encoder reads words, not one rare token."""
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i > 0 and not name[i - 1].isupper():
            out.append(" ")
        out.append(ch.lower())
    return "".join(out)


# A run of digits with the capitals after it is one word ("2DGraphics" -> "2D", "Graphics"); so is a run of
# capitals not followed by a lower-case letter (an acronym: "KDE", "HTMLParser" -> "HTML", "Parser").
_GENRE_WORDS = re.compile(r"\d+[A-Z]*(?![a-z])|[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def genre_label(genre: str) -> str:
    """A genre id as people read it: ``BoardGame`` -> ``Board game``, ``2DGraphics`` -> ``2D graphics``,
    ``KDE`` and ``Qt`` stay. For display only: the encoders read :func:`_split_camel`'s form, and changing
    that would change every cached text feature. Ids that are not CamelCase words are returned as they are."""
    if not genre.isalnum():
        return genre
    words = _GENRE_WORDS.findall(genre)
    if "".join(words) != genre:
        return genre
    # Later words lower-cased unless an acronym or a digit run ("2D"); the first keeps its capital.
    return " ".join([words[0]] + [w if (w.isupper() or w[0].isdigit()) else w.lower() for w in words[1:]])


def _as_list(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    text = str(value).strip()
    return tuple(p.strip() for p in text.split("|") if p.strip()) if text else ()


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from pandas
        return ""
    return str(value).strip()


def _read_rows(folder: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[RowProblem], str]:
    """Rows with their line numbers, unparsable lines, and the file name used."""
    csv_path, jsonl_path = folder / "items.csv", folder / "items.jsonl"
    problems: list[RowProblem] = []
    if jsonl_path.is_file():
        rows = []
        with jsonl_path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append(RowProblem(lineno, None, f"not valid JSON ({exc.msg})", True))
                    continue
                if not isinstance(record, dict):
                    problems.append(RowProblem(lineno, None, "a line must be a JSON object", True))
                    continue
                rows.append((lineno, record))
        columns = {key for _, record in rows for key in record}
        name = jsonl_path.name
    elif csv_path.is_file():
        import pandas as pd  # imported here: pandas is slow to import and only CSV needs it

        try:
            frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8")
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            raise CatalogError(f"{csv_path} could not be parsed as CSV: {exc}") from exc
        columns = set(frame.columns)
        # Header is line 1, so data row i is line i + 2 (ignores quoted newlines, rare in catalogs).
        rows = [(i + 2, record) for i, record in enumerate(frame.to_dict(orient="records"))]
        name = csv_path.name
    else:
        raise CatalogError(f"{folder} has neither items.csv nor items.jsonl; see the catalog format in README.md")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns] if rows else []
    if missing:
        raise CatalogError(
            f"{folder / name} lacks required column(s) {', '.join(missing)}; "
            f"required: {', '.join(REQUIRED_COLUMNS)}; optional: {', '.join(OPTIONAL_COLUMNS)}"
        )
    return rows, problems, name


def _resolve_inside(folder: Path, relative: str) -> Path:
    """``folder/relative`` if it stays inside ``folder``; refuses ``../`` escapes and absolute paths."""
    if Path(relative).is_absolute():
        raise ValueError(f"path {relative!r} is absolute; use a path relative to the catalog folder")
    resolved = (folder / relative).resolve()
    if not resolved.is_relative_to(folder.resolve()):
        raise ValueError(f"path {relative!r} points outside the catalog folder")
    return resolved


def _check_image(folder: Path, relative: str, max_pixels: int) -> Path:
    """Resolve and cheaply validate an image (header only); raises ValueError with the reason."""
    from PIL import Image, UnidentifiedImageError

    path = _resolve_inside(folder, relative)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ValueError(f"image {relative!r} has suffix {path.suffix!r}; allowed: {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise ValueError(f"image {relative!r} not found")
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise ValueError(f"image {relative!r} is too large to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"image {relative!r} is unreadable ({type(exc).__name__})") from exc
    if width * height > max_pixels:
        raise ValueError(f"image {relative!r} is {width}x{height}; the limit is {max_pixels:,} pixels")
    return path


def _check_media(folder: Path, relative: str, kind: str, limits: "MediaLimits | None"):
    """Resolve and cheaply validate an audio or video file (header only); raises ValueError with the reason."""
    from recsys_core.data.media import MediaLimits, probe_media
    from recsys_core.errors import InvalidInputError

    limits = limits or MediaLimits()
    path = _resolve_inside(folder, relative)
    try:
        return path, probe_media(path, kind, limits, name=relative)
    except InvalidInputError as exc:
        raise ValueError(str(exc)) from exc


def load_catalog_folder(folder: str | Path, *, max_image_pixels: int = 40_000_000,
                        media_limits: "MediaLimits | None" = None) -> Catalog:
    """Load a catalog in the generic format; see the module docstring. ``media_limits``: the size and
    duration limits of audio and video (``--max-audio-seconds``, ``--max-video-seconds``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CatalogError(f"catalog folder {folder} does not exist")
    rows, problems, file_name = _read_rows(folder)
    meta: dict[str, Any] = {}
    if (folder / "catalog.json").is_file():
        try:
            meta = json.loads((folder / "catalog.json").read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            problems.append(RowProblem(0, None, f"catalog.json ignored: {exc.msg}", False))
    items: list[Item] = []
    seen: dict[str, int] = {}
    for row, record in rows:
        item_id = _as_text(record.get("item_id"))
        title = _as_text(record.get("title"))
        if not item_id:
            problems.append(RowProblem(row, None, "missing item_id", True))
            continue
        if item_id in seen:
            problems.append(RowProblem(row, item_id, f"duplicate item_id (first seen in row {seen[item_id]})", True))
            continue
        if not title:
            problems.append(RowProblem(row, item_id, "missing title", True))
            continue
        seen[item_id] = row
        image: Path | None = None
        if _as_text(record.get("image")):
            try:
                image = _check_image(folder, _as_text(record.get("image")), max_image_pixels)
            except ValueError as exc:
                problems.append(RowProblem(row, item_id, f"{exc}; item kept without an image", False))
        extra: list[Path] = []
        for rel in _as_list(record.get("extra_images")):
            try:
                extra.append(_check_image(folder, rel, max_image_pixels))
            except ValueError as exc:
                problems.append(RowProblem(row, item_id, f"{exc}; extra image left out", False))
        media: dict[str, Path | None] = {"audio": None, "video": None}
        video_has_audio = False
        for kind in ("audio", "video"):
            if _as_text(record.get(kind)):
                try:
                    media[kind], info = _check_media(folder, _as_text(record.get(kind)), kind, media_limits)
                    video_has_audio = video_has_audio or (kind == "video" and info.has_audio)
                except ValueError as exc:
                    problems.append(RowProblem(row, item_id, f"{exc}; item kept without its {kind}", False))
        license_file: Path | None = None
        if _as_text(record.get("license_file")):
            try:
                license_file = _resolve_inside(folder, _as_text(record.get("license_file")))
            except ValueError as exc:
                problems.append(RowProblem(row, item_id, f"license_file: {exc}", False))
        items.append(
            Item(
                item_id=item_id,
                title=title,
                description=_as_text(record.get("description")),
                genres=_as_list(record.get("genres")),
                tags=_as_list(record.get("tags")),
                image=image,
                extra_images=tuple(extra),
                license=_as_text(record.get("license")),
                license_file=license_file,
                attribution=_as_text(record.get("attribution")),
                url=_as_text(record.get("url")),
                audio=media["audio"],
                video=media["video"],
                video_has_audio=video_has_audio,
                collection=_as_text(record.get("collection")),
            )
        )
    for problem in problems:
        log.warning("%s/%s %s", folder.name, file_name, problem)
    return Catalog(
        name=str(meta.get("name") or folder.name),
        root=folder,
        items=tuple(items),
        problems=tuple(problems),
        description=str(meta.get("description") or ""),
    )
