"""The model registry as the app uses it: what is served, promote, roll back, reject.

The database (``storage``) records every version and which one is active; the service
(``recsys_core``) serves one. This class keeps the two in step: a promotion first loads the new
model beside the old one (the service swaps its snapshot in one assignment, so in-flight requests
finish on the model they started with), and only then records the decision. If loading fails, the
registry is left as it was.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from recsys_core.errors import RecsysError
from recsys_core.model.checkpoint import drop_weights
from studio.finetune_job import JobResult

log = logging.getLogger(__name__)
ZERO_SHOT_PATH = "zero-shot"  # registry path of the built-in model (it has no files)


class ModelActionError(RecsysError, ValueError):
    """A registry action that cannot be done (unknown version, a rejected model without override...)."""


@dataclass(frozen=True)
class ModelRow:
    version: str
    status: str
    parent: str | None
    created: str
    decided_by: str | None
    heldout_auc: float | None
    heldout_pairwise: float | None
    base_pairwise: float | None
    heldout_likes_ndcg: float | None  # the held-out likes' NDCG@20 over the whole catalog (a gate metric)
    base_likes_ndcg: float | None
    gate: str


def unchanged(result: JobResult) -> bool:
    """Whether a finished fine-tune's candidate is its parent model, weight for weight."""
    return result.parent is not None and result.version == result.parent


class ModelManager:
    def __init__(self, service, repository) -> None:
        self.service = service
        self.repository = repository
        self._lock = threading.Lock()  # one registry decision at a time in this process

    # -- start-up -------------------------------------------------------------------------------
    def sync_at_startup(self, cli_model_dir: Path | None = None) -> str:
        """Serve what the registry says is active; ``--model DIR`` (if given) is registered and activated first."""
        current = self.service.active_model
        if cli_model_dir is not None:  # the service already serves it
            self.repository.register_model(current.version, str(Path(cli_model_dir).resolve()), metrics={},
                                           by="app --model")
            if (active := self.repository.active_model()) is None or active.version != current.version:
                self.repository.activate_model(current.version, by="app --model", note="served with --model")
            return current.version
        zeroshot = self.service.zeroshot_model
        self.repository.register_model(zeroshot.version, ZERO_SHOT_PATH, metrics={}, by="app start")
        active = self.repository.active_model()
        if active is None:
            self.repository.activate_model(zeroshot.version, by="app start", note="first start: the zero-shot model")
            return zeroshot.version
        if active.version != current.version:
            try:
                self._load(active.version, active.path)
            except RecsysError as exc:  # a missing or stale checkpoint must not stop the app
                log.error("registry's active model %s cannot be served (%s); serving %s", active.version, exc,
                          current.version)
        return self.service.model_version

    # -- decisions --------------------------------------------------------------------------------
    def _load(self, version: str, path: str) -> None:
        if path == ZERO_SHOT_PATH:
            self.service.load_model(None)
        else:
            loaded = self.service.load_model(Path(path))
            if loaded != version:
                log.warning("registry version %s loaded as %s (files changed since registration)", version, loaded)

    def promote(self, version: str, by: str, *, override: bool = False, note: str = "") -> str:
        """Serve ``version`` and record it as active. A rejected candidate needs ``override``."""
        with self._lock:
            entry = self.repository.get_model(version)
            if entry is None:
                raise ModelActionError(f"model {version!r} is not in the registry")
            if entry.status == "rejected" and not override:
                raise ModelActionError(f"model {version} failed its gate ({entry.metrics.get('gate_reason', 'worse')}); "
                                       "tick 'override' to promote it anyway")
            if entry.status == "active":
                return version
            self._load(version, entry.path)
            self.repository.activate_model(version, by, note or ("override" if override else "promoted"))
            log.info("%s promoted %s", by, version)
            return version

    def rollback(self, version: str, by: str) -> str:
        """Serve an earlier version again (any registered one, including the zero-shot model)."""
        return self.promote(version, by, override=True, note="rollback")

    def reject(self, version: str, by: str, note: str = "") -> None:
        with self._lock:
            entry = self.repository.get_model(version)
            if entry is None:
                raise ModelActionError(f"model {version!r} is not in the registry")
            if entry.status == "active":
                raise ModelActionError("the active model cannot be rejected: promote or roll back to another first")
            self.repository.set_model_status(version, "rejected", by, note or "rejected by an admin")

    @staticmethod
    def _clean(value):
        """JSON-safe metrics: NaN (a metric that could not be computed) is stored as null."""
        if isinstance(value, dict):
            return {k: ModelManager._clean(v) for k, v in value.items()}
        if isinstance(value, float) and value != value:
            return None
        return value

    def register_candidate(self, result: JobResult, *, auto_promote: bool, by: str) -> str:
        """Record a finished fine-tune (:class:`studio.finetune_job.JobResult`); promote it when the gate passed.

        A candidate that *is* the model it was trained from (same weights, so the same version: the hybrid
        fine-tune keeps the served model when the labels do not move its cross-validation) is no new model:
        nothing is registered or promoted, the served model stays (see :func:`unchanged`), and the candidate
        folder keeps its metrics but not its copy of the weights."""
        if unchanged(result):
            parent = self.repository.get_model(result.parent)
            freed = 0
            if parent is None or Path(parent.path).resolve() != Path(result.out_dir).resolve():
                freed = drop_weights(Path(result.out_dir))  # a copy of the parent's weights, never served
            log.info("fine-tune: the candidate is %s itself (the labels did not change it); nothing to register "
                     "(its copy of the weights deleted: %d bytes)", result.version, freed)
            return result.version
        snap, gate = result.snapshot, result.gate
        self.repository.save_snapshot(snap.id, list(snap.feedback_ids), config=snap.config,
                                      n_examples=snap.n_examples, n_judgements=snap.n_judgements)
        metrics = {"heldout_base": gate.base, "heldout_candidate": gate.candidate,
                   "gate_passed": gate.passed, "gate_reason": gate.reason,
                   "n_train": result.n_train, "n_heldout": result.n_heldout, "seconds": result.seconds}
        metrics = self._clean(metrics)
        version = result.version
        self.repository.register_model(version, result.out_dir, parent=result.parent,
                                       label_snapshot=snap.id, metrics=metrics, status="candidate", by=by)
        if not gate.passed:
            self.repository.set_model_status(version, "rejected", "gate", gate.reason)
        elif auto_promote:
            self.promote(version, "gate", note=gate.reason)
        return version

    def recommend_with(self, version: str, liked_ids, k: int = 10):
        """``version``'s top-``k`` for ``liked_ids`` without serving it (the Admin tab's side-by-side view);
        a :class:`recsys_core.service.ModelRecommendations`."""
        entry = self.repository.get_model(version)
        if entry is None:
            raise ModelActionError(f"model {version!r} is not in the registry")
        folder = None if entry.path == ZERO_SHOT_PATH else Path(entry.path)
        return self.service.recommend_with(folder, liked_ids, k)

    # -- views ------------------------------------------------------------------------------------
    def rows(self) -> list[ModelRow]:
        out = []
        for m in self.repository.list_models():
            cand = m.metrics.get("heldout_candidate") or {}
            base = m.metrics.get("heldout_base") or {}
            out.append(ModelRow(
                version=m.version, status=m.status, parent=m.parent,
                created=m.created_at.strftime("%Y-%m-%d %H:%M:%S"), decided_by=m.decided_by,
                heldout_auc=cand.get("auc"), heldout_pairwise=cand.get("pairwise_accuracy"),
                base_pairwise=base.get("pairwise_accuracy"), heldout_likes_ndcg=cand.get("likes_ndcg@20"),
                base_likes_ndcg=base.get("likes_ndcg@20"),
                gate=m.metrics.get("gate_reason", "") if m.metrics else "",
            ))
        return out
