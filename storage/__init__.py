"""Persistence for annotators, labelling sessions, impressions and feedback.

Deliberately free of torch/gradio/recsys_core imports and of any database
connection at import time, so it can be used by the app, the API and offline
scripts alike and imported cheaply in tests.
"""

from storage.db import default_database_url, init_db, make_engine, redact_url
from storage.models import ALLOWED_LABELS, Annotator, Feedback, Impression, LabelSession
from storage.repository import (
    FeedbackIn,
    FeedbackResult,
    ImpressionIn,
    InvalidFeedbackError,
    Repository,
    add_feedback,
    add_impressions,
    count_feedback,
    count_impressions,
    get_or_create_annotator,
    get_or_create_session,
    list_feedback,
)

__all__ = [
    "ALLOWED_LABELS",
    "Annotator",
    "Feedback",
    "FeedbackIn",
    "FeedbackResult",
    "Impression",
    "ImpressionIn",
    "InvalidFeedbackError",
    "LabelSession",
    "Repository",
    "add_feedback",
    "add_impressions",
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
