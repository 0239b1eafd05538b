"""Hostile input through the app's own handlers: every bad upload, text and catalog row is refused with a
clear message or handled safely, nothing is stored on refusal, and user text is escaped before display."""

from __future__ import annotations

import os
import re
from pathlib import Path

import gradio as gr
import pytest
from PIL import Image

from recsys_core.data.catalog import Item, load_catalog_folder
from recsys_core.errors import CatalogError, InvalidInputError
from storage import Repository
from tests.imaging import encoded, header_only_png
from ui import render
from ui.handlers import Handlers


def _jpeg_with_exif_rotation() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° on display
    return encoded(Image.new("RGB", (40, 20), (200, 0, 0)), "JPEG", exif=exif.tobytes())


def _animated_gif() -> bytes:
    frames = [Image.new("P", (16, 16), i) for i in (1, 50, 100)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)


REFUSED = {  # file name -> (bytes, what the message must say)
    "empty.png": (b"", "is empty"),
    "truncated.jpg": (encoded(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:200], "could not be read as an image"),
    "notes.png": (b"just some text renamed to .png\n" * 10, "could not be read as an image"),
    "bomb.png": (header_only_png(30000, 30000), "the limit is 40,000,000 pixels"),
    "script.svg": (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "could not be read as an image"),
    "huge.png": (b"\x89PNG\r\n\x1a\n" + os.urandom(11 * 2**20), "the limit is 10,485,760 bytes"),
}
ACCEPTED = {  # odd but legitimate images: converted to RGB and used
    "cmyk.jpg": encoded(Image.new("CMYK", (32, 32), (0, 200, 200, 0)), "JPEG"),
    "sixteen.png": encoded(Image.new("I;16", (32, 32), 40000)),
    "palette.png": encoded(Image.new("P", (32, 32), 3)),
    "alpha.png": encoded(Image.new("RGBA", (32, 32), (10, 200, 10, 0))),
    "rotated.jpg": _jpeg_with_exif_rotation(),
    "animated.gif": _animated_gif(),
}


@pytest.fixture
def app(tiny_service, tmp_path):
    repository = Repository.from_url(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    return Handlers(tiny_service, repository), repository


def _stored(repository: Repository) -> tuple[int, int]:
    return repository.count_feedback(), repository.count_impressions()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_bad_uploads_are_refused_with_a_clear_message_and_nothing_is_stored(app, tmp_path: Path, name: str) -> None:
    handlers, repository = app
    data, message = REFUSED[name]
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(gr.Error) as info:
        handlers.api_recommend_upload({"path": str(path)}, "", "", 5)
    assert message in str(info.value) and "Traceback" not in str(info.value)
    assert _stored(repository) == (0, 0)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_odd_but_valid_images_are_handled(app, tmp_path: Path, name: str) -> None:
    handlers, repository = app
    path = tmp_path / name
    path.write_bytes(ACCEPTED[name])
    recs = handlers.api_recommend_upload({"path": str(path)}, "", "", 3)
    assert len(recs) == 3 and all(r["item_id"] for r in recs)
    assert repository.count_impressions() == 3


@pytest.mark.parametrize("title", [
    "<script>alert('x')</script><img src=x onerror=alert(1)>",  # HTML/JS
    "'; DROP TABLE feedback; --",  # SQL-looking
    "bell\x07 null\x00 escape\x1b[31m tab\t",  # control characters
    "لعبة شطرنج \u202eevil\u202c עברית",  # right-to-left text and an override character
    "♟️🎲👾 chess 🧩",  # emoji
])
def test_strange_text_is_handled_safely(app, title: str) -> None:
    handlers, repository = app
    recs = handlers.api_recommend_upload(None, title, title, 3)
    assert len(recs) == 3
    assert handlers.service.search(title) is not None  # search accepts it too (and may find nothing)
    assert repository.count_impressions() == 3  # the tables are intact


def test_a_megabyte_of_text_is_refused(app) -> None:
    handlers, repository = app
    with pytest.raises(gr.Error, match=r"title \+ description is 1,048,578 characters \(title 2, description "
                                       r"1,048,576\); the limit is 10,000 for both together"):
        handlers.api_recommend_upload(None, "ok", "x" * 2**20, 3)
    with pytest.raises(InvalidInputError, match="search text is 1,048,576 characters; the limit is 10,000"):
        handlers.service.search("y" * 2**20)
    assert _stored(repository) == (0, 0)


@pytest.mark.parametrize("item_id, liked, label, request_id, message", [
    ("'; DROP TABLE feedback; --", ["chess"], "like", "r1", "unknown item id"),
    ("checkers", ["<script>"], "like", "r2", "unknown item id"),
    ("checkers", ["chess"], "love", "r3", "label"),
    ("checkers", ["chess"], "like", "", "request_id is empty"),
    ("checkers", ["chess"], "like", "r" * 10_000, "request_id is 10000 characters long"),
    ("checkers", "chess", "like", "r5", "liked_ids must be a list"),
])
def test_bad_feedback_is_refused_and_nothing_is_stored(app, item_id, liked, label, request_id, message) -> None:
    handlers, repository = app
    with pytest.raises(gr.Error, match=message):
        handlers.api_feedback(liked, item_id, label, request_id, None)
    assert repository.count_feedback() == 0


def test_user_and_catalog_text_is_escaped_before_display() -> None:
    evil = Item(item_id="x", title="<img src=x onerror=alert(1)>", description="<script>steal()</script>",
                genres=("<b>g</b>",))
    html = render.item_details(evil)
    assert "<img" not in html and "<script" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert render.esc("\"'<>&") == "&quot;&#x27;&lt;&gt;&amp;"


def _catalog(tmp_path: Path, header: str, *rows: str) -> Path:
    folder = tmp_path / "cat"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(folder / "images" / "a.png")
    (tmp_path / "secret.png").write_bytes(encoded(Image.new("RGB", (8, 8))))
    (folder / "items.csv").write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return folder


def test_catalog_import_refuses_traversal_absolute_paths_and_duplicates(tmp_path: Path) -> None:
    folder = _catalog(tmp_path, "item_id,title,image",
                      "a,Alpha,images/a.png",
                      "b,Beta,../secret.png",
                      f"c,Gamma,{tmp_path / 'secret.png'}",
                      "a,Alpha twin,images/a.png")
    catalog = load_catalog_folder(folder)
    assert [i.item_id for i in catalog.items] == ["a", "b", "c"]
    problems = {p.row: p.message for p in catalog.problems}
    assert catalog.get("b").image is None and catalog.get("c").image is None  # never read outside the folder
    text = " ".join(problems.values())
    assert "outside" in text or "escapes" in text or "../" in text
    assert "absolute" in text and "duplicate" in text


def test_catalog_import_without_required_columns_is_refused(tmp_path: Path) -> None:
    folder = _catalog(tmp_path, "name,image", "Alpha,images/a.png")
    with pytest.raises(CatalogError, match="item_id"):
        load_catalog_folder(folder)


# -- catalog import by an admin (a zip through the Admin tab or /import_catalog) --------------------------

def _zip(tmp_path: Path, entries: dict[str, bytes], *, links: dict[str, str] | None = None) -> Path:
    import stat
    import zipfile

    path = tmp_path / "upload.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, target)
    return path


GOOD_CSV = b"item_id,title,image\na,Alpha,images/a.png\nb,Beta,\n"


@pytest.mark.parametrize("entries, links, message", [
    ({"items.csv": GOOD_CSV, "../evil.txt": b"x"}, None, "climbs out of the folder"),
    ({"items.csv": GOOD_CSV, "/etc/evil.txt": b"x"}, None, "has an absolute path"),
    ({"items.csv": GOOD_CSV}, {"images/a.png": "/etc/passwd"}, "is a link or special file"),
    ({"items.csv": GOOD_CSV, "big.bin": b"\0" * (30 * 2**20)}, None, "possible zip bomb"),
    ({"items.csv": b"name,image\nAlpha,\n"}, None, "lacks required column(s) item_id, title"),
    ({"items.csv": b"item_id,title\n,\n"}, None, "catalog 'mine' has no usable items"),
    ({"readme.txt": b"hello"}, None, "no items.csv or items.jsonl"),
])
def test_catalog_zip_import_refuses_escapes_links_bombs_and_bad_tables(tmp_path: Path, entries, links,
                                                                       message) -> None:
    from studio.catalog_import import import_catalog_zip

    catalogs = tmp_path / "catalogs"
    with pytest.raises((InvalidInputError, CatalogError), match=re.escape(message)):
        import_catalog_zip(_zip(tmp_path, entries, links=links), "mine", catalogs)
    assert not (catalogs / "mine").exists() and not list(catalogs.glob(".import-*"))  # nothing left behind
    assert not (tmp_path / "evil.txt").exists()


def test_catalog_zip_import_keeps_good_rows_and_lists_bad_ones(tmp_path: Path) -> None:
    from studio.catalog_import import import_catalog_zip

    csv = b"item_id,title,image\na,Alpha,images/a.png\nb,Beta,../../secret.png\na,Alpha twin,\n"
    entries = {"games/items.csv": csv, "games/images/a.png": encoded(Image.new("RGB", (8, 8)))}
    report = import_catalog_zip(_zip(tmp_path, entries), "games-2", tmp_path / "catalogs")
    assert report.items == 2 and report.folder == tmp_path / "catalogs" / "games-2"
    assert any("outside the catalog folder" in p for p in report.problems)
    assert any("duplicate item_id" in p for p in report.problems)
    assert load_catalog_folder(report.folder).get("a").image is not None
    with pytest.raises(InvalidInputError, match="already exists"):
        import_catalog_zip(_zip(tmp_path, entries), "games-2", tmp_path / "catalogs")
    with pytest.raises(InvalidInputError, match="is not allowed"):
        import_catalog_zip(_zip(tmp_path, entries), "../up", tmp_path / "catalogs")
    with pytest.raises(InvalidInputError, match="not a zip archive"):
        (tmp_path / "fake.zip").write_bytes(b"PK not really")
        import_catalog_zip(tmp_path / "fake.zip", "other", tmp_path / "catalogs")
