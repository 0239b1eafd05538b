"""Export judgements (:func:`storage.views.judgements_frame`, the one reader) for training and sharing.

Formats, one file each in the target folder:

* ``csv`` -> ``labels.csv``: every column; ``context_ids`` as a JSON list,
  ``created_at`` as ISO 8601 with offset. :func:`read_labels` restores types.
* ``parquet`` -> ``labels.parquet`` (pyarrow): native list, nullable-int and
  UTC timestamp columns.
* ``jsonl`` -> ``labels.jsonl``: one JSON object per line, missing values as
  ``null``.
* ``mmrec`` -> ``labels.inter``: MMRec atomic file, tab-separated with the header
  ``userID:token  itemID:token  rating:float  timestamp:float``; one row per
  judgement, user = (pseudonymised) annotator, rating on the 0..1 scale of
  :func:`storage.models.label_value`, timestamp in unix seconds.
* ``cornac`` -> ``cornac_uir.txt``: ``user item rating`` triples, one per line,
  separated by a single space and without a header, readable with
  ``cornac.data.Reader().read(path, fmt="UIR", sep=" ")``. Space rather than
  Cornac's default tab keeps the file plain; ids containing whitespace are
  rejected because they would split into extra fields.

Judgements without an annotator keep the name :mod:`storage.views` gives them
(``anonymous`` or ``anonymous-<session id>``) in every format, pseudonymised or not: those
names identify nobody, and a reader can still tell them from people. A frame whose annotator is
missing (written before that rule) is exported, and read back, with ``anonymous``.

Annotators are pseudonymised by default as ``annotator-`` + the first 12 hex
digits of HMAC-SHA256(key, username). A keyed hash (not a plain hash) because
usernames are guessable: without the key nobody can confirm "this is alice".
The key comes from the ``key`` argument, else the ``LABEL_EXPORT_KEY``
environment variable, else a random per-database key kept in the ``setting``
table (:meth:`Repository.export_key`), so pseudonyms stay stable across exports
and the same person can be followed from one export to the next.

Every file is written to a temporary name in the target folder and moved into
place with ``os.replace``, so a reader never sees a half-written export.
Temporary files are created with mode 0600 (they hold labelling data); the
final files keep that mode.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Optional

import pandas as pd

from storage.models import label_value
from storage.views import ANONYMOUS, JUDGEMENT_COLUMNS, is_anonymous

if TYPE_CHECKING:
    from storage.repository import Repository

__all__ = [
    "EXPORT_FORMATS",
    "EXPORT_FILENAMES",
    "KEY_ENV",
    "MMREC_HEADER",
    "CORNAC_SEPARATOR",
    "pseudonym",
    "resolve_export_key",
    "pseudonymise_frame",
    "export_labels",
    "read_labels",
]

logger = logging.getLogger(__name__)

EXPORT_FORMATS: Final[tuple[str, ...]] = ("csv", "parquet", "jsonl", "mmrec", "cornac")
EXPORT_FILENAMES: Final[dict[str, str]] = {
    "csv": "labels.csv",
    "parquet": "labels.parquet",
    "jsonl": "labels.jsonl",
    "mmrec": "labels.inter",
    "cornac": "cornac_uir.txt",
}
#: Environment variable holding the pseudonymisation key (any non-empty string; used as UTF-8 bytes).
KEY_ENV: Final[str] = "LABEL_EXPORT_KEY"
MMREC_HEADER: Final[str] = "userID:token\titemID:token\trating:float\ttimestamp:float"
CORNAC_SEPARATOR: Final[str] = " "
#: Stand-in user for a judgement whose annotator is missing (the rule of :mod:`storage.views`).
ANONYMOUS_USER: Final[str] = ANONYMOUS

_PSEUDONYM_PREFIX = "annotator-"
_PSEUDONYM_HEX = 12
_STRING_COLUMNS = ("annotator", "item_id", "label", "model_version", "campaign")
_NULLABLE_TEXT = ("annotator", "campaign")


# ------------------------------------------------------------------ pseudonyms


def pseudonym(username: str, key: bytes) -> str:
    """Stable, keyed pseudonym of ``username``: ``annotator-`` + 12 hex digits of HMAC-SHA256."""
    digest = hmac.new(key, username.encode("utf-8"), hashlib.sha256).hexdigest()
    return _PSEUDONYM_PREFIX + digest[:_PSEUDONYM_HEX]


def resolve_export_key(key: Optional[bytes] = None, repository: Optional["Repository"] = None) -> bytes:
    """The pseudonymisation key: ``key``, else ``$LABEL_EXPORT_KEY``, else the database's own key.

    Raises ``ValueError`` when none of the three is available, rather than
    inventing a throw-away key whose pseudonyms could never be matched again.
    """
    if key is not None:
        if not isinstance(key, (bytes, bytearray)) or not key:
            raise ValueError("key must be non-empty bytes (e.g. os.urandom(32)); got " + type(key).__name__)
        return bytes(key)
    from_env = os.environ.get(KEY_ENV, "")
    if from_env.strip():
        return from_env.encode("utf-8")
    if repository is not None:
        return repository.export_key()
    raise ValueError(
        f"no pseudonymisation key: pass key=..., set {KEY_ENV}, or pass repository=... "
        "so the database's stored key is used"
    )


def pseudonymise_frame(frame: pd.DataFrame, key: bytes) -> pd.DataFrame:
    """Copy of ``frame`` with each annotator replaced by its pseudonym; anonymous names are kept as they are."""
    out = frame.copy()
    out["annotator"] = pd.Series(
        [name if is_anonymous(name) else pseudonym(name, key) for name in _annotators(frame["annotator"])],
        index=frame.index,
        dtype="object",
    )
    return out


def _annotators(values: Iterable[Any]) -> list[str]:
    """Annotator names as text; a missing one is :data:`ANONYMOUS_USER` (see :mod:`storage.views`)."""
    return [ANONYMOUS_USER if _missing(name) else str(name) for name in values]


# ------------------------------------------------------------------------ export


def export_labels(
    frame: pd.DataFrame,
    folder: Path,
    formats: Sequence[str] = EXPORT_FORMATS,
    pseudonymise: bool = True,
    key: Optional[bytes] = None,
    *,
    repository: Optional["Repository"] = None,
) -> dict[str, Path]:
    """Write ``frame`` to ``folder`` in each of ``formats``; returns ``{format: path}``.

    ``frame`` must have the columns of ``Repository.judgements_frame``. All
    input is checked before the first file is written, so a bad row or
    format leaves the folder untouched. See the module docstring for the
    formats and the key lookup (``key``, ``$LABEL_EXPORT_KEY``, ``repository``).
    """
    formats = list(dict.fromkeys(formats))
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown or not formats:
        raise ValueError(
            f"export format(s) {', '.join(map(repr, unknown)) or '(none given)'} not supported; "
            f"use some of: {', '.join(EXPORT_FORMATS)}"
        )
    missing = [c for c in JUDGEMENT_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"frame lacks column(s) {', '.join(missing)}; export the output of Repository.judgements_frame()"
        )
    data = frame.loc[:, list(JUDGEMENT_COLUMNS)].reset_index(drop=True)
    data["annotator"] = pd.Series(_annotators(data["annotator"]), index=data.index, dtype="object")
    if pseudonymise:
        data = pseudonymise_frame(data, resolve_export_key(key, repository))

    interactions = _interactions(data) if {"mmrec", "cornac"} & set(formats) else None
    if "cornac" in formats and interactions is not None:
        _check_no_whitespace(interactions, "cornac (space-separated)")
    if "mmrec" in formats and interactions is not None:
        _check_no_whitespace(interactions, "mmrec (tab-separated)")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writers: dict[str, Callable[[Path], None]] = {
        "csv": lambda tmp: _csv_frame(data).to_csv(tmp, index=False),
        "parquet": lambda tmp: data.to_parquet(tmp, index=False, engine="pyarrow"),
        "jsonl": lambda tmp: _write_lines(tmp, _jsonl_lines(data)),
        "mmrec": lambda tmp: _write_lines(tmp, _mmrec_lines(interactions)),
        "cornac": lambda tmp: _write_lines(tmp, _cornac_lines(interactions)),
    }
    written: dict[str, Path] = {}
    for fmt in formats:
        target = folder / EXPORT_FILENAMES[fmt]
        _atomic_write(target, writers[fmt])
        written[fmt] = target
    logger.info(
        "exported %d judgement(s) as %s to %s (annotators %s)",
        len(data),
        ", ".join(formats),
        folder,
        "pseudonymised" if pseudonymise else "NOT pseudonymised",
    )
    return written


def read_labels(path: Path) -> pd.DataFrame:
    """Read a ``labels.csv``/``.parquet``/``.jsonl`` export back with the types of ``judgements_frame``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        text_cols = {c: str for c in (*_STRING_COLUMNS, "context_ids", "created_at")}
        frame = pd.read_csv(
            path,
            dtype=text_cols,
            keep_default_na=False,
            na_values={c: [""] for c in ("grade", "task_id", "expected", *_NULLABLE_TEXT)},
        )
        frame["context_ids"] = [json.loads(v) for v in frame["context_ids"]]
    elif suffix == ".parquet":
        frame = pd.read_parquet(path, engine="pyarrow")
        frame["context_ids"] = [[str(c) for c in v] for v in frame["context_ids"]]
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            frame = pd.DataFrame.from_records(
                [json.loads(line) for line in fh if line.strip()], columns=list(JUDGEMENT_COLUMNS)
            )
    else:
        raise ValueError(f"cannot read {path.name!r}; read_labels understands .csv, .parquet and .jsonl")
    return _restore_types(frame)


# ---------------------------------------------------------------------- helpers


def _missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    return isinstance(value, float) and math.isnan(value)


def _plain(value: Any) -> Any:
    """numpy/pandas scalars and missing markers -> JSON-ready Python values."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if _missing(value):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def _records(data: pd.DataFrame) -> Iterable[dict[str, Any]]:
    for row in data.itertuples(index=False, name=None):
        yield {col: _plain(value) for col, value in zip(data.columns, row)}


def _jsonl_lines(data: pd.DataFrame) -> Iterable[str]:
    for record in _records(data):
        yield json.dumps(record, ensure_ascii=False, allow_nan=False)


def _csv_frame(data: pd.DataFrame) -> pd.DataFrame:
    out = data.copy()
    out["context_ids"] = [json.dumps(_plain(v), ensure_ascii=False) for v in data["context_ids"]]
    out["created_at"] = [_plain(v) for v in data["created_at"]]
    return out


def _restore_types(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.loc[:, list(JUDGEMENT_COLUMNS)].copy()
    for column in _STRING_COLUMNS:
        frame[column] = pd.Series(
            [None if _missing(v) else str(v) for v in frame[column]], index=frame.index, dtype="object"
        )
    frame["annotator"] = pd.Series(_annotators(frame["annotator"]), index=frame.index, dtype="object")
    frame["context_ids"] = [list(v) for v in frame["context_ids"]]
    frame["feedback_id"] = frame["feedback_id"].astype("int64")
    frame["grade"] = pd.array([None if _missing(v) else int(v) for v in frame["grade"]], dtype="Int64")
    frame["task_id"] = pd.array([None if _missing(v) else int(v) for v in frame["task_id"]], dtype="Int64")
    frame["is_control"] = frame["is_control"].astype("bool")
    frame["expected"] = pd.to_numeric(frame["expected"]).astype("float64")
    frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True, format="ISO8601").astype(
        "datetime64[us, UTC]"
    )
    return frame


def _interactions(data: pd.DataFrame) -> list[tuple[str, str, float, float]]:
    """(user, item, rating 0..1, unix seconds) per judgement; rejects rows that have no rating."""
    rows = []
    for fid, user, item, label, grade, created in zip(
        data["feedback_id"], data["annotator"], data["item_id"], data["label"], data["grade"], data["created_at"]
    ):
        try:
            rating = label_value(str(label), None if _missing(grade) else int(grade))
        except ValueError as exc:
            raise ValueError(f"judgement with feedback_id {fid}: {exc}") from None
        stamp = pd.Timestamp(created)
        if stamp.tzinfo is None:  # naive values are UTC, as everywhere in storage
            stamp = stamp.tz_localize("UTC")
        rows.append((str(user), str(item), rating, stamp.timestamp()))
    return rows


def _check_no_whitespace(rows: list[tuple[str, str, float, float]], fmt: str) -> None:
    for user, item, _rating, _ts in rows:
        for what, value in (("user", user), ("item id", item)):
            if not value or any(ch.isspace() for ch in value):
                raise ValueError(
                    f"{what} {value!r} is empty or contains whitespace and cannot be written to the {fmt} "
                    "export; leave that format out or rename the id"
                )


def _mmrec_lines(rows: Optional[list[tuple[str, str, float, float]]]) -> Iterable[str]:
    yield MMREC_HEADER
    for user, item, rating, ts in rows or []:
        yield f"{user}\t{item}\t{rating!r}\t{ts!r}"


def _cornac_lines(rows: Optional[list[tuple[str, str, float, float]]]) -> Iterable[str]:
    for user, item, rating, _ts in rows or []:
        yield CORNAC_SEPARATOR.join((user, item, repr(rating)))


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(line)
            fh.write("\n")


def _atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Write via ``write(tmp)`` to a temporary file next to ``target``, then rename it over ``target``.

    Same folder so ``os.replace`` is a rename on one filesystem (atomic on
    POSIX and Windows); on failure the temporary file is removed and
    ``target`` is left as it was.
    """
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            tmp.unlink()
        raise
