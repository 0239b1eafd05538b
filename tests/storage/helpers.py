"""Row builders shared by the storage tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage import Annotator, Feedback, FeedbackIn, Impression, LabelSession, TaskIn

SEED = 1234


def _fb(request_id: str = "req-1", **overrides: Any) -> FeedbackIn:
    values: dict[str, Any] = {
        "request_id": request_id,
        "item_id": "item-42",
        "label": "like",
        "context_ids": ("item-1", "item-2"),
        "model_version": "v1",
    }
    values.update(overrides)
    return FeedbackIn(**values)


def _row_counts(engine: Engine) -> tuple[int, int, int, int]:
    with Session(engine) as s:
        return (
            len(s.exec(select(Annotator)).all()),
            len(s.exec(select(LabelSession)).all()),
            len(s.exec(select(Impression)).all()),
            len(s.exec(select(Feedback)).all()),
        )


def _task(item: str, kind: str = "recommendation", expected: int | None = None, overlap: int = 1) -> TaskIn:
    return TaskIn(item_id=item, context_ids=("ctx-a", "ctx-b"), model_version="v1", kind=kind,
                  expected_grade=expected, overlap=overlap)
