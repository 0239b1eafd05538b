"""Persistence for annotators, labelling sessions, impressions, feedback,
crowd-labelling tasks and the model registry.

Deliberately free of torch/gradio/recsys_core imports and of any database
connection at import time, so it can be used by the app, the API and offline
scripts alike and imported cheaply in tests. ``storage.export`` (pandas) and
``storage.auth`` (user file, ``python -m storage.auth``) are imported on
demand rather than from here, so ``import storage`` stays light and running
``storage.auth`` as a module does not import it twice.
"""

from storage.db import default_database_url, init_db, make_engine, redact_url
from storage.models import (
    ALLOWED_LABELS,
    FEEDBACK_LABELS,
    Annotator,
    Feedback,
    Impression,
    LabelSession,
    LabelSnapshot,
    LabelTask,
    ModelVersion,
    Setting,
    TaskAssignment,
)
from storage.annotators import get_or_create_annotator, get_or_create_session
from storage.feedback import (
    FeedbackIn,
    FeedbackResult,
    ImpressionIn,
    InvalidFeedbackError,
    RequestIdConflictError,
    TaskAlreadyAnsweredError,
    TaskNotAssignedError,
    add_feedback,
    add_impressions,
)
from storage.registry import ModelVersionOut, RegistryError, SnapshotOut
from storage.repository import Repository
from storage.schema import add_missing_columns
from storage.tasks import InvalidTaskError, TaskIn, TaskOut
from storage.views import FeedbackOut, count_feedback, count_impressions, list_feedback

__all__ = [
    "ALLOWED_LABELS",
    "Annotator",
    "FEEDBACK_LABELS",
    "Feedback",
    "FeedbackIn",
    "FeedbackOut",
    "FeedbackResult",
    "Impression",
    "ImpressionIn",
    "InvalidFeedbackError",
    "InvalidTaskError",
    "LabelSession",
    "LabelSnapshot",
    "LabelTask",
    "ModelVersion",
    "ModelVersionOut",
    "RegistryError",
    "Repository",
    "RequestIdConflictError",
    "Setting",
    "SnapshotOut",
    "TaskAlreadyAnsweredError",
    "TaskAssignment",
    "TaskIn",
    "TaskNotAssignedError",
    "TaskOut",
    "add_feedback",
    "add_impressions",
    "add_missing_columns",
    "count_feedback",
    "count_impressions",
    "default_database_url",
    "get_or_create_annotator",
    "get_or_create_session",
    "init_db",
    "list_feedback",
    "make_engine",
    "redact_url",
]
