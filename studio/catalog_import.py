"""Import a catalog an admin uploads as a zip: refuse anything that could escape or exhaust the server.

The zip holds a catalog folder in the generic format (``items.csv`` or ``items.jsonl`` plus images,
see README "Bring your own catalog"), at its top level or inside one folder. Before anything is
extracted every entry is checked: no absolute paths, no ``..`` components, no links, no device files,
at most ``max_entries`` entries, and a total unpacked size and per-entry compression ratio below
limits (a zip bomb unpacks to gigabytes from kilobytes). The catalog is then extracted into a
temporary folder, loaded with the same checks as ``--catalog FOLDER`` (missing columns refuse the
whole import; rows with duplicate ids, images outside the folder etc. are skipped and listed), and
only then renamed to ``<data dir>/catalogs/<name>``. Serving it is a restart with ``--catalog``: the
features of a new catalog take minutes to extract and every open page would lose its state.
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from recsys_core.data.catalog import load_catalog_folder
from recsys_core.config import LimitsConfig
from recsys_core.errors import CatalogError, InvalidInputError

log = logging.getLogger(__name__)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


@dataclass(frozen=True)
class ImportLimits:
    max_entries: int = 100_000
    max_unpacked_bytes: int = 2 * 1024**3  # 2 GiB: a large image catalog, far below a zip bomb
    max_ratio: float = 200.0  # images and CSV rarely compress beyond 10x; bombs compress 1000x+
    max_image_pixels: int = LimitsConfig.max_image_pixels


@dataclass(frozen=True)
class ImportReport:
    name: str
    folder: Path
    items: int
    problems: tuple[str, ...]

    @property
    def command(self) -> str:
        return f"python app.py --catalog {self.folder}"


def _check_entry(info: zipfile.ZipInfo, limits: ImportLimits) -> None:
    name = info.filename
    path = PurePosixPath(name.replace("\\", "/"))
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise InvalidInputError(f"the zip entry {name!r} has an absolute path; entries must be relative")
    if ".." in path.parts:
        raise InvalidInputError(f"the zip entry {name!r} climbs out of the folder ('..'); nothing was imported")
    kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip tool recorded no Unix file type
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise InvalidInputError(f"the zip entry {name!r} is a link or special file; only files and folders are allowed")
    if info.compress_size and info.file_size / info.compress_size > limits.max_ratio and info.file_size > 1024**2:
        raise InvalidInputError(f"the zip entry {name!r} unpacks {info.file_size / info.compress_size:,.0f}x its size "
                                f"(limit {limits.max_ratio:,.0f}x): refused as a possible zip bomb")


def _catalog_root(folder: Path) -> Path:
    if (folder / "items.csv").is_file() or (folder / "items.jsonl").is_file():
        return folder
    children = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
    if len(children) == 1 and children[0].is_dir():
        return _catalog_root(children[0]) if children[0] != folder else folder
    raise InvalidInputError("the zip has no items.csv or items.jsonl at its top level or inside one folder")


def import_catalog_zip(zip_path: str | Path, name: str, catalogs_dir: Path,
                       limits: ImportLimits = ImportLimits()) -> ImportReport:
    """Validate and unpack ``zip_path`` into ``catalogs_dir/name``; raises :class:`InvalidInputError` on refusal
    (then nothing is left behind)."""
    name = (name or "").strip()
    if not NAME_PATTERN.match(name):
        raise InvalidInputError(f"catalog name {name!r} is not allowed; use 1-64 letters, digits, '-' or '_'")
    target = Path(catalogs_dir) / name
    if target.exists():
        raise InvalidInputError(f"a catalog called {name!r} already exists; choose another name")
    if not zipfile.is_zipfile(zip_path):
        raise InvalidInputError("the file is not a zip archive; upload a .zip of the catalog folder")
    with zipfile.ZipFile(zip_path) as archive:
        entries = archive.infolist()
        if len(entries) > limits.max_entries:
            raise InvalidInputError(f"the zip has {len(entries):,} entries; the limit is {limits.max_entries:,}")
        for info in entries:
            _check_entry(info, limits)
        total = sum(info.file_size for info in entries)
        if total > limits.max_unpacked_bytes:
            raise InvalidInputError(f"the zip unpacks to {total:,} bytes; the limit is {limits.max_unpacked_bytes:,}")
        catalogs_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".import-", dir=catalogs_dir))
        try:
            # Every entry was checked above; extractall also strips '..' and absolute parts itself.
            archive.extractall(work)
            root = _catalog_root(work)
            try:
                catalog = load_catalog_folder(root, max_image_pixels=limits.max_image_pixels)
            except CatalogError as exc:  # name the upload, not our temporary folder
                raise InvalidInputError(str(exc).replace(str(root), "the zip").replace(root.name, name)) from None
            root.rename(target)
        except Exception:
            shutil.rmtree(work, ignore_errors=True)
            raise
        shutil.rmtree(work, ignore_errors=True)
    log.info("imported catalog %s: %d items, %d row problem(s)", name, len(catalog.items), len(catalog.problems))
    return ImportReport(name=name, folder=target, items=len(catalog.items),
                        problems=tuple(str(p) for p in catalog.problems))
