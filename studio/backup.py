"""Periodic backup of the labels (and a SQLite database) into a folder, e.g. a mounted storage bucket.

``python app.py --backup-dir DIR`` starts :class:`LabelBackup`: a daemon thread that backs up every
``--backup-every`` minutes and once more at clean shutdown. One backup is a set of files sharing one
UTC timestamp::

    backup-20261128T190000.123Z-labels.csv        every judgement (storage.export; pseudonymised by default)
    backup-20261128T190000.123Z-labels.parquet
    backup-20261128T190000.123Z-recsys.sqlite3    SQLite only: a consistent copy of the whole database

The label files are what to share or train on (``storage.export.read_labels`` reads them back with
their types). The database copy is the restore point: stop the app, copy it over the database file.
It holds what the database holds (usernames, the pseudonymisation key), so keep the folder private.
It is taken with sqlite3's online backup API: a consistent snapshot while the app keeps reading and
writing, which a plain file copy of a live WAL database is not. Other databases (PostgreSQL) get the
label files only: back those up with their own tools.

Every file is written under a temporary name in the backup folder and moved into place with
``os.replace``, so a reader (or a bucket sync) never sees a half-written file. The newest ``keep``
backups stay; older files matching the names above are deleted, nothing else in the folder is.
A backup never raises: a failure is logged and the next one tries again, the app keeps serving.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sqlite3
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from storage import Repository

log = logging.getLogger(__name__)

#: Formats a backup may hold: the ones ``storage.export.read_labels`` restores without loss.
BACKUP_FORMATS: Final[tuple[str, ...]] = ("csv", "parquet", "jsonl")
_PREFIX: Final[str] = "backup-"
_STAMP_FORMAT: Final[str] = "%Y%m%dT%H%M%S"
# Milliseconds in the stamp: the shutdown backup can follow a periodic one within the same second.
_NAME = re.compile(r"^backup-(?P<stamp>\d{8}T\d{6}\.\d{3}Z)-")
_STALE_TEMP_S: Final[float] = 3600.0  # a temporary left this long is from a crashed backup


@dataclass(frozen=True)
class BackupConfig:
    folder: Path
    every_minutes: float = 30.0  # between periodic backups; one more runs at clean shutdown
    keep: int = 10  # newest backups kept (each is a set of files with one timestamp)
    formats: tuple[str, ...] = ("csv", "parquet")  # csv to read by eye, parquet to load with types
    pseudonymise: bool = True  # annotators as keyed pseudonyms in the label files (see storage.export)
    include_database: bool = True  # also copy a SQLite database file

    def __post_init__(self) -> None:
        if isinstance(self.every_minutes, bool) or not self.every_minutes > 0:
            raise ValueError(f"backup interval is {self.every_minutes!r} minutes; give a number > 0")
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1:
            raise ValueError(f"backups to keep is {self.keep!r}; give a whole number >= 1")
        unknown = [f for f in self.formats if f not in BACKUP_FORMATS]
        if unknown or not self.formats:
            raise ValueError(f"backup format(s) {', '.join(map(repr, unknown)) or '(none given)'} not allowed; "
                             f"use some of: {', '.join(BACKUP_FORMATS)}")


@dataclass(frozen=True)
class BackupResult:
    stamp: str
    files: tuple[Path, ...]
    labels: int  # judgements in the label files
    seconds: float


class LabelBackup:
    """Back up ``repository`` into ``config.folder``: :meth:`run_once` now, or :meth:`start` / :meth:`stop`."""

    def __init__(self, repository: "Repository", config: BackupConfig) -> None:
        self.repository = repository
        self.config = config
        self._lock = threading.Lock()  # the periodic thread and the shutdown backup never overlap
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sqlite_path = _sqlite_file(repository)

    # -- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> None:
        """Back up every ``every_minutes`` in a daemon thread (the first after one interval)."""
        if self._thread is not None:
            raise RuntimeError("the label backup is already running")
        self._stop.clear()
        what = "labels + database copy" if self._sqlite_path and self.config.include_database else "labels"
        if self._sqlite_path is None and self.config.include_database:
            log.info("the database is not a SQLite file: backups hold the label files only; back the database "
                     "up with its own tools")
        log.info("label backup (%s) to %s every %g min, keeping the newest %d", what, self.config.folder,
                 self.config.every_minutes, self.config.keep)
        self._thread = threading.Thread(target=self._loop, name="label-backup", daemon=True)
        self._thread.start()

    def stop(self, final_backup: bool = True) -> BackupResult | None:
        """Stop the thread and (by default) take one last backup; returns that backup's result."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)  # a running backup finishes first; the lock would wait anyway
            self._thread = None
        return self.run_once() if final_backup else None

    def _loop(self) -> None:
        while not self._stop.wait(self.config.every_minutes * 60):
            self.run_once()

    # -- one backup ---------------------------------------------------------------------------------
    def run_once(self) -> BackupResult | None:
        """Take one backup and prune old ones; logs and returns None on failure (never raises)."""
        with self._lock:
            try:
                result = self._backup()
            except Exception:
                log.exception("label backup to %s failed; the app keeps running and the next backup tries again",
                              self.config.folder)
                return None
            try:
                self._prune()
            except Exception:
                log.exception("pruning old backups in %s failed; the new backup %s was written",
                              self.config.folder, result.stamp)
            log.info("label backup %s: %d judgement(s), %d file(s) in %s (%.2fs)", result.stamp, result.labels,
                     len(result.files), self.config.folder, result.seconds)
            return result

    def _backup(self) -> BackupResult:
        from storage.export import export_labels

        start = time.perf_counter()
        folder = self.config.folder
        folder.mkdir(parents=True, exist_ok=True)
        now = datetime.now(timezone.utc)
        stamp = f"{now.strftime(_STAMP_FORMAT)}.{now.microsecond // 1000:03d}Z"
        frame = self.repository.judgements_frame()
        # Written in a hidden staging folder inside the target (same filesystem), then renamed into place.
        staging = Path(tempfile.mkdtemp(prefix=f".{_PREFIX}{stamp}-", suffix=".tmp", dir=folder))
        files: list[Path] = []
        try:
            written = export_labels(frame, staging, self.config.formats, pseudonymise=self.config.pseudonymise,
                                    repository=self.repository)
            staged = list(written.values())
            if self._sqlite_path is not None and self.config.include_database:
                staged.append(_copy_sqlite(self._sqlite_path, staging / self._sqlite_path.name))
            for path in staged:
                target = folder / f"{_PREFIX}{stamp}-{path.name}"
                os.replace(path, target)
                files.append(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return BackupResult(stamp=stamp, files=tuple(files), labels=len(frame), seconds=time.perf_counter() - start)

    def _prune(self) -> None:
        """Delete backups beyond the newest ``keep`` and temporaries left by crashed backups."""
        folder = self.config.folder
        by_stamp: dict[str, list[Path]] = {}
        for path in folder.iterdir():
            match = _NAME.match(path.name)
            if match and path.is_file():
                by_stamp.setdefault(match["stamp"], []).append(path)
            elif (path.name.startswith(f".{_PREFIX}") and path.name.endswith(".tmp")
                  and time.time() - path.stat().st_mtime > _STALE_TEMP_S):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        # The stamp format sorts chronologically as text.
        for stamp in sorted(by_stamp, reverse=True)[self.config.keep:]:
            for path in by_stamp[stamp]:
                path.unlink(missing_ok=True)
            log.info("deleted old backup %s", stamp)


def _sqlite_file(repository: "Repository") -> Path | None:
    """The database file behind ``repository``, or None (in-memory SQLite, or another database)."""
    from storage.db import is_sqlite_memory_url

    url = repository.engine.url
    if url.get_backend_name() != "sqlite" or is_sqlite_memory_url(url.render_as_string(hide_password=False)):
        return None
    return Path(str(url.database)).expanduser().resolve()


def _copy_sqlite(source: Path, target: Path) -> Path:
    """Consistent copy of a live SQLite database with the online backup API; a single self-contained file."""
    if not source.is_file():
        raise FileNotFoundError(f"SQLite database {source} does not exist; nothing to copy")
    src = sqlite3.connect(source, timeout=30)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # all pages in one step: one read transaction, so one point in time
            # The copy inherits WAL mode; rollback-journal mode makes it one file that opens anywhere.
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    return target
