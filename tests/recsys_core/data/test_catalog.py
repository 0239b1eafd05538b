"""Catalog loading (CSV/JSONL), row problems with row numbers, path safety, search, named catalogs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from tests.imaging import header_only_png
from recsys_core.data.adapters import resolve_catalog
from recsys_core.data.catalog import Item, RowProblem, _split_camel, genre_label, load_catalog_folder
from recsys_core.errors import CatalogError, UnknownItemError
from tests.conftest import MOVIELENS


def _png(path: Path, colour=(10, 20, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)



def _summary(problems) -> list[tuple[int, str | None, bool]]:
    return [(p.row, p.item_id, p.skipped) for p in problems]


# -- CSV ---------------------------------------------------------------------------------------------


@pytest.fixture
def messy_csv(tmp_path: Path) -> Path:
    folder = tmp_path / "cat"
    _png(folder / "images" / "a.png")
    _png(folder / "images" / "g.png")
    (folder / "images" / "fake.png").write_text("this is not an image", encoding="utf-8")
    (folder / "images" / "notes.txt").write_text("hello", encoding="utf-8")
    _png(tmp_path / "outside.png")  # exists, but outside the catalog folder
    absolute = tmp_path / "outside.png"
    lines = [
        "item_id,title,description,genres,tags,image,extra_images,license_file",  # line 1
        "a,Alpha,first item,BoardGame|CardGame,t1|t2,images/a.png,images/a.png|images/nope.png,",  # 2
        ",No Id,x,,,,,",  # 3 missing item_id
        "b,,no title,,,,,",  # 4 missing title
        "a,Alpha again,dup,,,,,",  # 5 duplicate
        "c,Gamma,,,,images/missing.png,,",  # 6 image not found
        "d,Delta,,,,images/fake.png,,",  # 7 unreadable image
        "e,Epsilon,,,,../outside.png,,",  # 8 traversal
        f"f,Phi,,,,{absolute},,",  # 9 absolute path
        "g,Gee,,StrategyGame,,images/g.png,,../secret.txt",  # 10 license_file outside
        "h,Eta,,,,images/notes.txt,,",  # 11 suffix not allowed
    ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_csv_keeps_good_rows_in_order(messy_csv: Path) -> None:
    catalog = load_catalog_folder(messy_csv)
    assert catalog.ids == ["a", "c", "d", "e", "f", "g", "h"]
    assert catalog.name == "cat"
    a = catalog.get("a")
    assert a.genres == ("BoardGame", "CardGame")
    assert a.tags == ("t1", "t2")
    assert a.image == (messy_csv / "images" / "a.png").resolve()
    assert a.extra_images == ((messy_csv / "images" / "a.png").resolve(),)
    assert catalog.get("g").image == (messy_csv / "images" / "g.png").resolve()
    assert catalog.get("g").license_file is None
    for kept_without_image in ("c", "d", "e", "f", "h"):
        assert catalog.get(kept_without_image).image is None


def test_csv_problems_have_header_based_row_numbers(messy_csv: Path) -> None:
    catalog = load_catalog_folder(messy_csv)
    assert _summary(catalog.problems) == [
        (2, "a", False),  # extra image left out
        (3, None, True),
        (4, "b", True),
        (5, "a", True),
        (6, "c", False),
        (7, "d", False),
        (8, "e", False),
        (9, "f", False),
        (10, "g", False),
        (11, "h", False),
    ]
    by_row = {p.row: p.message for p in catalog.problems}
    assert "images/nope.png" in by_row[2] and "not found" in by_row[2] and "extra image left out" in by_row[2]
    assert by_row[3] == "missing item_id"
    assert by_row[4] == "missing title"
    assert by_row[5] == "duplicate item_id (first seen in row 2)"
    assert "not found" in by_row[6] and "item kept without an image" in by_row[6]
    assert "unreadable" in by_row[7] and "item kept without an image" in by_row[7]
    assert "outside the catalog folder" in by_row[8]
    assert "is absolute" in by_row[9]
    assert by_row[10].startswith("license_file:") and "outside the catalog folder" in by_row[10]
    assert "suffix '.txt'" in by_row[11]


def test_row_problem_str() -> None:
    assert str(RowProblem(5, "a", "duplicate item_id", True)) == "row 5 (item 'a'): duplicate item_id [skipped]"
    assert str(RowProblem(3, None, "missing item_id", True)) == "row 3: missing item_id [skipped]"
    assert str(RowProblem(7, "d", "no image", False)) == "row 7 (item 'd'): no image [kept]"


def test_csv_missing_required_column_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "items.csv").write_text("id,title\n1,One\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="lacks required column\\(s\\) item_id;"):
        load_catalog_folder(folder)
    (folder / "items.csv").write_text("item_id,name\n1,One\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="lacks required column\\(s\\) title;"):
        load_catalog_folder(folder)


def test_no_items_file_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="neither items.csv nor items.jsonl"):
        load_catalog_folder(tmp_path)
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog_folder(tmp_path / "nope")


def test_all_rows_bad_is_a_catalog_error(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text("item_id,title\n,x\ny,\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="no usable items"):
        load_catalog_folder(tmp_path)


def test_catalog_json_metadata_and_invalid_catalog_json(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text("item_id,title\n1,One\n", encoding="utf-8")
    (tmp_path / "catalog.json").write_text(json.dumps({"name": "My shop", "description": "things"}), encoding="utf-8")
    catalog = load_catalog_folder(tmp_path)
    assert (catalog.name, catalog.description, catalog.problems) == ("My shop", "things", ())
    (tmp_path / "catalog.json").write_text("{not json", encoding="utf-8")
    catalog = load_catalog_folder(tmp_path)
    assert catalog.name == tmp_path.name
    assert _summary(catalog.problems) == [(0, None, False)]
    assert catalog.problems[0].message.startswith("catalog.json ignored")


def test_oversized_image_header_is_kept_without_image(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "big.png").write_bytes(header_only_png(300, 300))
    (tmp_path / "items.csv").write_text("item_id,title,image\nbig,Big,images/big.png\n", encoding="utf-8")
    catalog = load_catalog_folder(tmp_path, max_image_pixels=10_000)
    assert catalog.get("big").image is None
    assert _summary(catalog.problems) == [(2, "big", False)]
    assert "300x300; the limit is 10,000 pixels" in catalog.problems[0].message


def test_decompression_bomb_image_does_not_stop_catalog_loading(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "bomb.png").write_bytes(header_only_png(30000, 30000))
    (tmp_path / "items.csv").write_text("item_id,title,image\nbomb,Bomb,images/bomb.png\nok,Ok,\n", encoding="utf-8")
    catalog = load_catalog_folder(tmp_path)
    assert catalog.ids == ["bomb", "ok"]
    assert catalog.get("bomb").image is None
    assert _summary(catalog.problems) == [(2, "bomb", False)]


# -- JSONL -------------------------------------------------------------------------------------------


def test_jsonl_loading_and_line_numbers(tmp_path: Path) -> None:
    _png(tmp_path / "images" / "a.png")
    lines = [
        json.dumps({"item_id": "a", "title": "Alpha", "genres": ["BoardGame", "StrategyGame"], "tags": ["x", " "],
                    "image": "images/a.png", "url": "https://example.org"}),  # 1
        "",  # 2 blank: ignored, still counted
        "{not json",  # 3
        "[1, 2]",  # 4
        json.dumps({"title": "no id"}),  # 5
        json.dumps({"item_id": "a", "title": "dup"}),  # 6
        json.dumps({"item_id": 7, "title": "Seven", "genres": "ArcadeGame|CardGame", "image": "../../etc/passwd.png"}),  # 7
    ]
    (tmp_path / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    catalog = load_catalog_folder(tmp_path)
    assert catalog.ids == ["a", "7"]
    a, seven = catalog.items
    assert a.genres == ("BoardGame", "StrategyGame")
    assert a.tags == ("x",)
    assert a.image == (tmp_path / "images" / "a.png").resolve()
    assert a.url == "https://example.org"
    assert seven.genres == ("ArcadeGame", "CardGame")
    assert seven.image is None
    assert _summary(catalog.problems) == [(3, None, True), (4, None, True), (5, None, True), (6, "a", True), (7, "7", False)]
    messages = [p.message for p in catalog.problems]
    assert messages[0].startswith("not valid JSON (")
    assert messages[1] == "a line must be a JSON object"
    assert messages[2] == "missing item_id"
    assert messages[3] == "duplicate item_id (first seen in row 1)"
    assert "outside the catalog folder" in messages[4]


def test_jsonl_preferred_over_csv_and_missing_column(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text("item_id,title\ncsv,From CSV\n", encoding="utf-8")
    (tmp_path / "items.jsonl").write_text(json.dumps({"item_id": "j", "title": "From JSONL"}) + "\n", encoding="utf-8")
    assert load_catalog_folder(tmp_path).ids == ["j"]
    (tmp_path / "items.jsonl").write_text(json.dumps({"item_id": "j", "name": "x"}) + "\n", encoding="utf-8")
    with pytest.raises(CatalogError, match="items.jsonl lacks required column\\(s\\) title"):
        load_catalog_folder(tmp_path)


# -- Item.text, search, ids --------------------------------------------------------------------------


def test_item_text_contains_all_parts() -> None:
    item = Item(item_id="x", title=" Alpha ", description=" first item ", genres=("BoardGame", "RolePlaying"),
                tags=("dice", "cards"))
    assert item.text == "Alpha\nfirst item\nGenres: board game, role playing.\nKeywords: dice, cards."
    assert Item(item_id="y", title="Only").text == "Only"


def test_tiny_catalog_text_splits_camel_case(tiny_catalog) -> None:
    assert tiny_catalog.get("chess").text == (
        "Chess Master\nboard game chess strategy\nGenres: board game, strategy game."
    )


def test_search_multi_word_case_insensitive(tiny_catalog) -> None:
    assert [i.item_id for i in tiny_catalog.search("board game")] == ["checkers", "chess"]
    assert [i.item_id for i in tiny_catalog.search("CHESS")] == ["chess"]
    assert [i.item_id for i in tiny_catalog.search("ARCADE   Shooter")] == ["space"]
    assert tiny_catalog.search("chess arcade") == []
    assert len(tiny_catalog.search("")) == len(tiny_catalog) == 7


def test_search_title_hits_first_then_alphabetical(tiny_catalog) -> None:
    assert [i.item_id for i in tiny_catalog.search("game")] == [
        "noimage", "cards", "checkers", "chess", "puzzle", "racer", "space",
    ]
    assert [i.item_id for i in tiny_catalog.search("game", limit=2)] == ["noimage", "cards"]


def test_search_title_hit_beats_alphabetical_order(tmp_path: Path) -> None:
    (tmp_path / "items.csv").write_text(
        "item_id,title,description\nz,Zeta Chess,\na,Alpha,a chess variant\n", encoding="utf-8"
    )
    catalog = load_catalog_folder(tmp_path)
    assert [i.item_id for i in catalog.search("chess")] == ["z", "a"]


def test_search_genre_filter(tiny_catalog) -> None:
    assert [i.item_id for i in tiny_catalog.search("", genre="ArcadeGame")] == ["racer", "space"]
    assert [i.item_id for i in tiny_catalog.search("arcade", genre="ActionGame")] == ["space"]
    assert tiny_catalog.search("", genre="NoSuchGenre") == []


def test_genres_sorted_by_count_then_name(tiny_catalog) -> None:
    assert tiny_catalog.genres() == ["ArcadeGame", "BoardGame", "StrategyGame", "ActionGame", "CardGame", "LogicGame"]


def test_check_ids_lists_every_unknown_id(tiny_catalog) -> None:
    assert tiny_catalog.check_ids(["cards", "chess"]) == [2, 0]
    with pytest.raises(UnknownItemError) as info:
        tiny_catalog.check_ids(["chess", "nope", "zzz"])
    assert info.value.item_ids == ("nope", "zzz")
    assert str(info.value) == "unknown item id(s): 'nope', 'zzz'; use ids from the catalog"
    with pytest.raises(UnknownItemError) as info:
        tiny_catalog.get("missing")
    assert info.value.item_ids == ("missing",)
    assert "chess" in tiny_catalog and "missing" not in tiny_catalog


def test_unknown_item_error_truncates_long_lists() -> None:
    err = UnknownItemError([str(i) for i in range(8)])
    assert str(err) == "unknown item id(s): '0', '1', '2', '3', '4' (and 3 more); use ids from the catalog"


# -- named catalogs ----------------------------------------------------------------------------------


def test_bundled_demo_catalog() -> None:
    catalog = resolve_catalog("demo")
    assert len(catalog) == 189
    assert all(item.image is not None and item.image.is_file() for item in catalog.items)
    assert catalog.problems == ()
    assert {"org.gnome.Mahjongg", "pychess"} <= set(catalog.ids)
    assert len(set(catalog.ids)) == 189
    assert resolve_catalog(None).ids == catalog.ids
    assert resolve_catalog("").ids == catalog.ids


def test_resolve_catalog_folder_path(tiny_catalog_dir: Path) -> None:
    assert resolve_catalog(str(tiny_catalog_dir)).ids == [
        "chess", "checkers", "cards", "space", "racer", "puzzle", "noimage",
    ]


def test_movielens_needs_data_root() -> None:
    with pytest.raises(CatalogError, match="--data-root"):
        resolve_catalog("movielens-100k")


def test_movielens_wrong_data_root(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="items.csv not found"):
        resolve_catalog("movielens-100k", data_root=tmp_path)


def test_movielens_adapter() -> None:
    if not (MOVIELENS / "items.csv").is_file():
        pytest.skip(f"MovieLens-100K copy not found at {MOVIELENS}")
    catalog = resolve_catalog("movielens-100k", data_root=MOVIELENS)
    assert len(catalog) == 1682
    with_poster = sum(1 for item in catalog.items if item.image is not None)
    assert with_poster >= 1600
    assert all(item.image.is_file() for item in catalog.items if item.image is not None)
    toy = catalog.get("1")
    assert toy.title == "Toy Story (1995)"
    assert "unknown" not in {g for item in catalog.items for g in item.genres}
    assert catalog.name == "MovieLens-100K"


@pytest.mark.parametrize("genre, label", [
    ("BoardGame", "Board game"), ("2DGraphics", "2D graphics"), ("RolePlaying", "Role playing"),
    ("KDE", "KDE"), ("Qt", "Qt"), ("Education", "Education"), ("HTMLParser", "HTML parser"),
    ("3D", "3D"), ("Sci-Fi", "Sci-Fi"), ("board game", "board game"), ("", ""),
])
def test_genre_label_reads_as_words(genre: str, label: str) -> None:
    assert genre_label(genre) == label


def test_genre_label_leaves_the_encoders_text_alone() -> None:
    # The text encoder's form is cached with every text feature: the display fix must not change it.
    assert _split_camel("2DGraphics") == "2 dgraphics" and _split_camel("BoardGame") == "board game"


def test_every_demo_genre_gets_a_readable_label() -> None:
    catalog = load_catalog_folder(Path(__file__).resolve().parents[3] / "assets" / "catalog")
    labels = {g: genre_label(g) for g in catalog.genres()}
    assert labels["2DGraphics"] == "2D graphics" and labels["BoardGame"] == "Board game"
    assert all(" " in label or label in {"Simulation", "Education", "Languages", "Amusement", "Art", "Graphics",
                                         "KDE", "Qt", "Robotics"} for label in labels.values()), labels
