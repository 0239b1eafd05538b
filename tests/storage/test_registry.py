"""Model registry (one active model at a time) and label snapshots, on SQLite and PostgreSQL."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from storage import ModelVersion, ModelVersionOut, RegistryError, Repository, SnapshotOut


def _statuses(repo: Repository) -> dict[str, str]:
    return {m.version: m.status for m in repo.list_models()}


def _n_active(repo: Repository) -> int:
    with Session(repo.engine) as s:
        return len(s.exec(select(ModelVersion).where(ModelVersion.status == "active")).all())


def test_register_model_is_idempotent_and_returns_plain_dataclass(repo: Repository) -> None:
    first = repo.register_model("v1", "/models/v1", parent=None, label_snapshot="snap-1", metrics={"ndcg@10": 0.31})
    again = repo.register_model("v1", "/models/v1", parent=None, label_snapshot="snap-1", metrics={"ndcg@10": 0.31})
    assert isinstance(first, ModelVersionOut) and first == again
    assert (first.version, first.path, first.parent, first.label_snapshot, first.metrics, first.status, first.note) == (
        "v1", "/models/v1", None, "snap-1", {"ndcg@10": 0.31}, "candidate", "",
    )
    assert (first.decided_by, first.decided_at) == (None, None)
    assert isinstance(first.created_at, datetime) and first.created_at.tzinfo is not None
    assert len(repo.list_models()) == 1


def test_register_model_with_other_details_is_refused(repo: Repository) -> None:
    repo.register_model("v1", "/models/v1", metrics={"ndcg@10": 0.31})
    with pytest.raises(RegistryError) as info:
        repo.register_model("v1", "/models/other", metrics={"ndcg@10": 0.31})
    assert str(info.value) == (
        "model version 'v1' is already registered with a different path, parent, label_snapshot or metrics; "
        "register the new model under a new version name"
    )
    assert repo.get_model("v1").path == "/models/v1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"version": "", "path": "/p"}, "version is empty"),
        ({"version": "v", "path": ""}, "path is empty"),
        ({"version": "v", "path": "/p", "status": "live"},
         "model status 'live' is not allowed; use one of: candidate, active, rejected, retired"),
        ({"version": "v", "path": "/p", "metrics": {"loss": math.nan}},
         "metrics must be JSON-serialisable without NaN"),
    ],
)
def test_register_model_validates(repo: Repository, kwargs: dict, message: str) -> None:
    with pytest.raises(RegistryError, match=message.replace("(", r"\(")):
        repo.register_model(**kwargs)
    assert repo.list_models() == []


def test_only_one_active_and_rollback(repo: Repository) -> None:
    for version in ("v1", "v2", "v3"):
        repo.register_model(version, f"/models/{version}")
    assert repo.active_model() is None

    one = repo.activate_model("v1", by="admin", note="first")
    assert (one.status, one.decided_by, one.note) == ("active", "admin", "first")
    assert repo.active_model() == one
    assert _statuses(repo) == {"v1": "active", "v2": "candidate", "v3": "candidate"}

    repo.activate_model("v2", by="admin")
    assert _statuses(repo) == {"v1": "retired", "v2": "active", "v3": "candidate"}
    assert _n_active(repo) == 1
    retired = repo.get_model("v1")
    assert retired is not None and (retired.decided_by, retired.note) == ("admin", "retired: v2 activated")

    # Rollback: the older version becomes active again, the newer one is retired.
    back = repo.activate_model("v1", by="ops", note="v2 regressed")
    assert (back.version, back.status, back.decided_by, back.note) == ("v1", "active", "ops", "v2 regressed")
    assert _statuses(repo) == {"v1": "active", "v2": "retired", "v3": "candidate"}
    assert repo.active_model().version == "v1"  # type: ignore[union-attr]
    assert _n_active(repo) == 1

    # Activating the active model again changes nothing else.
    repo.activate_model("v1", by="ops")
    assert _statuses(repo) == {"v1": "active", "v2": "retired", "v3": "candidate"}


def test_set_model_status(repo: Repository) -> None:
    repo.register_model("v1", "/m/1")
    repo.register_model("v2", "/m/2")
    rejected = repo.set_model_status("v2", "rejected", by="admin", note="worse ndcg")
    assert (rejected.status, rejected.decided_by, rejected.note) == ("rejected", "admin", "worse ndcg")
    assert rejected.decided_at is not None

    active = repo.set_model_status("v1", "active", by="admin")  # routed through activate_model
    assert active.status == "active"
    with pytest.raises(RegistryError) as info:
        repo.set_model_status("v1", "retired", by="admin")
    assert str(info.value) == (
        "model 'v1' is the active model and cannot become 'retired' on its own (exactly one model is active); "
        "activate another version instead, which retires this one"
    )
    with pytest.raises(RegistryError, match="model version 'v9' is not registered"):
        repo.activate_model("v9", by="admin")
    with pytest.raises(RegistryError, match="model status 'gone' is not allowed"):
        repo.set_model_status("v2", "gone", by="admin")
    assert _statuses(repo) == {"v1": "active", "v2": "rejected"}


def test_register_as_active_retires_previous(repo: Repository) -> None:
    repo.register_model("v1", "/m/1", status="active")
    repo.register_model("v2", "/m/2", parent="v1", status="active", by="trainer")
    assert _statuses(repo) == {"v1": "retired", "v2": "active"}
    assert repo.get_model("v2").decided_by == "trainer"  # type: ignore[union-attr]


def test_database_refuses_a_second_active_model(repo: Repository) -> None:
    """The UNIQUE active_slot guards the invariant even against code that bypasses the Repository."""
    repo.register_model("v1", "/m/1", status="active")
    with Session(repo.engine) as s:
        s.add(ModelVersion(version="rogue", path="/x", status="active", active_slot=1))
        with pytest.raises(IntegrityError):
            s.commit()
    with Session(repo.engine) as s:
        s.add(ModelVersion(version="rogue", path="/x", status="active"))  # status without the slot
        with pytest.raises(IntegrityError):
            s.commit()
    assert _n_active(repo) == 1


def test_list_models_newest_first_and_get_model(repo: Repository) -> None:
    for version in ("a", "b", "c"):
        repo.register_model(version, f"/m/{version}")
    assert [m.version for m in repo.list_models()] == ["c", "b", "a"]
    assert repo.get_model("b").path == "/m/b"  # type: ignore[union-attr]
    assert repo.get_model("zzz") is None


def test_snapshot_round_trip_and_immutability(repo: Repository) -> None:
    config = {"min_overlap": 2, "aggregate": "mean", "campaigns": ["c1", "c2"]}
    saved = repo.save_snapshot("snap-1", [5, 3, 9], config, n_examples=2)
    assert isinstance(saved, SnapshotOut)
    loaded = repo.get_snapshot("snap-1")
    assert loaded == saved
    assert (loaded.id, loaded.n_examples, loaded.n_judgements, loaded.config, loaded.feedback_ids) == (
        "snap-1", 2, 3, config, (5, 3, 9),
    )
    assert loaded.created_at.tzinfo is not None
    assert repo.save_snapshot("snap-1", [5, 3, 9], config, n_examples=2) == saved  # idempotent resend
    with pytest.raises(RegistryError, match="label snapshot 'snap-1' already exists with different contents"):
        repo.save_snapshot("snap-1", [5, 3], config, n_examples=2)
    assert repo.get_snapshot("snap-1") == saved
    assert repo.get_snapshot("missing") is None
    with pytest.raises(RegistryError, match="feedback_ids must all be integers"):
        repo.save_snapshot("snap-2", [1, "2"])  # type: ignore[list-item]
    with pytest.raises(RegistryError, match="n_examples is -1; use an integer >= 0"):
        repo.save_snapshot("snap-2", [1], n_examples=-1)


def test_model_links_to_snapshot(repo: Repository) -> None:
    repo.save_snapshot("snap-7", [1, 2])
    model = repo.register_model("v7", "/m/7", parent="v6", label_snapshot="snap-7", metrics={"recall@20": 0.5})
    snapshot = repo.get_snapshot(model.label_snapshot)  # type: ignore[arg-type]
    assert snapshot is not None and snapshot.feedback_ids == (1, 2)


def test_export_key_is_created_once_per_database(
    repo: Repository, db_url: str, make_db_url: Callable[[], str]
) -> None:
    key = repo.export_key()
    assert len(key) == 32 and repo.export_key() == key
    reopened = Repository.from_url(db_url)
    try:
        assert reopened.export_key() == key
    finally:
        reopened.engine.dispose()
    other = Repository.from_url(make_db_url())
    try:
        assert other.export_key() != key
    finally:
        other.engine.dispose()
