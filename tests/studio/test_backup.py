"""studio.backup: periodic label + SQLite backups, written atomically, pruned to the newest N, never raising."""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from pathlib import Path

import pandas as pd
import pytest

from app import parse_config
from storage import FeedbackIn, Repository, default_database_url
from storage.export import pseudonym, read_labels
from storage.views import ANONYMOUS
from studio.backup import BackupConfig, LabelBackup

KEY = b"backup-test-key-0123456789abcdef"


@pytest.fixture
def repo(tmp_path: Path, monkeypatch) -> Repository:
    """A SQLite file database with three judgements by two annotators (and one anonymous)."""
    monkeypatch.setenv("LABEL_EXPORT_KEY", KEY.decode())
    repository = Repository.from_url(default_database_url(tmp_path / "db"))
    for i, (annotator, label) in enumerate([("alice", "like"), ("bob", "dislike"), (None, "like")]):
        repository.add_feedback(FeedbackIn(f"req-{i}", f"item-{i}", label, ("ctx-1", "ctx-2"), "v1",
                                           annotator=annotator))
    yield repository
    repository.engine.dispose()


def _stamps(folder: Path) -> list[str]:
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    return sorted({m["stamp"] for n in names if (m := re.match(r"backup-(?P<stamp>\d{8}T[\d.]+Z)-", n))})


def test_backup_writes_labels_and_database_copy_that_round_trip(repo: Repository, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    result = LabelBackup(repo, BackupConfig(folder=folder)).run_once()

    assert result is not None and result.labels == 3
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in result.files)  # no temporaries or staging folders left behind
    assert [n.split(f"{result.stamp}-")[1] for n in names] == ["labels.csv", "labels.parquet", "recsys.sqlite3"]

    frame = repo.judgements_frame()
    by_csv = read_labels(folder / f"backup-{result.stamp}-labels.csv")
    by_parquet = pd.read_parquet(folder / f"backup-{result.stamp}-labels.parquet")
    for restored in (by_csv, by_parquet):
        assert list(restored["item_id"]) == list(frame["item_id"])
        assert list(restored["label"]) == ["like", "dislike", "like"]
        # Pseudonymised by default: keyed pseudonyms, never the usernames.
        assert list(restored["annotator"][:2]) == [pseudonym("alice", KEY), pseudonym("bob", KEY)]
        assert restored["annotator"].iloc[2] == ANONYMOUS  # kept as is: it names nobody
    pd.testing.assert_frame_equal(by_csv, read_labels(folder / f"backup-{result.stamp}-labels.parquet"))

    copy = sqlite3.connect(folder / f"backup-{result.stamp}-recsys.sqlite3")
    try:
        assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
        assert copy.execute("SELECT count(*) FROM feedback").fetchone() == (3,)
    finally:
        copy.close()


def test_database_copy_is_a_snapshot_and_restores(repo: Repository, tmp_path: Path) -> None:
    result = LabelBackup(repo, BackupConfig(folder=tmp_path / "b", formats=("jsonl",))).run_once()
    assert result is not None
    repo.add_feedback(FeedbackIn("req-later", "item-9", "like", (), "v1", annotator="carol"))
    copy = next(p for p in result.files if p.suffix == ".sqlite3")
    restored = Repository.from_url(f"sqlite:///{copy}")
    try:
        assert restored.count_feedback() == 3  # the later label is not in the earlier backup
        assert set(restored.judgements_frame()["annotator"].dropna()) == {"alice", "bob", ANONYMOUS}  # the copy is not pseudonymised
    finally:
        restored.engine.dispose()
    assert repo.count_feedback() == 4


def test_pseudonymise_off_keeps_usernames(repo: Repository, tmp_path: Path) -> None:
    config = BackupConfig(folder=tmp_path / "b", formats=("parquet",), pseudonymise=False, include_database=False)
    result = LabelBackup(repo, config).run_once()
    assert result is not None and len(result.files) == 1
    assert list(pd.read_parquet(result.files[0])["annotator"][:2]) == ["alice", "bob"]


def test_keeps_only_the_newest_backups_and_nothing_else_is_touched(repo: Repository, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / "backup-not-a-stamp.csv").write_text("mine too")
    backup = LabelBackup(repo, BackupConfig(folder=folder, keep=2))
    results = []
    for _ in range(4):
        results.append(backup.run_once())
        time.sleep(0.01)  # distinct millisecond stamps
    assert all(r is not None for r in results)
    assert _stamps(folder) == sorted(r.stamp for r in results[-2:])
    assert len(list(folder.glob("backup-*Z-*"))) == 2 * 3
    assert (folder / "notes.txt").read_text() == "mine"
    assert (folder / "backup-not-a-stamp.csv").exists()


def test_in_memory_database_backs_up_labels_only(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LABEL_EXPORT_KEY", KEY.decode())
    repository = Repository.from_url("sqlite://")
    repository.add_feedback(FeedbackIn("req-0", "item-0", "like", (), "v1"))
    result = LabelBackup(repository, BackupConfig(folder=tmp_path / "b")).run_once()
    assert result is not None and result.labels == 1
    assert sorted(p.suffix for p in result.files) == [".csv", ".parquet"]


def test_failing_target_logs_and_does_not_raise(repo: Repository, tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    backup = LabelBackup(repo, BackupConfig(folder=blocker / "backups"))
    with caplog.at_level(logging.ERROR, logger="studio.backup"):
        assert backup.run_once() is None
        assert backup.stop() is None  # the shutdown backup fails the same way, quietly
    assert "label backup to" in caplog.text and "failed" in caplog.text


def test_thread_backs_up_periodically_and_once_at_stop(repo: Repository, tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    backup = LabelBackup(repo, BackupConfig(folder=folder, every_minutes=0.05 / 60))  # every 50 ms
    backup.start()
    try:
        deadline = time.monotonic() + 20
        while len(_stamps(folder)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_stamps(folder)) >= 2
    finally:
        final = backup.stop()
    assert final is not None and final.stamp == _stamps(folder)[-1]
    backup.start()  # a stopped backup can start again, but only once at a time
    with pytest.raises(RuntimeError, match="already running"):
        backup.start()
    assert backup.stop(final_backup=False) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"every_minutes": 0}, "interval is 0 minutes"),
    ({"keep": 0}, "keep is 0"),
    ({"formats": ("cornac",)}, "'cornac' not allowed"),
    ({"formats": ()}, "(none given)"),
])
def test_bad_config_says_what_is_allowed(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        BackupConfig(folder=tmp_path, **kwargs)


def test_app_flags_and_environment(monkeypatch, tmp_path: Path) -> None:
    for name in ("BACKUP_DIR", "BACKUP_EVERY", "BACKUP_KEEP"):
        monkeypatch.delenv(name, raising=False)
    assert parse_config([]).backup is None
    config = parse_config(["--backup-dir", str(tmp_path / "b"), "--backup-every", "5", "--backup-keep", "3"])
    assert config.backup == BackupConfig(folder=tmp_path / "b", every_minutes=5.0, keep=3)
    monkeypatch.setenv("BACKUP_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("BACKUP_EVERY", "15")
    config = parse_config([])
    assert config.backup == BackupConfig(folder=tmp_path / "env", every_minutes=15.0, keep=10)
    monkeypatch.setenv("BACKUP_EVERY", "0")
    with pytest.raises(SystemExit):
        parse_config([])
