"""The read side: THE one reader of judgements (:func:`judgements_frame`) and every statistic.

The admin statistics, the agreement table, the exports and (through
:meth:`storage.repository.Repository.judgements_frame`) the fine-tune's training labels
all read judgements here, so they see the same rows and the same annotators.
Nothing else in the project reads judgements by its own query.

Anonymous judgements (no annotator: rows an older app stored for open-mode 👍/👎, or a
script writing through storage without one) are named by the rule in
:func:`anonymous_name`, never None. The app itself names every judgement's annotator
(``ui.access``: the logged-in person, ``local`` in open mode).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Optional

from sqlalchemy import func
from sqlmodel import Session, col, select

from storage._common import aware, row_id
from storage.annotators import find_annotator
from storage.models import FEEDBACK_LABELS, GRADE_MAX, GRADED_LABEL, Annotator, Feedback, Impression, LabelTask

if TYPE_CHECKING:  # pandas is imported lazily: only the admin statistics need it.
    import pandas as pd

__all__ = [
    "ANONYMOUS",
    "JUDGEMENT_COLUMNS",
    "LIKE_RATE_COLUMNS",
    "FeedbackOut",
    "anonymous_name",
    "is_anonymous",
    "judgements_frame",
    "like_rate",
    "like_rate_by_model",
    "label_counts",
    "my_feedback",
    "count_feedback",
    "count_impressions",
    "list_feedback",
]

logger = logging.getLogger(__name__)

#: Columns of :func:`judgements_frame`, in order.
JUDGEMENT_COLUMNS: tuple[str, ...] = (
    "feedback_id",
    "annotator",
    "context_ids",
    "item_id",
    "label",
    "grade",
    "is_control",
    "expected",
    "model_version",
    "task_id",
    "campaign",
    "created_at",
)

#: Columns of :func:`like_rate` (what the Admin tab's like-rate plot shows).
LIKE_RATE_COLUMNS: tuple[str, ...] = ("model_version", "judgements", "like_rate")

#: The annotator of judgements that have neither an annotator nor a labelling session.
ANONYMOUS: Final[str] = "anonymous"


# ------------------------------------------------------------------- anonymous rule


def anonymous_name(session_id: Optional[int]) -> str:
    """The annotator name of a judgement without an annotator: ``anonymous-<session id>``, else ``anonymous``.

    One pseudonym per labelling session rather than one ``anonymous`` for everybody:
    without an annotator the session is all that tells writers apart, and lumping them together would make
    the aggregation keep only the last of several visitors' judgements of the same
    pair (it de-duplicates per annotator) and make agreement treat strangers as one
    rater. A session is one browser (its Gradio session hash, which is never shown:
    the name uses the session's row id). Judgements without a session either (API
    calls or scripts that send no session key) cannot be told apart and share
    ``anonymous``. A session that logs in later does not claim its earlier anonymous
    judgements: the row says nobody gave them. Both names are reserved
    (:func:`storage.feedback.validate_feedback` refuses them as usernames).
    """
    return ANONYMOUS if session_id is None else f"{ANONYMOUS}-{session_id}"


def is_anonymous(name: str) -> bool:
    """True for a name :func:`anonymous_name` makes (``anonymous`` or ``anonymous-<digits>``)."""
    if name == ANONYMOUS:
        return True
    prefix = ANONYMOUS + "-"
    return name.startswith(prefix) and name[len(prefix):].isdigit()


# ------------------------------------------------------------------------ judgements


@dataclass(frozen=True)
class FeedbackOut:
    """One of an annotator's own judgements (see :meth:`Repository.my_feedback`)."""

    feedback_id: int
    request_id: str
    item_id: str
    context_ids: tuple[str, ...]
    label: str
    grade: Optional[int]
    model_version: str
    task_id: Optional[int]
    created_at: datetime


def _feedback_out(row: Feedback) -> FeedbackOut:
    return FeedbackOut(
        feedback_id=row_id(row),
        request_id=row.request_id,
        item_id=row.item_id,
        context_ids=tuple(row.context_ids),
        label=row.label,
        grade=row.grade,
        model_version=row.model_version,
        task_id=row.task_id,
        created_at=aware(row.created_at),
    )


def _expected_value(label: str, expected_grade: Optional[int]) -> float:
    """Scale a control's expected answer to 0..1 on the scale of the answer given."""
    if expected_grade is None:
        return math.nan
    if label == GRADED_LABEL:
        return expected_grade / GRADE_MAX
    if expected_grade in (0, 1):
        return float(expected_grade)
    logger.warning(
        "control with expected_grade %d answered with a %s label; like/dislike controls use 0/1, "
        "so its expected value is left empty",
        expected_grade,
        label,
    )
    return math.nan


def judgements_frame(*, session: Session, campaign: Optional[str] = None) -> "pd.DataFrame":
    """Every judgement (or those of ``campaign``'s tasks): THE reader of judgements.

    Columns are :data:`JUDGEMENT_COLUMNS`. ``annotator`` is the username, or for a
    judgement without one the name :func:`anonymous_name` gives it (never None).
    ``expected`` is a control's known answer on the 0..1 scale of the answer given
    (``expected_grade / 3`` for graded answers, 0/1 for like/dislike) and NaN for
    everything else; ``grade`` and ``task_id`` are nullable integers; ``created_at``
    is UTC. Admin-only: it names every annotator.
    """
    import pandas as pd

    stmt = (
        select(
            Feedback,
            col(Annotator.username),
            col(LabelTask.kind),
            col(LabelTask.expected_grade),
            col(LabelTask.campaign),
        )
        .join(Annotator, col(Annotator.id) == col(Feedback.annotator_id), isouter=True)
        .join(LabelTask, col(LabelTask.id) == col(Feedback.task_id), isouter=True)
        .order_by(col(Feedback.id))
    )
    if campaign is not None:
        stmt = stmt.where(col(LabelTask.campaign) == campaign)
    records = []
    for fb, username, kind, expected_grade, task_campaign in session.exec(stmt).all():
        is_control = kind == "control"
        records.append(
            {
                "feedback_id": fb.id,
                "annotator": username if username is not None else anonymous_name(fb.session_id),
                "context_ids": list(fb.context_ids),
                "item_id": fb.item_id,
                "label": fb.label,
                "grade": fb.grade,
                "is_control": is_control,
                "expected": _expected_value(fb.label, expected_grade) if is_control else math.nan,
                "model_version": fb.model_version,
                "task_id": fb.task_id,
                "campaign": task_campaign,
                "created_at": aware(fb.created_at),
            }
        )
    # Build each column with its dtype directly: inferring first would turn the text columns
    # into pandas' string dtype and their None into NaN.
    dtypes = {
        "feedback_id": "int64",
        "grade": "Int64",
        "is_control": "bool",
        "expected": "float64",
        "task_id": "Int64",
    }
    columns: dict[str, Any] = {}
    for name in JUDGEMENT_COLUMNS:
        values = [r[name] for r in records]
        if name == "created_at":
            columns[name] = pd.Series(pd.to_datetime(values, utc=True), dtype="datetime64[us, UTC]")
        else:
            columns[name] = pd.Series(values, dtype=dtypes.get(name, "object"))
    return pd.DataFrame(columns, columns=list(JUDGEMENT_COLUMNS))


# ------------------------------------------------------------------------ statistics


def like_rate(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Share of shown items people liked, per model version: 👍, or a grade of 2-3 (controls left out).

    The one like-rate definition (the Admin tab shows it). Graded answers count
    (a graded campaign would otherwise have no like-rate), and controls do not:
    their items were picked for their known answer, not recommended by the model.
    ``frame`` is a :func:`judgements_frame`; columns are :data:`LIKE_RATE_COLUMNS`.
    """
    import pandas as pd

    if frame.empty:
        return pd.DataFrame(columns=list(LIKE_RATE_COLUMNS))
    shown = frame[~frame["is_control"].fillna(False).astype(bool)]
    liked = shown["label"].eq("like") | (shown["label"].eq("graded") & (shown["grade"].fillna(0) >= 2))
    out = liked.groupby(shown["model_version"]).agg(["size", "mean"]).reset_index()
    out.columns = list(LIKE_RATE_COLUMNS)
    return out


def like_rate_by_model(*, session: Session, campaign: Optional[str] = None) -> "pd.DataFrame":
    """:func:`like_rate` of every judgement (or those of ``campaign``'s tasks)."""
    return like_rate(judgements_frame(session=session, campaign=campaign))


def label_counts(*, session: Session) -> dict[str, int]:
    """Feedback rows per label (every label present, zeros included) plus ``"total"``."""
    rows = session.exec(select(col(Feedback.label), func.count()).group_by(col(Feedback.label))).all()
    counts = {label: 0 for label in FEEDBACK_LABELS}
    for label, n in rows:
        counts[label] = int(n)
    counts["total"] = sum(int(n) for _label, n in rows)
    return counts


def my_feedback(*, session: Session, username: str, limit: int = 100) -> list[FeedbackOut]:
    """``username``'s own judgements, newest first; never anyone else's."""
    if limit < 0:
        raise ValueError(f"limit is {limit}; use 0 or a positive number")
    annotator = find_annotator(session, username)
    if annotator is None:
        return []
    rows = session.exec(
        select(Feedback)
        .where(col(Feedback.annotator_id) == annotator.id)
        .order_by(col(Feedback.created_at).desc(), col(Feedback.id).desc())
        .limit(limit)
    ).all()
    return [_feedback_out(r) for r in rows]


def count_feedback(*, session: Session) -> int:
    """Number of stored feedback rows."""
    return int(session.exec(select(func.count()).select_from(Feedback)).one())


def count_impressions(*, session: Session) -> int:
    """Number of stored impression rows."""
    return int(session.exec(select(func.count()).select_from(Impression)).one())


def list_feedback(*, session: Session, limit: int = 100) -> list[Feedback]:
    """Most recent feedback first; ``id`` breaks ties between equal timestamps."""
    if limit < 0:
        raise ValueError(f"limit is {limit}; use 0 or a positive number")
    stmt = select(Feedback).order_by(col(Feedback.created_at).desc(), col(Feedback.id).desc()).limit(limit)
    return list(session.exec(stmt).all())
