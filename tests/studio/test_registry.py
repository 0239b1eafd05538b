"""Registry decisions (promote, roll back, reject, register a candidate), end to end on tiny models."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recsys_core.model.checkpoint import checkpoint_version
from recsys_core.training.finetune import FinetuneConfig, finetune
from storage import Repository
from studio.finetune_job import GateDecision, JobResult, SnapshotInfo
from studio.registry import ModelActionError, ModelManager
from tests.recsys_core.training.test_finetune import _examples


@pytest.fixture
def repository(tmp_path):
    return Repository.from_url(f"sqlite:///{tmp_path / 'studio.sqlite3'}")


def _candidate(service, tmp_path, name: str, epochs: int = 6) -> JobResult:
    result = finetune(examples=_examples(6), heldout=_examples(1), catalog=service.catalog, features=service.features,
                      text_encoder=service.text_encoder, image_encoder=service.image_encoder,
                      base_model=service.active_model, base_dir=None, out_dir=tmp_path / name,
                      cache_dir=tmp_path / "features", config=FinetuneConfig(epochs=epochs, lr=3e-3, min_labels=10,
                                                                             batch_labels=8))
    return JobResult(out_dir=str(result.out_dir), version=checkpoint_version(result.out_dir),
                     parent=service.model_version,
                     gate=GateDecision(base=result.gate.base, candidate=result.gate.candidate,
                                       passed=result.gate.passed, reason=result.gate.reason),
                     n_train=result.n_train, n_heldout=result.n_heldout, seconds=result.seconds,
                     snapshot=SnapshotInfo(id=f"snap-{name}", n_examples=10, n_judgements=12, config={},
                                           feedback_ids=(1, 2, 3)))


def test_promote_rollback_and_reject_change_what_is_served(tiny_service, repository, tmp_path) -> None:
    manager = ModelManager(tiny_service, repository)
    zeroshot = manager.sync_at_startup()
    assert repository.active_model().version == zeroshot == tiny_service.model_version
    before = [r.item_id for r in tiny_service.recommend(["chess"], k=6)]
    before_scores = [r.score for r in tiny_service.recommend(["chess"], k=6)]

    result = _candidate(tiny_service, tmp_path, "cand1")
    version = manager.register_candidate(result, auto_promote=False, by="admin")
    assert repository.get_model(version).status == ("candidate" if result.gate.passed else "rejected")
    assert tiny_service.model_version == zeroshot  # registering alone serves nothing new

    manager.promote(version, "admin", override=True)
    assert tiny_service.model_version == version == repository.active_model().version
    after = tiny_service.recommend(["chess"], k=6)
    assert [r.score for r in after] != pytest.approx(before_scores)  # another model answers now
    assert repository.get_model(zeroshot).status == "retired"

    manager.rollback(zeroshot, "admin")
    assert tiny_service.model_version == zeroshot == repository.active_model().version
    assert [r.item_id for r in tiny_service.recommend(["chess"], k=6)] == before

    with pytest.raises(ModelActionError, match="active model cannot be rejected"):
        manager.reject(zeroshot, "admin")
    manager.reject(version, "admin", "not good enough")
    with pytest.raises(ModelActionError, match="failed its gate|override"):
        manager.promote(version, "admin")
    with pytest.raises(ModelActionError, match="not in the registry"):
        manager.promote("no-such-model", "admin")


def test_restart_serves_the_registry_active_model(tiny_service, repository, tmp_path, tiny_catalog) -> None:
    from tests.conftest import make_tiny_service

    manager = ModelManager(tiny_service, repository)
    manager.sync_at_startup()
    version = manager.register_candidate(_candidate(tiny_service, tmp_path, "c"), auto_promote=False, by="admin")
    manager.promote(version, "admin", override=True)
    restarted = make_tiny_service(tiny_catalog, tmp_path / "features2")
    restarted.prepare()
    assert ModelManager(restarted, repository).sync_at_startup() == version == restarted.model_version


def test_a_candidate_that_is_its_parent_registers_nothing_and_the_served_model_stays(tiny_service, repository,
                                                                                     tmp_path) -> None:
    """A second fine-tune that kept the served model (same weights, so the same version) is no new model: the
    registry is left as it was (registering it again failed with 'already registered with a different path')."""
    from dataclasses import replace

    manager = ModelManager(tiny_service, repository)
    manager.sync_at_startup()
    first = _candidate(tiny_service, tmp_path, "c1")
    version = manager.register_candidate(first, auto_promote=False, by="admin")
    manager.promote(version, "admin", override=True)
    models = [(m.version, m.status, m.path) for m in repository.list_models()]
    shutil.copytree(first.out_dir, tmp_path / "c2")  # the job wrote the parent's weights again
    again = replace(first, out_dir=str(tmp_path / "c2"), parent=version,
                    snapshot=replace(first.snapshot, id="snap-c2"))
    assert manager.register_candidate(again, auto_promote=True, by="gate") == version
    assert [(m.version, m.status, m.path) for m in repository.list_models()] == models
    # The copy's weights are deleted, its record of the job kept; the served model's folder is untouched.
    assert not (tmp_path / "c2" / "model.safetensors").exists() and (tmp_path / "c2" / "metrics.json").is_file()
    assert (Path(first.out_dir) / "model.safetensors").is_file()
    assert repository.active_model().version == tiny_service.model_version == version
