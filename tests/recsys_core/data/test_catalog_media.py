"""Catalog rows with audio and video: good media is kept, bad media is listed and the row kept without it."""

from __future__ import annotations

import json
from pathlib import Path

from recsys_core.data.adapters import resolve_catalog
from recsys_core.data.catalog import load_catalog_folder
from recsys_core.data.media import MediaLimits
from tests.media_fixtures import write_clip, write_tone


def _write(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return folder


def test_audio_video_and_collection_are_read(tiny_media_catalog_dir: Path) -> None:
    catalog = load_catalog_folder(tiny_media_catalog_dir)
    assert not catalog.problems
    track, clip, plain = catalog.get("t0"), catalog.get("clip"), catalog.get("plain")
    assert track.audio is not None and track.audio_source == track.audio and track.collection == "low"
    assert clip.video is not None and clip.video_has_audio and clip.audio_source == clip.video  # its soundtrack
    assert plain.audio_source is None and plain.video is None
    api = clip.to_api()
    assert api["has_audio"] and api["has_video"] and "/" not in json.dumps(api.get("collection", ""))
    assert [i.item_id for i in catalog.search("low")] == ["t0", "t1"]  # the collection is searchable


def test_a_silent_clip_gives_its_item_no_audio(tmp_path: Path) -> None:
    (tmp_path / "c").mkdir()
    write_clip(tmp_path / "c" / "silent.webm", 1.0, with_audio=False)
    catalog = load_catalog_folder(_write(tmp_path / "c", [{"item_id": "s", "title": "S", "video": "silent.webm"}]))
    assert catalog.get("s").video is not None and catalog.get("s").audio_source is None


def test_bad_media_is_listed_with_its_row_and_the_item_kept(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    (folder).mkdir()
    write_tone(folder / "ok.ogg", 1.0)
    write_tone(folder / "long.ogg", 3.0)
    (folder / "notes.txt").write_text("hello")
    (folder / "empty.mp3").write_bytes(b"")
    good = (folder / "ok.ogg").read_bytes()
    (folder / "cut.ogg").write_bytes(good[:40])
    rows = [
        {"item_id": "a", "title": "A", "audio": "ok.ogg"},
        {"item_id": "b", "title": "B", "audio": "notes.txt"},
        {"item_id": "c", "title": "C", "audio": "missing.ogg"},
        {"item_id": "d", "title": "D", "audio": "empty.mp3"},
        {"item_id": "e", "title": "E", "audio": "cut.ogg"},
        {"item_id": "f", "title": "F", "audio": "../outside.ogg"},
        {"item_id": "g", "title": "G", "audio": "long.ogg"},
        {"item_id": "h", "title": "H", "video": "ok.ogg"},  # a sound is not a video
    ]
    catalog = load_catalog_folder(_write(folder, rows), media_limits=MediaLimits(max_audio_seconds=2.0))
    assert catalog.ids == list("abcdefgh")  # nobody is dropped
    assert catalog.get("a").audio is not None
    problems = {p.item_id: p for p in catalog.problems}
    assert set(problems) == set("bcdefgh")
    assert all(not p.skipped and p.row == "abcdefgh".index(p.item_id) + 1 for p in problems.values())
    assert ".txt" in problems["b"].message and "kept without its audio" in problems["b"].message
    assert "2 s" in problems["g"].message or "limit" in problems["g"].message
    assert "outside" in problems["f"].message
    assert "kept without its video" in problems["h"].message
    assert all(catalog.get(i).audio is None for i in "bcdefg")


def test_the_bundled_media_catalog_is_a_named_catalog() -> None:
    folder = Path(__file__).resolve().parents[3] / "assets" / "media"
    if not (folder / "items.jsonl").is_file():
        import pytest

        pytest.skip("assets/media is not built in this checkout")
    catalog = resolve_catalog("media")
    assert len(catalog) > 50 and not [p for p in catalog.problems if p.skipped]
    assert sum(item.audio_source is not None for item in catalog.items) > 50
