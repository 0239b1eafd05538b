"""storage/feedback.py: judgements and impressions, idempotent on request_id, graded labels, request-id owners.

Tests that take ``engine`` or ``db_url`` run on SQLite and on PostgreSQL (see ``make_db_url`` in
tests/conftest.py; the PostgreSQL cases skip without TEST_DATABASE_URL).
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

import storage.feedback as feedback_mod
from storage import (
    Annotator,
    Feedback,
    FeedbackResult,
    Impression,
    ImpressionIn,
    InvalidFeedbackError,
    LabelSession,
    Repository,
    RequestIdConflictError,
    add_feedback,
    add_impressions,
    count_feedback,
    count_impressions,
    get_or_create_annotator,
)
from tests.storage.helpers import SEED, _fb, _row_counts
from tests.threads import run_threads


def test_add_impressions_and_count(engine: Engine) -> None:
    shown = [ImpressionIn("item-a", 1, 0.9), ImpressionIn("item-b", 2, 0.5), ImpressionIn("item-c", 3, 0.1)]
    with Session(engine) as s:
        n = add_impressions(
            session=s,
            request_id="rec-1",
            impressions=shown,
            context_ids=["liked-1"],
            model_version="v7",
            session_key="hash-9",
        )
        assert n == 3
        assert add_impressions(
            session=s, request_id="rec-2", impressions=shown[:1], context_ids=(), model_version="v7"
        ) == 1
        s.commit()
    with Session(engine) as s:
        assert count_impressions(session=s) == 4
        rows = s.exec(select(Impression).where(Impression.request_id == "rec-1").order_by(Impression.rank)).all()
        sess = s.exec(select(LabelSession)).one()
        assert [(r.item_id, r.rank, r.score, r.context_ids, r.session_id) for r in rows] == [
            ("item-a", 1, 0.9, ["liked-1"], sess.id),
            ("item-b", 2, 0.5, ["liked-1"], sess.id),
            ("item-c", 3, 0.1, ["liked-1"], sess.id),
        ]
        assert sess.session_key == "hash-9"


def test_add_impressions_rejects_empty_request_id(engine: Engine) -> None:
    with Session(engine) as s:
        with pytest.raises(ValueError, match="request_id is empty"):
            add_impressions(
                session=s,
                request_id=" ",
                impressions=[ImpressionIn("a", 1, 1.0)],
                context_ids=[],
                model_version="v",
                session_key="k",
            )
    assert _row_counts(engine) == (0, 0, 0, 0)


def test_add_feedback_is_idempotent(engine: Engine) -> None:
    fb = _fb("req-1", session_key="hash-1", annotator="alice")
    with Session(engine) as s:
        first = add_feedback(session=s, feedback=fb)
        s.commit()
    with Session(engine) as s:
        second = add_feedback(session=s, feedback=_fb("req-1"))  # an anonymous resend of the same label
        s.commit()
    assert first == FeedbackResult(stored=True, feedback_id=1)
    assert second == FeedbackResult(stored=False, feedback_id=1)
    with Session(engine) as s:
        assert count_feedback(session=s) == 1
        row = s.exec(select(Feedback)).one()
        alice = s.exec(select(Annotator)).one()
        sess = s.exec(select(LabelSession)).one()
        assert (row.label, row.annotator_id, row.session_id) == ("like", alice.id, sess.id)
        assert (alice.username, sess.annotator_id) == ("alice", alice.id)


def test_add_feedback_concurrent_duplicate_becomes_not_stored(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UNIQUE constraint, not the pre-check, must decide when two copies race."""
    with Session(engine) as s:
        original = add_feedback(session=s, feedback=_fb("dup"))
        s.commit()
    monkeypatch.setattr(feedback_mod, "_find_feedback", _miss_once(feedback_mod._find_feedback))
    with Session(engine) as s:
        get_or_create_annotator(session=s, username="outer-work")
        result = add_feedback(session=s, feedback=_fb("dup"))
        s.commit()
    assert original == FeedbackResult(stored=True, feedback_id=1)
    assert result == FeedbackResult(stored=False, feedback_id=1)
    assert _row_counts(engine) == (1, 0, 0, 1)


def _miss_once(real: Any) -> Any:
    state = {"missed": False}

    def find(session: Session, key: str) -> Any:
        if not state["missed"]:
            state["missed"] = True
            return None
        return real(session, key)

    return find


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"label": "meh"}, "label 'meh' is not allowed; use one of: like, dislike"),
        ({"request_id": ""}, "request_id is empty"),
        ({"request_id": "   "}, "request_id is empty"),
        ({"request_id": "x" * 129}, "request_id is 129 characters long; at most 128 are allowed"),
        ({"item_id": ""}, "item_id is empty"),
        ({"client": "cli"}, "client 'cli' is not allowed; use one of: ui, api"),
        ({"session_key": ""}, "session_key is empty"),
        ({"annotator": " "}, "annotator is empty"),
    ],
)
def test_add_feedback_rejects_bad_input_and_stores_nothing(
    engine: Engine, overrides: dict[str, Any], message: str
) -> None:
    values = {"session_key": "hash-1", "annotator": "alice", **overrides}
    fb = _fb(**values) if "request_id" in values else _fb("req-bad", **values)
    with Session(engine) as s:
        with pytest.raises(InvalidFeedbackError) as info:
            add_feedback(session=s, feedback=fb)
        s.commit()
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)
    assert _row_counts(engine) == (0, 0, 0, 0)


@pytest.mark.parametrize("name", ["anonymous", "anonymous-7"])
def test_add_feedback_refuses_the_names_reserved_for_anonymous_judgements(engine: Engine, name: str) -> None:
    with Session(engine) as s:
        with pytest.raises(InvalidFeedbackError, match=f"annotator '{name}' is reserved for judgements without"):
            add_feedback(session=s, feedback=_fb(annotator=name))
        assert add_feedback(session=s, feedback=_fb("ok", annotator="anonymous-bob")).stored  # only the exact forms
        s.commit()
    assert _row_counts(engine) == (1, 0, 0, 1)


def test_request_id_of_128_chars_is_accepted(engine: Engine) -> None:
    with Session(engine) as s:
        assert add_feedback(session=s, feedback=_fb("x" * 128)) == FeedbackResult(True, 1)
        s.commit()


def test_context_ids_round_trip_as_list(engine: Engine) -> None:
    with Session(engine) as s:
        add_feedback(session=s, feedback=_fb("ctx", context_ids=("b", "a", "c")))
        add_feedback(session=s, feedback=_fb("ctx-empty", context_ids=()))
        s.commit()
    with Session(engine) as s:
        rows = {r.request_id: r.context_ids for r in s.exec(select(Feedback)).all()}
    assert rows == {"ctx": ["b", "a", "c"], "ctx-empty": []}
    assert type(rows["ctx"]) is list


# ----------------------------------------------------------------------- concurrency


def test_threaded_feedback_with_resends(db_url: str) -> None:
    n_threads, per_thread = 8, 25
    rng = random.Random(SEED)
    plan: list[str] = []
    for i in range(n_threads * per_thread):
        if plan and rng.random() < 0.10:
            plan.append(rng.choice(plan))  # resend of an id some thread already has
        else:
            plan.append(f"req-{i:04d}")
    distinct = set(plan)
    assert len(plan) - len(distinct) > 0

    repo = Repository.from_url(db_url)
    barrier = threading.Barrier(n_threads)
    results: list[tuple[str, FeedbackResult]] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        barrier.wait()
        for rid in plan[t::n_threads]:
            # The annotator follows the request id: a resend comes from whoever sent it first
            # (the same id from another annotator is refused, see the request-id owner tests below).
            res = repo.add_feedback(
                _fb(rid, session_key=f"sess-{t}", annotator=f"user-{int(rid[4:]) % 3}", client="api")
            )
            with lock:
                results.append((rid, res))

    errors = run_threads(n_threads, worker, timeout_s=60)
    try:
        assert errors == []
        assert len(results) == len(plan)
        assert repo.count_feedback() == len(distinct)
        assert sum(r.stored for _, r in results) == len(distinct)
        ids_by_request: dict[str, set[int]] = {}
        for rid, res in results:
            ids_by_request.setdefault(rid, set()).add(res.feedback_id)
        assert all(len(ids) == 1 for ids in ids_by_request.values())
        assert len({next(iter(ids)) for ids in ids_by_request.values()}) == len(distinct)
        assert _row_counts(repo.engine)[:2] == (3, n_threads)
    finally:
        repo.engine.dispose()


# --------------------------------------------------------------------------- grades


@pytest.mark.parametrize("grade", [0, 1, 2, 3])
def test_graded_feedback_stores_grade(repo: Repository, grade: int) -> None:
    assert repo.add_feedback(_fb(f"g{grade}", label="graded", grade=grade, annotator="ann")) == FeedbackResult(True, 1)
    [row] = repo.my_feedback("ann")
    assert (row.label, row.grade, row.task_id) == ("graded", grade, None)


@pytest.mark.parametrize(
    ("label", "grade", "message"),
    [
        ("graded", None, "label 'graded' needs an integer grade in 0..3; got None"),
        ("graded", 4, "label 'graded' needs an integer grade in 0..3; got 4"),
        ("graded", -1, "label 'graded' needs an integer grade in 0..3; got -1"),
        ("graded", True, "label 'graded' needs an integer grade in 0..3; got True"),
        ("graded", 2.0, "label 'graded' needs an integer grade in 0..3; got 2.0"),
        ("like", 1, "label 'like' takes no grade (got 1); send grade=None, or label 'graded'"),
        ("dislike", 0, "label 'dislike' takes no grade (got 0)"),
        ("meh", None, "label 'meh' is not allowed; use one of: like, dislike, graded"),
    ],
)
def test_grade_validation(repo: Repository, label: str, grade: Any, message: str) -> None:
    with pytest.raises(InvalidFeedbackError) as info:
        repo.add_feedback(_fb("bad", label=label, grade=grade, annotator="ann"))
    assert message in str(info.value)
    assert repo.count_feedback() == 0
    assert repo.label_counts() == {"like": 0, "dislike": 0, "graded": 0, "total": 0}


def test_old_callers_without_grade_still_work(repo: Repository) -> None:
    assert repo.add_feedback(_fb("old", label="dislike")) == FeedbackResult(True, 1)
    [row] = repo.list_feedback()
    assert (row.label, row.grade, row.task_id) == ("dislike", None, None)


# ------------------------------------------------------------------ request-id owners


def test_resend_from_other_annotator_is_refused_and_changes_nothing(repo: Repository) -> None:
    first = repo.add_feedback(_fb("shared", label="like", annotator="alice"))
    with pytest.raises(RequestIdConflictError) as info:
        repo.add_feedback(_fb("shared", label="dislike", annotator="bob"))
    message = str(info.value)
    assert message == (
        "request_id is already used for another judgement; generate a fresh request_id for every new label"
    )
    assert "alice" not in message and str(first.feedback_id) not in message
    assert isinstance(info.value, InvalidFeedbackError)  # the UI shows it as a user error
    # Alice's row is untouched, bob got no row (and no annotator row was created for him).
    assert [(f.request_id, f.label) for f in repo.my_feedback("alice")] == [("shared", "like")]
    assert repo.my_feedback("bob") == []
    assert repo.count_feedback() == 1
    with Session(repo.engine) as s:
        assert s.exec(select(Feedback)).one().annotator_id == 1
    # The owner's own resend is still an idempotent success.
    assert repo.add_feedback(_fb("shared", label="like", annotator="alice")) == FeedbackResult(False, 1)


@pytest.mark.parametrize(
    ("annotator", "resent"),
    [("alice", {"label": "dislike"}), (None, {"label": "dislike"}), ("alice", {"label": "graded", "grade": 2}),
     ("alice", {"item_id": "item-7"}), ("alice", {"context_ids": ("item-9",)})],
)
def test_resend_with_a_different_judgement_is_refused_and_the_first_label_stands(
    repo: Repository, annotator: str | None, resent: dict[str, Any]
) -> None:
    first = repo.add_feedback(_fb("r-1", label="like", annotator=annotator))
    with pytest.raises(RequestIdConflictError) as info:
        repo.add_feedback(_fb("r-1", annotator=annotator, **resent))
    assert str(info.value) == (
        "request_id 'r-1' is already stored with a different judgement; the first label stands. "
        "Send a new request_id for a new label"
    )
    [row] = repo.list_feedback()
    assert (row.id, row.label, row.grade, row.item_id, row.context_ids) == (
        first.feedback_id, "like", None, "item-42", ["item-1", "item-2"])
    # The same judgement again is still an idempotent resend.
    assert repo.add_feedback(_fb("r-1", label="like", annotator=annotator)) == FeedbackResult(False, first.feedback_id)


def test_resend_of_anonymous_feedback_by_named_annotator_is_refused(repo: Repository) -> None:
    repo.add_feedback(_fb("anon"))
    with pytest.raises(RequestIdConflictError):
        repo.add_feedback(_fb("anon", annotator="mallory"))
    assert repo.my_feedback("mallory") == []


def test_database_refuses_grade_that_does_not_fit_the_label(repo: Repository) -> None:
    """CHECK constraint behind validate_feedback, for code that writes rows directly."""
    from sqlalchemy.exc import IntegrityError

    for label, grade in (("graded", None), ("graded", 4), ("like", 2)):
        with Session(repo.engine) as s:
            s.add(Feedback(request_id=f"{label}-{grade}", item_id="i", label=label, grade=grade, model_version="v"))
            with pytest.raises(IntegrityError):
                s.commit()
    assert repo.count_feedback() == 0
