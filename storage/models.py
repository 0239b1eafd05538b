"""SQLModel tables for annotators, labelling sessions, impressions, feedback,
crowd-labelling tasks and the model registry.

Only generic SQLAlchemy types are used (``String``, ``Integer``, ``Float``,
``JSON``, ``DateTime(timezone=True)``, ``Text``) so the same schema works on
SQLite for local runs and on PostgreSQL in deployment without dialect-specific
code. Invariants that must hold under concurrent writers (one assignment per
task and annotator, at most one active model) are UNIQUE constraints, because
only the database can enforce them across processes and hosts; CHECK
constraints are a second line of defence behind the validation in
:mod:`storage.feedback`, :mod:`storage.tasks` and :mod:`storage.registry`, which give the readable error messages.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Final, Optional

from sqlalchemy import JSON, CheckConstraint, Column, DateTime, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "ALLOWED_LABELS",
    "GRADED_LABEL",
    "FEEDBACK_LABELS",
    "GRADE_MIN",
    "GRADE_MAX",
    "TASK_KINDS",
    "ASSIGNMENT_STATUSES",
    "MODEL_STATUSES",
    "ALLOWED_CLIENTS",
    "REQUEST_ID_MAX_LENGTH",
    "Annotator",
    "LabelSession",
    "Impression",
    "Feedback",
    "LabelTask",
    "TaskAssignment",
    "ModelVersion",
    "LabelSnapshot",
    "Setting",
    "label_value",
    "utc_now",
]

#: Binary labels (the like/dislike buttons). Kept as its own constant because the
#: UI and API offer exactly these two; graded answers come from labelling tasks.
ALLOWED_LABELS: Final[tuple[str, ...]] = ("like", "dislike")
#: Label of a graded judgement; the value itself is in ``Feedback.grade``.
GRADED_LABEL: Final[str] = "graded"
#: Every label the feedback table accepts; anything else is rejected before it reaches the DB.
FEEDBACK_LABELS: Final[tuple[str, ...]] = (*ALLOWED_LABELS, GRADED_LABEL)
#: Graded judgements use a 4-point relevance scale (0 = irrelevant .. 3 = highly relevant),
#: the usual TREC-style scale, so the 0..1 value of a grade is ``grade / GRADE_MAX``.
GRADE_MIN: Final[int] = 0
GRADE_MAX: Final[int] = 3
#: Why a task's item is in the queue: a model recommendation, a random item (a baseline
#: the model has to beat) or a control with a known answer (to measure annotator quality).
TASK_KINDS: Final[tuple[str, ...]] = ("recommendation", "random", "control")
#: An assignment is "assigned" when handed out and "answered" once its feedback is stored. A skip is
#: not a status (the CHECK of existing databases could not be widened in place) but
#: ``TaskAssignment.skipped_at``; an undo turns "answered" back into "assigned" (see storage.tasks).
ASSIGNMENT_STATUSES: Final[tuple[str, ...]] = ("assigned", "answered")
#: Life cycle of a trained model: candidate -> active | rejected; active -> retired.
MODEL_STATUSES: Final[tuple[str, ...]] = ("candidate", "active", "rejected", "retired")
#: Where a labelling session came from: the Gradio UI or the programmatic API.
ALLOWED_CLIENTS: Final[tuple[str, ...]] = ("ui", "api")
#: Request ids are client-chosen idempotency keys; bounding them keeps the UNIQUE index small.
REQUEST_ID_MAX_LENGTH: Final[int] = 128


def utc_now() -> datetime:
    """Return an aware UTC timestamp.

    A function (not ``datetime.utcnow``) so every row gets the time of its own
    creation and the value is unambiguous across servers in different zones.
    """
    return datetime.now(timezone.utc)


def label_value(label: str, grade: Optional[int]) -> float:
    """Map a judgement onto one 0..1 relevance scale so likes and grades can be pooled.

    like = 1, dislike = 0, graded = ``grade / GRADE_MAX``. Raises ``ValueError``
    for anything else, so a corrupt row cannot silently become a rating.
    """
    if label == "like":
        return 1.0
    if label == "dislike":
        return 0.0
    if label == GRADED_LABEL and grade is not None and GRADE_MIN <= grade <= GRADE_MAX:
        return float(grade) / GRADE_MAX
    raise ValueError(
        f"cannot turn label {label!r} with grade {grade!r} into a rating; "
        f"use like, dislike, or graded with a grade in {GRADE_MIN}..{GRADE_MAX}"
    )


def _timestamp_field() -> Any:
    # timezone=True maps to TIMESTAMPTZ on PostgreSQL; SQLite stores text either way.
    return Field(default_factory=utc_now, sa_type=DateTime(timezone=True), nullable=False)


def _optional_timestamp_field() -> Any:
    return Field(default=None, sa_type=DateTime(timezone=True), nullable=True)


def _quoted(values: tuple[str, ...]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Annotator(SQLModel, table=True):
    """A person (or service account) who gives feedback."""

    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=128)
    role: str = Field(default="annotator", max_length=32)
    created_at: datetime = _timestamp_field()


class LabelSession(SQLModel, table=True):
    """One web (or API) session; ``session_key`` is the Gradio session hash."""

    id: Optional[int] = Field(default=None, primary_key=True)
    session_key: str = Field(unique=True, index=True, max_length=128)
    annotator_id: Optional[int] = Field(default=None, foreign_key="annotator.id", nullable=True)
    client: str = Field(default="ui", max_length=16)
    started_at: datetime = _timestamp_field()


class Impression(SQLModel, table=True):
    """An item that was shown to a user, so feedback can later be joined to exposure."""

    id: Optional[int] = Field(default=None, primary_key=True)
    request_id: str = Field(index=True, max_length=REQUEST_ID_MAX_LENGTH)
    session_id: Optional[int] = Field(default=None, foreign_key="labelsession.id", nullable=True)
    item_id: str = Field(index=True, max_length=256)
    rank: int
    score: float
    model_version: str = Field(max_length=128)
    context_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    shown_at: datetime = _timestamp_field()


class LabelTask(SQLModel, table=True):
    """One (context, item) pair to be judged by ``overlap`` distinct annotators of a campaign.

    ``expected_grade`` is only set for controls and uses the campaign's scale
    (0..3 for graded campaigns, 0/1 for like/dislike campaigns). It is never
    handed to annotators, so controls stay blind.
    """

    __table_args__ = (
        CheckConstraint("overlap >= 1", name="ck_labeltask_overlap"),
        CheckConstraint(f"kind IN ({_quoted(TASK_KINDS)})", name="ck_labeltask_kind"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    campaign: str = Field(index=True, max_length=128)
    context_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    item_id: str = Field(max_length=256)
    kind: str = Field(max_length=16)
    expected_grade: Optional[int] = Field(default=None, nullable=True)
    model_version: str = Field(max_length=128)
    overlap: int = Field(default=1)
    created_at: datetime = _timestamp_field()


class Feedback(SQLModel, table=True):
    """A like/dislike or a graded judgement; ``request_id`` is UNIQUE so resent requests are stored once.

    ``grade`` is set exactly when ``label == "graded"``; ``task_id`` links an
    answer to the crowd-labelling task it answers (NULL for free-form feedback).
    """

    # The CHECK is enforced on databases created with this schema and on SQLite tables rebuilt by
    # storage.schema.ensure_feedback_autoincrement; ALTER TABLE cannot add it otherwise, so
    # storage.feedback.validate_feedback is the main guard.
    # AUTOINCREMENT: without it SQLite hands the id of the newest row again once that row is
    # deleted (an annotator's erasure), and a label snapshot's feedback_ids would then name a
    # later judgement. PostgreSQL sequences never reuse ids. Existing SQLite tables are rebuilt
    # with it by storage.schema.ensure_feedback_autoincrement.
    __table_args__ = (
        CheckConstraint(
            f"(label = '{GRADED_LABEL}' AND grade IS NOT NULL AND grade >= {GRADE_MIN} AND grade <= {GRADE_MAX}) "
            f"OR (label <> '{GRADED_LABEL}' AND grade IS NULL)",
            name="ck_feedback_grade",
        ),
        {"sqlite_autoincrement": True},
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    request_id: str = Field(unique=True, index=True, max_length=REQUEST_ID_MAX_LENGTH)
    annotator_id: Optional[int] = Field(default=None, foreign_key="annotator.id", nullable=True)
    session_id: Optional[int] = Field(default=None, foreign_key="labelsession.id", nullable=True)
    context_ids: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    item_id: str = Field(index=True, max_length=256)
    label: str = Field(max_length=16)
    model_version: str = Field(max_length=128)
    created_at: datetime = _timestamp_field()
    # Added after the first release: nullable so the columns can be added to existing
    # databases with ALTER TABLE ADD COLUMN (see storage.schema.add_missing_columns).
    grade: Optional[int] = Field(default=None, nullable=True)
    task_id: Optional[int] = Field(default=None, foreign_key="labeltask.id", nullable=True, index=True)


class TaskAssignment(SQLModel, table=True):
    """A task handed to one annotator; UNIQUE(task_id, annotator_id) so nobody gets a task twice.

    ``skipped_at`` is set when the annotator gave the task back unanswered: the row stays (so they
    are not served it again) but no longer holds one of the task's ``overlap`` slots. An answered
    assignment that the annotator undid is "assigned" again with ``feedback_id`` still naming the
    answer their next one will supersede.
    """

    __table_args__ = (
        UniqueConstraint("task_id", "annotator_id", name="uq_taskassignment_task_annotator"),
        CheckConstraint(f"status IN ({_quoted(ASSIGNMENT_STATUSES)})", name="ck_taskassignment_status"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="labeltask.id", index=True)
    annotator_id: int = Field(foreign_key="annotator.id", index=True)
    status: str = Field(default="assigned", max_length=16)
    feedback_id: Optional[int] = Field(default=None, foreign_key="feedback.id", nullable=True)
    assigned_at: datetime = _timestamp_field()
    answered_at: Optional[datetime] = _optional_timestamp_field()
    # Added with skipping: nullable, so storage.schema.add_missing_columns adds it to existing databases.
    skipped_at: Optional[datetime] = _optional_timestamp_field()


class ModelVersion(SQLModel, table=True):
    """A trained model in the registry.

    ``active_slot`` is 1 for the active model and NULL otherwise; being UNIQUE
    (NULLs never collide, on SQLite and PostgreSQL alike) it lets the database
    itself refuse a second active model, even when two admins activate
    different versions at the same moment. The CHECK keeps it in step with
    ``status``. ``label_snapshot`` names a :class:`LabelSnapshot` but is not a
    foreign key, so a model trained elsewhere can be registered before (or
    without) its snapshot being imported.
    """

    __table_args__ = (
        CheckConstraint(f"status IN ({_quoted(MODEL_STATUSES)})", name="ck_modelversion_status"),
        CheckConstraint(
            "(status = 'active' AND COALESCE(active_slot, 0) = 1) OR (status <> 'active' AND active_slot IS NULL)",
            name="ck_modelversion_active_slot",
        ),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    version: str = Field(unique=True, index=True, max_length=128)
    parent: Optional[str] = Field(default=None, max_length=128, nullable=True)
    label_snapshot: Optional[str] = Field(default=None, max_length=128, nullable=True)
    path: str = Field(max_length=1024)
    metrics: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="candidate", max_length=16, index=True)
    active_slot: Optional[int] = Field(default=None, unique=True, nullable=True)
    created_at: datetime = _timestamp_field()
    decided_by: Optional[str] = Field(default=None, max_length=128, nullable=True)
    decided_at: Optional[datetime] = _optional_timestamp_field()
    note: str = Field(default="", sa_type=Text, nullable=False)


class LabelSnapshot(SQLModel, table=True):
    """The exact set of judgements a model was trained on, so a training run can be reproduced."""

    id: str = Field(primary_key=True, max_length=128)
    created_at: datetime = _timestamp_field()
    n_examples: int
    n_judgements: int
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    feedback_ids: list[int] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Setting(SQLModel, table=True):
    """Small per-database values that must be stable across processes (e.g. the export pseudonym key)."""

    key: str = Field(primary_key=True, max_length=128)
    value: str = Field(sa_type=Text, nullable=False)
    created_at: datetime = _timestamp_field()
