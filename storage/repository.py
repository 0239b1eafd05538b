"""The unit of work and facade over the storage aggregates: :class:`Repository`.

Each aggregate has its own module, whose functions take a caller-owned ``Session`` so a web
handler can group several writes in one transaction: :mod:`storage.feedback` (judgements and
impressions), :mod:`storage.tasks` (crowd-labelling campaigns), :mod:`storage.registry` (model
versions and label snapshots), :mod:`storage.annotators` (people, their sessions, erasure),
:mod:`storage.settings`, :mod:`storage.schema` (upgrades) and the read side
:mod:`storage.views` (the one reader of judgements and every statistic).
:class:`Repository` runs them for the common "one event, one transaction" case and retries
transient errors (SQLite lock timeouts, PostgreSQL deadlocks and serialization failures).

Idempotency and get-or-create are race-safe by relying on the database's
UNIQUE constraints instead of locks in Python: an insert that loses a race
raises ``IntegrityError`` inside a SAVEPOINT, which is rolled back alone
(the caller's outer transaction survives) and the winner's row is re-selected.
This works across processes and hosts, which an in-process lock would not.

Crowd labelling: annotators pull tasks with :meth:`Repository.next_task` and
answer them with :meth:`Repository.answer_task`. Nothing in the annotator-facing
methods returns other annotators' answers, a task's kind or its expected
answer, so controls stay blind and annotators cannot copy each other.

Everything handed back from :class:`Repository` (except the historical
:meth:`Repository.list_feedback`) is a frozen dataclass, never a live ORM row,
because the session that loaded a row is closed before the caller sees it.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

import storage.registry as registry
import storage.settings as settings
import storage.tasks as tasks_mod
import storage.views as views
from storage._common import T, check_name
from storage.annotators import ErasureResult, erase_annotator
from storage.db import init_db, make_engine
from storage.feedback import (
    FeedbackIn,
    FeedbackResult,
    ImpressionIn,
    add_feedback,
    add_impressions,
    answer_task,
    check_answer,
)
from storage.models import Feedback
from storage.registry import ModelVersionOut, RegistryError, SnapshotOut
from storage.schema import add_missing_columns, ensure_feedback_autoincrement
from storage.tasks import InvalidTaskError, TaskIn, TaskOut
from storage.views import FeedbackOut

if TYPE_CHECKING:  # pandas is imported lazily: only the admin statistics need it.
    import pandas as pd

__all__ = ["Repository"]

logger = logging.getLogger(__name__)


#: PostgreSQL SQLSTATEs after which running the whole transaction again is the documented remedy:
#: serialization_failure and deadlock_detected (the server already rolled the transaction back).
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def _is_transient_lock_error(exc: OperationalError) -> bool:
    if getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES:
        return True
    message = str(exc.orig if exc.orig is not None else exc).lower()
    return "locked" in message or "busy" in message


class Repository:
    """Engine-owning facade: one ``Session`` and one transaction per call.

    SQLite can still report "database is locked" when the busy timeout runs out
    under heavy write load, and PostgreSQL aborts one transaction of a deadlock
    (or a serialization failure); those calls are retried with exponential
    back-off and jitter (so retrying threads do not collide again in lock-step).
    Every unit of work here is idempotent or append-only, so a retry is safe.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        max_retries: int = 5,
        base_delay_s: float = 0.05,
        sleep: Callable[[float], None] = time.sleep,
        rng: Optional[random.Random] = None,
    ) -> None:
        self.engine = engine
        self.max_retries = max_retries
        self.base_delay_s = base_delay_s
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()

    @classmethod
    def from_url(cls, url: str, **kwargs: object) -> "Repository":
        """Make the engine for ``url``, create missing tables and columns, and wrap it."""
        engine = make_engine(url)
        init_db(engine)
        add_missing_columns(engine)
        ensure_feedback_autoincrement(engine)
        return cls(engine, **kwargs)  # type: ignore[arg-type]

    def _run(self, work: Callable[[Session], T]) -> T:
        """Run ``work`` in a fresh committed session, retrying transient lock errors."""
        attempt = 0
        while True:
            try:
                # expire_on_commit=False: returned rows stay readable after the session closes.
                with Session(self.engine, expire_on_commit=False) as session:
                    result = work(session)
                    session.commit()
                    return result
            except OperationalError as exc:
                if attempt >= self.max_retries or not _is_transient_lock_error(exc):
                    raise
                delay = self.base_delay_s * (2**attempt) * (1.0 + self._rng.random())
                attempt += 1
                logger.warning(
                    "database busy on %s (%s); retry %d/%d in %.0f ms",
                    self.engine.url.render_as_string(hide_password=True),
                    exc.orig,
                    attempt,
                    self.max_retries,
                    delay * 1000,
                )
                self._sleep(delay)

    def add_feedback(self, feedback: FeedbackIn) -> FeedbackResult:
        """See :func:`storage.feedback.add_feedback`."""
        return self._run(lambda s: add_feedback(session=s, feedback=feedback))

    def add_impressions(
        self,
        *,
        request_id: str,
        impressions: Sequence[ImpressionIn],
        context_ids: Sequence[str],
        model_version: str,
        session_key: Optional[str] = None,
        client: str = "ui",
    ) -> int:
        """See :func:`storage.feedback.add_impressions`."""
        return self._run(
            lambda s: add_impressions(
                session=s,
                request_id=request_id,
                impressions=impressions,
                context_ids=context_ids,
                model_version=model_version,
                session_key=session_key,
                client=client,
            )
        )

    def count_feedback(self) -> int:
        """See :func:`storage.views.count_feedback`."""
        return self._run(lambda s: views.count_feedback(session=s))

    def count_impressions(self) -> int:
        """See :func:`storage.views.count_impressions`."""
        return self._run(lambda s: views.count_impressions(session=s))

    def list_feedback(self, limit: int = 100) -> list[Feedback]:
        """See :func:`storage.views.list_feedback`."""
        return self._run(lambda s: views.list_feedback(session=s, limit=limit))

    # ------------------------------------------------------------- crowd labelling

    def add_tasks(self, campaign: str, tasks: Sequence[TaskIn]) -> int:
        """Add ``tasks`` to ``campaign`` in one transaction; returns how many were added.

        All tasks are validated first, so one bad task (named by its position)
        leaves the campaign unchanged. Append-only: adding the same task twice
        creates two tasks.
        """
        checked = tasks_mod.check_tasks(campaign, tasks)
        added = self._run(lambda s: tasks_mod.add_tasks(session=s, campaign=campaign, tasks=checked))
        logger.info("added %d task(s) to campaign %r", added, campaign)
        return added

    def next_task(self, campaign: str, username: str) -> Optional[TaskOut]:
        """Hand ``username`` their next task of ``campaign``, or None when nothing is left for them.

        An assignment that is still open is returned again (a reload must not
        skip or duplicate work). Otherwise the task picked is one this
        annotator was never given and that still has fewer assignments than
        its ``overlap``, preferring tasks closest to completion, then the
        lowest id; the assignment is created in the same transaction.
        """
        check_name(campaign, "campaign", InvalidTaskError)
        check_name(username, "username", InvalidTaskError)
        return self._run(lambda s: tasks_mod.next_task(session=s, campaign=campaign, username=username))

    def answer_task(
        self,
        username: str,
        task_id: int,
        label: str,
        grade: Optional[int],
        request_id: str,
        model_version: Optional[str] = None,
        *,
        session_key: Optional[str] = None,
        client: str = "ui",
    ) -> FeedbackResult:
        """Store ``username``'s answer to task ``task_id`` and mark their assignment answered.

        The item, context and (when ``model_version`` is None) model version are
        taken from the task. Idempotent on ``request_id`` like
        :meth:`add_feedback`. Raises :class:`TaskNotAssignedError` when the task
        was not handed to this annotator, :class:`TaskAlreadyAnsweredError`
        when they answered it already under another request_id, and
        :class:`InvalidFeedbackError` for a bad label/grade.
        """
        check_answer(username, task_id, label, grade, request_id)
        return self._run(lambda s: answer_task(
            session=s, username=username, task_id=task_id, label=label, grade=grade, request_id=request_id,
            model_version=model_version, session_key=session_key, client=client,
        ))

    def skip_task(self, task_id: int, username: str) -> str:
        """Give ``username``'s open task back unanswered: "skipped", or "kept" when it was a re-opened answer.

        A skipped task is never served to ``username`` again but frees its slot for other
        annotators; skipping a task re-opened by :meth:`undo_last_answer` keeps the earlier
        answer. Raises :class:`InvalidTaskError` when the task is not open for them.
        """
        check_name(username, "username", InvalidTaskError)
        return self._run(lambda s: tasks_mod.skip_task(session=s, task_id=int(task_id), username=username))

    def undo_last_answer(self, campaign: str, username: str) -> Optional[TaskOut]:
        """Re-open ``username``'s latest answer in ``campaign`` and return that task; None when there is none.

        Nothing is deleted: the task is handed back to them first, and their next answer is a new
        row that supersedes the earlier one (see :mod:`storage.tasks`).
        """
        check_name(campaign, "campaign", InvalidTaskError)
        check_name(username, "username", InvalidTaskError)
        return self._run(lambda s: tasks_mod.undo_last_answer(session=s, campaign=campaign, username=username))

    def annotator_progress(self, campaign: str, username: str) -> dict[str, int]:
        """``{"answered", "open", "skipped", "remaining"}`` for one annotator; "remaining" = tasks still available to them.

        Counts only: nothing about other annotators' answers is revealed.
        """
        return self._run(lambda s: tasks_mod.annotator_progress(session=s, campaign=campaign, username=username))

    def list_campaigns(self) -> list[str]:
        """Names of every campaign that has tasks, sorted."""
        return self._run(lambda s: tasks_mod.list_campaigns(session=s))

    def campaign_overview(self, campaign: str) -> dict[str, int]:
        """``{"tasks", "complete", "answers", "open"}``: a task is complete once ``overlap`` answers are in."""
        return self._run(lambda s: tasks_mod.campaign_overview(session=s, campaign=campaign))

    def my_feedback(self, username: str, limit: int = 100) -> list[FeedbackOut]:
        """``username``'s own judgements, newest first; never anyone else's."""
        return self._run(lambda s: views.my_feedback(session=s, username=username, limit=limit))

    # -------------------------------------------------------------- model registry

    def register_model(
        self,
        version: str,
        path: str,
        parent: Optional[str] = None,
        label_snapshot: Optional[str] = None,
        metrics: Optional[Mapping[str, Any]] = None,
        status: str = "candidate",
        *,
        by: str = "register_model",
    ) -> ModelVersionOut:
        """Add a trained model to the registry; idempotent on ``version``.

        Registering the same version again with the same details returns the
        stored entry; different details raise :class:`RegistryError` (a
        version name must always mean the same model). ``status="active"``
        activates it at once (see :meth:`activate_model`).
        """
        clean_metrics = registry.check_registration(version, path, status, metrics)
        return self._run(lambda s: registry.register_then_decide(
            s, version, path, parent, label_snapshot, clean_metrics, status, by
        ))

    def set_model_status(self, version: str, status: str, by: str, note: str = "") -> ModelVersionOut:
        """Record a decision about ``version`` (e.g. "rejected"); "active" goes through :meth:`activate_model`.

        The active model cannot be moved to another status directly, because
        that would leave no active model; activate its replacement instead.
        """
        if status == "active":
            return self.activate_model(version, by, note)
        return self._run(lambda s: registry.set_model_status(s, version, status, by, note))

    def activate_model(self, version: str, by: str, note: str = "") -> ModelVersionOut:
        """Make ``version`` the active model and retire the previous one, atomically.

        Also the rollback path: activating an older (retired) version again
        retires the current one. Exactly one model is active afterwards; the
        UNIQUE ``active_slot`` column makes a concurrent activation fail and be
        retried here rather than produce two active models.
        """
        check_name(by, "by (who decided)", RegistryError)
        attempts = 3
        for attempt in range(1, attempts + 1):
            try:
                return self._run(lambda s: registry.set_model_status(s, version, "active", by, note))
            except IntegrityError:
                if attempt == attempts:
                    raise
                logger.warning("concurrent model activation while activating %r; retrying", version)
        raise AssertionError("unreachable")

    def active_model(self) -> Optional[ModelVersionOut]:
        """The active model, or None before any model was activated."""
        return self._run(lambda s: registry.active_model(session=s))

    def list_models(self) -> list[ModelVersionOut]:
        """All registered models, newest first (``id`` breaks ties between equal timestamps)."""
        return self._run(lambda s: registry.list_models(session=s))

    def get_model(self, version: str) -> Optional[ModelVersionOut]:
        """The registry entry for ``version``, or None if it is not registered."""
        return self._run(lambda s: registry.get_model(session=s, version=version))

    def save_snapshot(
        self,
        snapshot_id: str,
        feedback_ids: Sequence[int],
        config: Optional[Mapping[str, Any]] = None,
        n_examples: Optional[int] = None,
        n_judgements: Optional[int] = None,
    ) -> SnapshotOut:
        """Store which judgements a training run used; idempotent on ``snapshot_id``, immutable afterwards.

        ``n_judgements`` defaults to ``len(feedback_ids)``; ``n_examples``
        (distinct training examples after aggregation) defaults to it as well.
        """
        checked = registry.check_snapshot(snapshot_id, feedback_ids, config, n_examples, n_judgements)
        return self._run(lambda s: registry.save_snapshot(s, snapshot_id, *checked))

    def get_snapshot(self, snapshot_id: str) -> Optional[SnapshotOut]:
        """The snapshot called ``snapshot_id``, or None."""
        return self._run(lambda s: registry.get_snapshot(session=s, snapshot_id=snapshot_id))

    # ------------------------------------------------------------------ statistics

    def judgements_frame(self, campaign: Optional[str] = None) -> "pd.DataFrame":
        """Every judgement (or those of ``campaign``'s tasks) as a DataFrame for the admin view.

        Columns are :data:`storage.views.JUDGEMENT_COLUMNS`; see :func:`storage.views.judgements_frame`
        (the one reader of judgements), which also says how judgements without an
        annotator are named (never None). Admin-only: it names every annotator.
        """
        return self._run(lambda s: views.judgements_frame(session=s, campaign=campaign))

    def like_rate_by_model(self, campaign: Optional[str] = None) -> "pd.DataFrame":
        """Like-rate per model version, as the Admin tab shows it (see :func:`storage.views.like_rate`).

        Columns ``model_version``, ``judgements`` (non-control judgements) and ``like_rate``
        (share liked: 👍, or a grade of 2-3); only ``campaign``'s tasks when given.
        """
        return self._run(lambda s: views.like_rate_by_model(session=s, campaign=campaign))

    def label_counts(self) -> dict[str, int]:
        """Feedback rows per label (every label present, zeros included) plus ``"total"``."""
        return self._run(lambda s: views.label_counts(session=s))

    # -------------------------------------------------------------------- settings

    def get_setting(self, key: str) -> Optional[str]:
        """The stored value of ``key``, or None; never creates it."""
        return self._run(lambda s: settings.get_setting(session=s, key=key))

    def get_or_create_setting(self, key: str, make_value: Callable[[], str]) -> str:
        """Return the stored value of ``key``, storing ``make_value()`` on first use (race-safe)."""
        check_name(key, "setting key", ValueError)
        return self._run(lambda s: settings.get_or_create_setting(session=s, key=key, make_value=make_value))

    def set_setting(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any earlier value (for values an admin edits)."""
        check_name(key, "setting key", ValueError)
        self._run(lambda s: settings.set_setting(session=s, key=key, value=value))

    def export_key(self) -> bytes:
        """This database's random pseudonymisation key, created once so pseudonyms stay stable across exports."""
        return bytes.fromhex(self.get_or_create_setting(settings.EXPORT_KEY_SETTING, lambda: secrets.token_hex(32)))

    # -------------------------------------------------------------------- privacy

    def erase_annotator(self, username: str) -> ErasureResult:
        """Delete every judgement and task assignment of ``username`` (see :mod:`storage.annotators`)."""
        check_name(username, "username", ValueError)
        result = self._run(lambda s: erase_annotator(session=s, username=username))
        logger.info("erased %d judgement(s) and %d assignment(s) of one annotator", result.feedback, result.assignments)
        return result
