"""Admin statistics (judgements_frame, like rates, counts) and label exports round-tripped through pandas.

The database-backed tests run on SQLite and on PostgreSQL (see ``make_db_url`` in conftest.py).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from storage import Repository
from storage.export import (
    EXPORT_FORMATS,
    KEY_ENV,
    MMREC_HEADER,
    export_labels,
    pseudonym,
    read_labels,
    resolve_export_key,
)
from storage.views import ANONYMOUS, JUDGEMENT_COLUMNS, is_anonymous

KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def test_read_labels_names_a_missing_annotator_anonymous(tmp_path: Path) -> None:
    """An export written before the anonymous rule (empty annotator) reads back with the rule's name."""
    old = tmp_path / "labels.csv"
    old.write_text(",".join(JUDGEMENT_COLUMNS) + "\n"
                   '1,,"[""a""]",i,like,,False,,v1,,,2024-01-01T00:00:00+00:00\n', encoding="utf-8")
    assert read_labels(old)["annotator"].tolist() == [ANONYMOUS]


# ------------------------------------------------------------------------------ exports


def _frame_without_spaces(repo: Repository) -> pd.DataFrame:
    frame = repo.judgements_frame()
    return frame[~frame["item_id"].str.contains(" ")].reset_index(drop=True)


def _expected_rating(label: str, grade: object) -> float:
    return {"like": 1.0, "dislike": 0.0}.get(label, float(grade) / 3 if grade is not pd.NA else math.nan)


def _plain(value: object) -> object:
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC").isoformat()
    if hasattr(value, "tolist"):  # numpy arrays (parquet lists) and numpy scalars
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return tuple(value)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _normalised(frame: pd.DataFrame) -> list[tuple]:
    """Comparable rows: missing values as None, lists as tuples, timestamps as UTC ISO strings."""
    return [tuple(_plain(v) for v in row) for row in frame.loc[:, list(JUDGEMENT_COLUMNS)].itertuples(index=False)]


def test_every_format_round_trips_through_pandas(filled: Repository, tmp_path: Path) -> None:
    frame = _frame_without_spaces(filled)
    out = export_labels(frame, tmp_path / "export", key=KEY)
    assert set(out) == set(EXPORT_FORMATS)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == sorted(
        ["labels.csv", "labels.parquet", "labels.jsonl", "labels.inter", "cornac_uir.txt"]
    )  # no temporary files left behind
    expected = frame.copy()
    expected["annotator"] = pd.Series([a if is_anonymous(a) else pseudonym(a, KEY) for a in frame["annotator"]],
                                      dtype="object")
    want = _normalised(expected)

    # csv, parquet, jsonl with plain pandas readers ...
    csv = pd.read_csv(out["csv"], keep_default_na=False, na_values={c: [""] for c in
                      ("grade", "task_id", "expected", "annotator", "campaign")},
                      dtype={"item_id": str, "model_version": str, "grade": "Int64", "task_id": "Int64"})
    csv["context_ids"] = csv["context_ids"].map(json.loads)
    csv["created_at"] = pd.to_datetime(csv["created_at"], utc=True, format="ISO8601")
    assert _normalised(csv) == want
    assert _normalised(pd.read_parquet(out["parquet"])) == want
    jsonl = pd.read_json(out["jsonl"], lines=True, dtype={"grade": "Int64", "task_id": "Int64"}, precise_float=True)
    jsonl["created_at"] = pd.to_datetime(jsonl["created_at"], utc=True, format="ISO8601")
    assert _normalised(jsonl) == want
    # ... and with read_labels, which restores judgements_frame's dtypes exactly.
    for fmt in ("csv", "parquet", "jsonl"):
        back = read_labels(out[fmt])
        pd.testing.assert_frame_equal(back, expected, check_dtype=True)

    ratings = [_expected_rating(lbl, g) for lbl, g in zip(frame["label"], frame["grade"])]
    users = [a if is_anonymous(a) else pseudonym(a, KEY) for a in frame["annotator"]]
    stamps = [ts.timestamp() for ts in frame["created_at"]]

    assert out["mmrec"].read_text(encoding="utf-8").splitlines()[0] == MMREC_HEADER
    inter = pd.read_csv(out["mmrec"], sep="\t", dtype={"userID:token": str, "itemID:token": str})
    assert list(inter.columns) == MMREC_HEADER.split("\t")
    assert inter["userID:token"].tolist() == users
    assert inter["itemID:token"].tolist() == frame["item_id"].tolist()
    assert inter["rating:float"].tolist() == pytest.approx(ratings, abs=1e-12)
    assert inter["timestamp:float"].tolist() == pytest.approx(stamps, abs=1e-6)

    uir = pd.read_csv(out["cornac"], sep=" ", header=None, names=["user", "item", "rating"], dtype={0: str, 1: str})
    assert uir["user"].tolist() == users
    assert uir["item"].tolist() == frame["item_id"].tolist()
    assert uir["rating"].tolist() == pytest.approx(ratings, abs=1e-12)
    assert set(uir["rating"]) <= {0.0, 1 / 3, 2 / 3, 1.0}


def test_pseudonyms_are_stable_per_key_and_differ_across_keys(filled: Repository, tmp_path: Path) -> None:
    frame = _frame_without_spaces(filled)
    a = read_labels(export_labels(frame, tmp_path / "a", formats=("csv",), key=KEY)["csv"])
    b = read_labels(export_labels(frame, tmp_path / "b", formats=("csv",), key=KEY)["csv"])
    c = read_labels(export_labels(frame, tmp_path / "c", formats=("csv",), key=OTHER_KEY)["csv"])
    assert a["annotator"].tolist() == b["annotator"].tolist()
    named = ~frame["annotator"].map(is_anonymous)
    assert all(x != y for x, y in zip(a.loc[named, "annotator"], c.loc[named, "annotator"]))
    assert all(p.startswith("annotator-") and len(p) == len("annotator-") + 12 for p in a.loc[named, "annotator"])
    assert not {"alice", "bob", "carol", "dave"} & set(a["annotator"].dropna())
    # Same person -> same pseudonym within an export.
    assert a.loc[frame["annotator"] == "alice", "annotator"].nunique() == 1
    assert pseudonym("alice", KEY) != pseudonym("bob", KEY)


def test_export_without_pseudonyms_keeps_usernames(filled: Repository, tmp_path: Path) -> None:
    out = export_labels(_frame_without_spaces(filled), tmp_path, formats=("jsonl",), pseudonymise=False)
    assert {"alice", "bob", "carol", "dave", ANONYMOUS} == set(read_labels(out["jsonl"])["annotator"].dropna())


def test_key_comes_from_env_then_database(filled: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _frame_without_spaces(filled)
    monkeypatch.setenv(KEY_ENV, "env-secret")
    assert resolve_export_key() == b"env-secret"
    env = read_labels(export_labels(frame, tmp_path / "env", formats=("csv",), repository=filled)["csv"])
    assert env.loc[frame["annotator"] == "bob", "annotator"].iloc[0] == pseudonym("bob", b"env-secret")

    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ValueError, match=f"no pseudonymisation key: pass key=..., set {KEY_ENV}, or pass repository"):
        export_labels(frame, tmp_path / "none", formats=("csv",))
    assert not (tmp_path / "none").exists()
    first = read_labels(export_labels(frame, tmp_path / "db1", formats=("csv",), repository=filled)["csv"])
    second = read_labels(export_labels(frame, tmp_path / "db2", formats=("csv",), repository=filled)["csv"])
    assert first["annotator"].tolist() == second["annotator"].tolist()
    assert first.loc[frame["annotator"] == "bob", "annotator"].iloc[0] == pseudonym("bob", filled.export_key())


def test_export_rejects_bad_input_before_writing(filled: Repository, tmp_path: Path) -> None:
    frame = filled.judgements_frame()
    folder = tmp_path / "out"
    with pytest.raises(ValueError, match=r"export format\(s\) 'xlsx' not supported; use some of: csv, parquet"):
        export_labels(frame, folder, formats=("csv", "xlsx"), key=KEY)
    with pytest.raises(ValueError, match="item id 'item x' is empty or contains whitespace"):
        export_labels(frame, folder, key=KEY)
    with pytest.raises(ValueError, match="frame lacks column\\(s\\) grade; export the output of"):
        export_labels(frame.drop(columns=["grade"]), folder, key=KEY)
    assert not folder.exists()
    # Without the user-item formats, ids with spaces are fine.
    assert read_labels(export_labels(frame, folder, formats=("parquet",), key=KEY)["parquet"])["item_id"].str.contains(
        " "
    ).any()


def test_failed_write_keeps_previous_file_and_leaves_no_temp(filled: Repository, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    frame = _frame_without_spaces(filled)
    folder = tmp_path / "out"  # its own folder: the SQLite database file also lives under tmp_path
    out = export_labels(frame, folder, formats=("csv",), key=KEY)
    before = out["csv"].read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        export_labels(frame.iloc[:1], folder, formats=("csv",), key=KEY)
    assert out["csv"].read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["labels.csv"]


def test_empty_frame_exports_headers_only(repo: Repository, tmp_path: Path) -> None:
    out = export_labels(repo.judgements_frame(), tmp_path, key=KEY)
    assert out["mmrec"].read_text(encoding="utf-8") == MMREC_HEADER + "\n"
    assert out["cornac"].read_text(encoding="utf-8") == ""
    for fmt in ("csv", "parquet", "jsonl"):
        back = read_labels(out[fmt])
        assert tuple(back.columns) == JUDGEMENT_COLUMNS and len(back) == 0


def test_export_and_auth_import_no_heavy_modules(tmp_path: Path) -> None:
    import subprocess
    import sys

    import storage

    code = (
        "import sys, storage.export, storage.auth; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'gradio', 'recsys_core')))"
    )
    root = Path(storage.__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
    assert list(tmp_path.iterdir()) == []
