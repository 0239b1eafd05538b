"""The model registry (trained versions, exactly one active) and label snapshots (which judgements a run used).

Every entry handed back is a frozen dataclass (:class:`ModelVersionOut`, :class:`SnapshotOut`),
never a live ORM row, because the session that loaded it is closed before the caller sees it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional

from sqlmodel import Session, col, select

from storage._common import aware, aware_opt, check_name, insert_or_fetch, is_int
from storage.models import MODEL_STATUSES, LabelSnapshot, ModelVersion, utc_now

__all__ = [
    "ModelVersionOut",
    "SnapshotOut",
    "RegistryError",
    "check_registration",
    "register_then_decide",
    "set_model_status",
    "active_model",
    "list_models",
    "get_model",
    "check_snapshot",
    "save_snapshot",
    "get_snapshot",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersionOut:
    """A registry entry, detached from the database session."""

    version: str
    path: str
    parent: Optional[str]
    label_snapshot: Optional[str]
    metrics: dict[str, Any] = field(hash=False)
    status: str
    created_at: datetime
    decided_by: Optional[str]
    decided_at: Optional[datetime]
    note: str


@dataclass(frozen=True)
class SnapshotOut:
    """A saved label snapshot: which judgements (by feedback id) a training run used."""

    id: str
    created_at: datetime
    n_examples: int
    n_judgements: int
    config: dict[str, Any] = field(hash=False)
    feedback_ids: tuple[int, ...]


class RegistryError(ValueError):
    """A model-registry or label-snapshot request that cannot be carried out as asked."""


def _model_out(row: ModelVersion) -> ModelVersionOut:
    return ModelVersionOut(
        version=row.version,
        path=row.path,
        parent=row.parent,
        label_snapshot=row.label_snapshot,
        metrics=dict(row.metrics),
        status=row.status,
        created_at=aware(row.created_at),
        decided_by=row.decided_by,
        decided_at=aware_opt(row.decided_at),
        note=row.note,
    )


def _snapshot_out(row: LabelSnapshot) -> SnapshotOut:
    return SnapshotOut(
        id=row.id,
        created_at=aware(row.created_at),
        n_examples=row.n_examples,
        n_judgements=row.n_judgements,
        config=dict(row.config),
        feedback_ids=tuple(row.feedback_ids),
    )


def _find_model(session: Session, version: str) -> Optional[ModelVersion]:
    return session.exec(select(ModelVersion).where(col(ModelVersion.version) == version)).first()


def _require_model(session: Session, version: str) -> ModelVersion:
    row = _find_model(session, version)
    if row is None:
        raise RegistryError(f"model version {version!r} is not registered; register it first (register_model)")
    return row


def check_status(status: str) -> None:
    if status not in MODEL_STATUSES:
        raise RegistryError(f"model status {status!r} is not allowed; use one of: {', '.join(MODEL_STATUSES)}")


def check_json(value: Mapping[str, Any], what: str) -> dict[str, Any]:
    """Reject values JSON cannot store faithfully (NaN/inf become invalid JSON on PostgreSQL)."""
    if not isinstance(value, Mapping):
        raise RegistryError(f"{what} must be a dict; got {type(value).__name__}")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise RegistryError(f"{what} must be JSON-serialisable without NaN/inf ({exc})") from None
    return dict(value)


def _activate(session: Session, row: ModelVersion, by: str, note: str) -> None:
    """Make ``row`` the only active model: retire the current one first, in this transaction.

    The order matters: ``active_slot`` is UNIQUE, so the old holder must give
    it up before the new one takes it; a concurrent activation that slipped
    in between fails on that constraint instead of leaving two active models.
    """
    now = utc_now()
    # Serialise activations: lock every registry row (a few hundred at most), in id order so
    # that activators cannot deadlock. Locking only the active row is not enough on PostgreSQL:
    # a waiter wakes to find it retired and cannot see the newly active row in its statement
    # snapshot, so it would hit the UNIQUE active_slot again and again under contention.
    # SQLite ignores FOR UPDATE; BEGIN IMMEDIATE already serialises its writers.
    session.exec(select(col(ModelVersion.id)).order_by(col(ModelVersion.id)).with_for_update()).all()
    current = session.exec(select(ModelVersion).where(col(ModelVersion.status) == "active")).all()
    for old in current:
        if old.id == row.id:
            continue
        old.status, old.active_slot = "retired", None
        old.decided_by, old.decided_at = by, now
        old.note = f"retired: {row.version} activated" + (f" ({note})" if note else "")
        session.add(old)
        logger.info("model %r retired by %r (replaced by %r)", old.version, by, row.version)
    session.flush()
    row.status, row.active_slot = "active", 1
    row.decided_by, row.decided_at, row.note = by, now, note
    session.add(row)
    session.flush()
    logger.info("model %r activated by %r", row.version, by)


def set_model_status(session: Session, version: str, status: str, by: str, note: str) -> ModelVersionOut:
    """Record a decision about ``version``; "active" activates it (see :func:`_activate`)."""
    check_status(status)
    check_name(by, "by (who decided)", RegistryError)
    row = _require_model(session, version)
    if status == "active":
        _activate(session, row, by, note)
        return _model_out(row)
    if row.status == "active":
        raise RegistryError(
            f"model {version!r} is the active model and cannot become {status!r} on its own "
            "(exactly one model is active); activate another version instead, which retires this one"
        )
    row.status, row.decided_by, row.decided_at, row.note = status, by, utc_now(), note
    session.add(row)
    session.flush()
    logger.info("model %r set to %s by %r", version, status, by)
    return _model_out(row)


def _register_model(
    session: Session,
    version: str,
    path: str,
    parent: Optional[str],
    label_snapshot: Optional[str],
    metrics: dict[str, Any],
) -> tuple[ModelVersionOut, bool]:
    """Insert a candidate (or find the same version); returns ``(entry, created)``."""
    row = ModelVersion(
        version=version, path=path, parent=parent, label_snapshot=label_snapshot, metrics=metrics
    )
    stored, created = insert_or_fetch(session, row, lambda: _find_model(session, version))
    if not created:
        given = (path, parent, label_snapshot, metrics)
        if (stored.path, stored.parent, stored.label_snapshot, dict(stored.metrics)) != given:
            raise RegistryError(
                f"model version {version!r} is already registered with a different path, parent, "
                "label_snapshot or metrics; register the new model under a new version name"
            )
        return _model_out(stored), False
    logger.info("model %r registered (%s, parent %r)", version, path, parent)
    return _model_out(stored), True


def save_snapshot(
    session: Session,
    snapshot_id: str,
    feedback_ids: list[int],
    config: dict[str, Any],
    n_examples: int,
    n_judgements: int,
) -> SnapshotOut:
    row = LabelSnapshot(
        id=snapshot_id,
        n_examples=n_examples,
        n_judgements=n_judgements,
        config=config,
        feedback_ids=feedback_ids,
    )
    stored, created = insert_or_fetch(session, row, lambda: session.get(LabelSnapshot, snapshot_id))
    if not created:
        same = (
            list(stored.feedback_ids) == feedback_ids
            and dict(stored.config) == config
            and (stored.n_examples, stored.n_judgements) == (n_examples, n_judgements)
        )
        if not same:
            raise RegistryError(
                f"label snapshot {snapshot_id!r} already exists with different contents; "
                "snapshots are immutable, save the new one under a new id"
            )
    else:
        logger.info("label snapshot %r saved (%d judgements)", snapshot_id, n_judgements)
    return _snapshot_out(stored)


def register_then_decide(
    session: Session,
    version: str,
    path: str,
    parent: Optional[str],
    label_snapshot: Optional[str],
    metrics: dict[str, Any],
    status: str,
    by: str,
) -> ModelVersionOut:
    """Register as a candidate and, for another ``status``, record that decision in the same transaction.

    A re-registration (the version exists already) returns the stored entry
    unchanged: decisions about an existing model go through set_model_status.
    """
    out, created = _register_model(session, version, path, parent, label_snapshot, metrics)
    if not created or status == "candidate":
        return out
    return set_model_status(session, version, status, by, "")


def check_registration(version: str, path: str, status: str, metrics: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """The checks of :meth:`storage.repository.Repository.register_model`; returns the metrics as a plain dict."""
    check_name(version, "version", RegistryError)
    if not isinstance(path, str) or not path.strip():
        raise RegistryError("path is empty; send where the model's files are")
    check_status(status)
    return check_json(metrics or {}, "metrics")


def active_model(*, session: Session) -> Optional[ModelVersionOut]:
    """The active model, or None before any model was activated."""
    row = session.exec(select(ModelVersion).where(col(ModelVersion.status) == "active")).first()
    return None if row is None else _model_out(row)


def list_models(*, session: Session) -> list[ModelVersionOut]:
    """All registered models, newest first (``id`` breaks ties between equal timestamps)."""
    return [
        _model_out(r)
        for r in session.exec(
            select(ModelVersion).order_by(col(ModelVersion.created_at).desc(), col(ModelVersion.id).desc())
        ).all()
    ]


def get_model(*, session: Session, version: str) -> Optional[ModelVersionOut]:
    """The registry entry for ``version``, or None if it is not registered."""
    row = _find_model(session, version)
    return None if row is None else _model_out(row)


def check_snapshot(
    snapshot_id: str,
    feedback_ids: Sequence[int],
    config: Optional[Mapping[str, Any]],
    n_examples: Optional[int],
    n_judgements: Optional[int],
) -> tuple[list[int], dict[str, Any], int, int]:
    """The checks and defaults of :meth:`storage.repository.Repository.save_snapshot`.

    Returns ``(feedback_ids, config, n_examples, n_judgements)`` ready for :func:`save_snapshot`.
    """
    check_name(snapshot_id, "snapshot id", RegistryError)
    ids = list(feedback_ids)
    if not all(is_int(i) for i in ids):
        raise RegistryError("feedback_ids must all be integers (Feedback ids)")
    n_judgements = len(ids) if n_judgements is None else n_judgements
    n_examples = n_judgements if n_examples is None else n_examples
    for name, value in (("n_examples", n_examples), ("n_judgements", n_judgements)):
        if not is_int(value) or value < 0:
            raise RegistryError(f"{name} is {value!r}; use an integer >= 0")
    return ids, check_json(config or {}, "config"), n_examples, n_judgements


def get_snapshot(*, session: Session, snapshot_id: str) -> Optional[SnapshotOut]:
    """The snapshot called ``snapshot_id``, or None."""
    row = session.get(LabelSnapshot, snapshot_id)
    return None if row is None else _snapshot_out(row)
