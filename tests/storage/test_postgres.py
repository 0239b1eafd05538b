"""PostgreSQL-only behaviour: several app replicas (one engine each) writing at once, deadlock retry,
and the plain ``postgresql://`` URL form.

The shared storage tests already run on PostgreSQL too (``db_backend`` in conftest.py); these are the
cases SQLite cannot show, because SQLite serialises every writer. They skip without
TEST_DATABASE_URL, which .ci/run sets after starting a throwaway server.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from storage import FeedbackResult, Repository, Setting, TaskIn
from tests.storage.helpers import _fb
from tests.threads import run_threads

SEED = 4321


@pytest.fixture
def db_backend() -> str:
    """Overrides conftest's parametrised fixture: every database here is a PostgreSQL schema."""
    return "postgresql"


def test_replicas_store_each_request_id_once(db_url: str) -> None:
    """Two replicas (two engines, as two app processes would have), 8 threads each, 10% resends."""
    n_replicas, threads_per_replica, per_thread = 2, 8, 30
    n_threads = n_replicas * threads_per_replica
    rng = random.Random(SEED)
    plan: list[str] = []
    for i in range(n_threads * per_thread):
        if plan and rng.random() < 0.10:
            plan.append(rng.choice(plan))  # a resend, possibly through the other replica
        else:
            plan.append(f"req-{i:04d}")
    distinct = set(plan)
    assert 0.05 < 1 - len(distinct) / len(plan) < 0.15

    replicas = [Repository.from_url(db_url) for _ in range(n_replicas)]
    barrier = threading.Barrier(n_threads)
    results: list[tuple[str, FeedbackResult]] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        repo = replicas[t % n_replicas]
        barrier.wait(timeout=30)
        for rid in plan[t::n_threads]:
            # The annotator follows the request id, so a resend is the same person's (see test_feedback.py).
            res = repo.add_feedback(_fb(rid, session_key=f"sess-{t}", annotator=f"user-{int(rid[4:]) % 5}"))
            with lock:
                results.append((rid, res))

    try:
        assert run_threads(n_threads, worker) == []
        assert len(results) == len(plan)
        assert replicas[0].count_feedback() == replicas[1].count_feedback() == len(distinct)
        assert sum(r.stored for _, r in results) == len(distinct)  # exactly one "stored" per id
        ids_by_request: dict[str, set[int]] = {}
        for rid, res in results:
            ids_by_request.setdefault(rid, set()).add(res.feedback_id)
        assert all(len(ids) == 1 for ids in ids_by_request.values())  # resends get the original row's id
        assert len({min(ids) for ids in ids_by_request.values()}) == len(distinct)
        assert {f.request_id for f in replicas[0].list_feedback(limit=len(plan))} == distinct
    finally:
        for repo in replicas:
            repo.engine.dispose()


def test_concurrent_activations_on_replicas_leave_one_active_model(db_url: str) -> None:
    """Admins on different replicas activating different versions at once: no errors, one active model."""
    versions = [f"v{i}" for i in range(6)]
    replicas = [Repository.from_url(db_url) for _ in range(2)]
    for version in versions:
        replicas[0].register_model(version, f"/models/{version}")
    barrier = threading.Barrier(len(versions))

    def activate(i: int) -> None:
        barrier.wait(timeout=30)
        replicas[i % 2].activate_model(versions[i], by=f"admin-{i}")

    try:
        assert run_threads(len(versions), activate) == []
        statuses = Counter(m.status for m in replicas[1].list_models())
        assert statuses == {"active": 1, "retired": len(versions) - 1}
        active = replicas[1].active_model()
        assert active is not None and active.version in versions
    finally:
        for repo in replicas:
            repo.engine.dispose()


def test_deadlock_is_retried(db_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Two transactions lock two rows in opposite order; PostgreSQL aborts one, the Repository retries it."""
    repo = Repository.from_url(db_url)
    repo.base_delay_s = 0.01
    for key in ("a", "b"):
        repo.get_or_create_setting(key, lambda: "0")
    both_hold_first_lock = threading.Barrier(2)
    attempts: Counter[str] = Counter()

    def lock_in_order(first: str, second: str) -> Callable[[Session], str]:
        def work(session: Session) -> str:
            attempts[first] += 1
            session.exec(select(Setting).where(Setting.key == first).with_for_update()).one()
            if attempts[first] == 1:
                both_hold_first_lock.wait(timeout=30)
            session.exec(select(Setting).where(Setting.key == second).with_for_update()).one()
            return first

        return work

    done: list[str] = []

    def worker(i: int) -> None:
        first, second = ("a", "b") if i == 0 else ("b", "a")
        done.append(repo._run(lock_in_order(first, second)))

    try:
        with caplog.at_level(logging.WARNING, logger="storage.repository"):
            assert run_threads(2, worker) == []
        assert sorted(done) == ["a", "b"]
        assert sum(attempts.values()) == 3  # exactly one of the two was chosen as the deadlock victim
        [record] = [r for r in caplog.records if "retry 1/5" in r.getMessage()]
        message = record.getMessage()
        assert "deadlock detected" in message
        assert repo.engine.url.render_as_string(hide_password=True) in message
    finally:
        repo.engine.dispose()


def test_plain_postgresql_url_uses_psycopg(db_url: str) -> None:
    """``postgresql://`` (the form most hosts hand out) must use psycopg, never psycopg2 (not shipped)."""
    plain = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    repo = Repository.from_url(plain)
    try:
        assert repo.engine.url.drivername == "postgresql+psycopg"
        assert repo.add_feedback(_fb("plain-1")) == FeedbackResult(True, 1)
    finally:
        repo.engine.dispose()


def test_annotators_on_replicas_never_exceed_overlap(db_url: str) -> None:
    """Eight annotators on two replicas pull and answer tasks at once; each task gets exactly ``overlap``."""
    n_tasks, overlap, n_annotators = 12, 3, 8
    replicas = [Repository.from_url(db_url) for _ in range(2)]
    replicas[0].add_tasks("c1", [TaskIn(f"item-{i}", ("ctx",), "v1", overlap=overlap) for i in range(n_tasks)])
    barrier = threading.Barrier(n_annotators)
    done: dict[str, list[int]] = {}

    def annotate(i: int) -> None:
        repo, name, mine = replicas[i % 2], f"ann-{i}", []
        barrier.wait(timeout=30)
        while (task := repo.next_task("c1", name)) is not None:
            assert repo.answer_task(name, task.task_id, "like", None, f"{name}-{task.task_id}").stored
            mine.append(task.task_id)
        done[name] = mine

    try:
        assert run_threads(n_annotators, annotate) == []
        per_task = Counter(t for tasks in done.values() for t in tasks)
        assert per_task == {t: overlap for t in range(1, n_tasks + 1)}
        assert all(len(tasks) == len(set(tasks)) for tasks in done.values())
        assert replicas[1].campaign_overview("c1") == {
            "tasks": n_tasks, "complete": n_tasks, "answers": n_tasks * overlap, "open": 0,
        }
    finally:
        for repo in replicas:
            repo.engine.dispose()
