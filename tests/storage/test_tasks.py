"""Graded labels, request-id ownership and crowd-labelling task routing, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlmodel import Session, select

from storage import (
    FeedbackResult,
    InvalidFeedbackError,
    InvalidTaskError,
    Repository,
    RequestIdConflictError,
    TaskAlreadyAnsweredError,
    TaskAssignment,
    TaskIn,
    TaskNotAssignedError,
    TaskOut,
)
from tests.storage.helpers import _fb, _task
from tests.threads import run_threads


# ------------------------------------------------------------------------- routing


def test_three_annotators_overlap_two(repo: Repository) -> None:
    n_tasks = 6
    assert repo.add_tasks("c1", [_task(f"item-{i}", overlap=2) for i in range(n_tasks)]) == n_tasks
    annotators = ("ann-a", "ann-b", "ann-c")
    answered: dict[str, list[int]] = {a: [] for a in annotators}
    # Round-robin: everyone asks for a task, answers it, repeats, until nobody gets one.
    active = list(annotators)
    n = 0
    while active:
        for name in list(active):
            task = repo.next_task("c1", name)
            if task is None:
                active.remove(name)
                continue
            assert repo.next_task("c1", name) == task  # an open assignment is handed out again
            n += 1
            assert repo.answer_task(name, task.task_id, "graded", n % 4, f"{name}-{task.task_id}").stored
            answered[name].append(task.task_id)

    per_task = Counter(t for tasks in answered.values() for t in tasks)
    assert per_task == {t: 2 for t in range(1, n_tasks + 1)}  # each task by exactly 2 annotators
    assert all(len(tasks) == len(set(tasks)) for tasks in answered.values())  # nobody twice
    assert sorted(len(t) for t in answered.values()) == [4, 4, 4]
    assert repo.campaign_overview("c1") == {"tasks": 6, "complete": 6, "answers": 12, "open": 0}
    for name in annotators:
        assert repo.annotator_progress("c1", name) == {"answered": 4, "open": 0, "skipped": 0, "remaining": 0}
    with Session(repo.engine) as s:
        pairs = [(a.task_id, a.annotator_id, a.status) for a in s.exec(select(TaskAssignment)).all()]
    assert len(pairs) == 12 and len({(t, a) for t, a, _ in pairs}) == 12
    assert {status for _, _, status in pairs} == {"answered"}


def test_next_task_prefers_tasks_closest_to_completion_then_lowest_id(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("x", overlap=3), _task("y", overlap=2), _task("z", overlap=1)])
    first = repo.next_task("c1", "a")
    assert isinstance(first, TaskOut)
    assert (first.task_id, first.campaign, first.item_id, first.context_ids) == (3, "c1", "z", ("ctx-a", "ctx-b"))
    assert first.assigned_at.tzinfo is not None
    # a's own open assignment comes back first, even though other tasks are available.
    assert repo.next_task("c1", "a").task_id == 3  # type: ignore[union-attr]
    assert repo.next_task("c1", "b").task_id == 2  # z is full; y (2 slots) before x (3 slots)
    assert repo.next_task("c1", "c").task_id == 2  # y now has one slot left: closest to completion
    assert repo.next_task("c1", "d").task_id == 1
    assert repo.annotator_progress("c1", "e") == {"answered": 0, "open": 0, "skipped": 0, "remaining": 1}


def test_task_out_hides_kind_and_expected_answer(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("ctrl", kind="control", expected=3)])
    task = repo.next_task("c1", "a")
    assert task is not None
    # "previous" is only ever the annotator's own earlier answer (set after an undo)
    assert set(vars(task)) == {"task_id", "campaign", "item_id", "context_ids", "assigned_at", "previous"}
    assert task.previous is None


def test_campaigns_are_separate(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one")])
    repo.add_tasks("c2", [_task("two")])
    assert repo.next_task("c2", "a").item_id == "two"  # type: ignore[union-attr]
    assert repo.next_task("c1", "a").item_id == "one"  # type: ignore[union-attr]
    assert repo.next_task("c3", "a") is None


def test_cannot_answer_task_not_assigned(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one", overlap=2), _task("two", overlap=2)])
    assert repo.next_task("c1", "alice").task_id == 1  # type: ignore[union-attr]
    for username, task_id in (("alice", 2), ("bob", 1), ("alice", 99)):
        with pytest.raises(TaskNotAssignedError) as info:
            repo.answer_task(username, task_id, "like", None, f"{username}-{task_id}")
        assert str(info.value) == (
            f"task {task_id} is not assigned to {username!r}; answer the task you were given "
            "(ask for one with next_task)"
        )
        assert isinstance(info.value, ValueError)
    assert repo.count_feedback() == 0
    assert repo.campaign_overview("c1") == {"tasks": 2, "complete": 0, "answers": 0, "open": 1}


def test_answer_task_is_idempotent_and_refuses_second_answer(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one")])
    task = repo.next_task("c1", "alice")
    assert task is not None
    first = repo.answer_task("alice", task.task_id, "dislike", None, "r1")
    assert first == FeedbackResult(True, 1)
    assert repo.answer_task("alice", task.task_id, "dislike", None, "r1") == FeedbackResult(False, 1)
    with pytest.raises(TaskAlreadyAnsweredError, match="task 1 was already answered by 'alice'"):
        repo.answer_task("alice", task.task_id, "like", None, "r2")
    with pytest.raises(RequestIdConflictError):  # bob reusing alice's request id learns nothing
        repo.answer_task("bob", task.task_id, "like", None, "r1")
    [mine] = repo.my_feedback("alice")
    assert (mine.label, mine.task_id, mine.item_id, mine.context_ids, mine.model_version) == (
        "dislike", 1, "one", ("ctx-a", "ctx-b"), "v1",
    )
    assert repo.annotator_progress("c1", "alice") == {"answered": 1, "open": 0, "skipped": 0, "remaining": 0}


def test_answer_task_validates_before_storing(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one")])
    repo.next_task("c1", "alice")
    with pytest.raises(InvalidFeedbackError, match="label 'graded' needs an integer grade in 0..3; got 7"):
        repo.answer_task("alice", 1, "graded", 7, "r1")
    with pytest.raises(InvalidFeedbackError, match="model_version does not match the one task 1 was created for"):
        repo.answer_task("alice", 1, "like", None, "r1", model_version="v9")
    assert repo.count_feedback() == 0
    assert repo.annotator_progress("c1", "alice") == {"answered": 0, "open": 1, "skipped": 0, "remaining": 0}


def test_add_feedback_with_task_id_follows_assignment_rules(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one")])
    answer = _fb("t1", item_id="one", context_ids=("ctx-a", "ctx-b"), annotator="alice", task_id=1)
    with pytest.raises(TaskNotAssignedError):
        repo.add_feedback(answer)
    repo.next_task("c1", "alice")
    with pytest.raises(InvalidFeedbackError, match="item_id/context_ids do not match task 1"):
        repo.add_feedback(_fb("t0", item_id="other", annotator="alice", task_id=1))
    with pytest.raises(InvalidFeedbackError, match="a task answer needs the annotator's username"):
        repo.add_feedback(_fb("t2", item_id="one", context_ids=("ctx-a", "ctx-b"), task_id=1))
    assert repo.add_feedback(answer) == FeedbackResult(True, 1)
    assert repo.campaign_overview("c1") == {"tasks": 1, "complete": 1, "answers": 1, "open": 0}


CONTROL_HINT = "tasks[1]: a control needs expected_grade in 0..3 (0/1 for like/dislike campaigns)"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (TaskIn("", ("a",), "v1"), "tasks[1]: item_id is empty"),
        (TaskIn("i", "ab", "v1"), "tasks[1]: context_ids must be a sequence of item ids (strings)"),  # type: ignore
        (TaskIn("i", ("a",), ""), "tasks[1]: model_version is empty"),
        (TaskIn("i", ("a",), "v1", kind="odd"),
         "tasks[1]: kind 'odd' is not allowed; use one of: recommendation, random, control"),
        (TaskIn("i", ("a",), "v1", kind="control"), CONTROL_HINT + "; got None"),
        (TaskIn("i", ("a",), "v1", kind="control", expected_grade=4), CONTROL_HINT + "; got 4"),
        (TaskIn("i", ("a",), "v1", expected_grade=1),
         "tasks[1]: expected_grade is only for controls; kind 'recommendation' must have expected_grade=None"),
        (TaskIn("i", ("a",), "v1", overlap=0), "tasks[1]: overlap is 0; use an integer >= 1"),
    ],
)
def test_add_tasks_validates_all_before_storing(repo: Repository, task: TaskIn, message: str) -> None:
    with pytest.raises(InvalidTaskError) as info:
        repo.add_tasks("c1", [_task("fine"), task])
    assert message in str(info.value)
    assert repo.campaign_overview("c1")["tasks"] == 0


def test_add_tasks_rejects_empty_campaign(repo: Repository) -> None:
    with pytest.raises(InvalidTaskError, match="campaign is empty"):
        repo.add_tasks(" ", [_task("x")])


def test_concurrent_annotators_never_exceed_overlap(repo: Repository) -> None:
    """Annotators in threads pull and answer tasks at the same time; each task still gets exactly ``overlap``."""
    import threading

    n_tasks, overlap, n_annotators = 5, 2, 4
    repo.add_tasks("c1", [_task(f"item-{i}", overlap=overlap) for i in range(n_tasks)])
    barrier = threading.Barrier(n_annotators)
    done: dict[str, list[int]] = {}

    def worker(i: int) -> None:
        name = f"ann-{i}"
        mine: list[int] = []
        try:
            barrier.wait()
            while (task := repo.next_task("c1", name)) is not None:
                repo.answer_task(name, task.task_id, "like", None, f"{name}-{task.task_id}")
                mine.append(task.task_id)
        finally:  # what it answered before any error; run_threads hands the error back
            done[name] = mine

    errors = run_threads(n_annotators, worker, timeout_s=120)
    assert errors == []
    per_task = Counter(t for tasks in done.values() for t in tasks)
    assert per_task == {t: overlap for t in range(1, n_tasks + 1)}
    assert all(len(t) == len(set(t)) for t in done.values())
    assert repo.campaign_overview("c1") == {"tasks": 5, "complete": 5, "answers": 10, "open": 0}


# ---------------------------------------------------------------------- skip and undo


def test_skip_frees_the_slot_for_others_and_is_never_served_to_the_skipper_again(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one"), _task("two")])  # overlap 1: a held slot blocks everyone else
    first = repo.next_task("c1", "alice")
    assert first is not None and first.item_id == "one"
    assert repo.next_task("c1", "bob").item_id == "two"  # type: ignore[union-attr]
    assert repo.skip_task(first.task_id, "alice") == "skipped"
    assert repo.next_task("c1", "alice") is None  # "two" is bob's, "one" she gave back
    assert repo.next_task("c1", "carol").task_id == first.task_id  # type: ignore[union-attr]
    assert repo.annotator_progress("c1", "alice") == {"answered": 0, "open": 0, "skipped": 1, "remaining": 0}
    assert repo.campaign_overview("c1") == {"tasks": 2, "complete": 0, "answers": 0, "open": 2}
    assert repo.count_feedback() == 0  # a skip is not a judgement


def test_a_skipped_task_cannot_be_answered_or_skipped_again(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one")])
    task = repo.next_task("c1", "alice")
    assert task is not None
    repo.skip_task(task.task_id, "alice")
    with pytest.raises(TaskAlreadyAnsweredError):  # its slot may be someone else's by now
        repo.answer_task("alice", task.task_id, "like", None, "late")
    with pytest.raises(InvalidTaskError, match="task 1 is not open for 'alice'"):
        repo.skip_task(task.task_id, "alice")
    with pytest.raises(InvalidTaskError, match="task 1 is not open for 'bob'"):
        repo.skip_task(task.task_id, "bob")  # nobody skips a task they were not given
    assert repo.count_feedback() == 0


def test_undo_reopens_the_latest_answer_and_the_next_answer_supersedes_it(repo: Repository, tmp_path) -> None:
    from recsys_core.labels.aggregation import agreement, aggregate
    from storage.export import export_labels, read_labels

    repo.add_tasks("c1", [_task("one"), _task("two")])
    for grade, request in ((3, "r1"), (2, "r2")):
        task = repo.next_task("c1", "alice")
        assert task is not None
        repo.answer_task("alice", task.task_id, "graded", grade, request)
    assert repo.undo_last_answer("c1", "bob") is None  # bob has nothing to undo

    reopened = repo.undo_last_answer("c1", "alice")
    assert reopened is not None and (reopened.item_id, reopened.previous) == ("two", ("graded", 2))
    assert repo.next_task("c1", "alice") == reopened  # handed back to her first
    assert repo.annotator_progress("c1", "alice") == {"answered": 1, "open": 1, "skipped": 0, "remaining": 0}
    assert repo.campaign_overview("c1")["complete"] == 1
    assert repo.count_feedback() == 2  # nothing deleted
    assert repo.answer_task("alice", reopened.task_id, "graded", 0, "r3") == FeedbackResult(True, 3)
    assert repo.campaign_overview("c1") == {"tasks": 2, "complete": 2, "answers": 2, "open": 0}
    with Session(repo.engine) as s:
        assignment = s.exec(select(TaskAssignment).where(TaskAssignment.task_id == reopened.task_id)).one()
    assert (assignment.status, assignment.feedback_id) == ("answered", 3)

    frame = repo.judgements_frame("c1")
    assert frame["feedback_id"].tolist() == [1, 2, 3]  # the superseded answer is history, not erased
    labels = aggregate(frame)
    assert sorted(labels.feedback_ids) == [1, 3]  # ... and no longer counts
    by_item = dict(zip(labels.examples["item_id"], labels.examples["label"]))
    assert by_item == {"one": 1.0, "two": 0.0}
    assert agreement(frame).n_units == 2  # one value per annotator and unit
    paths = export_labels(frame, tmp_path, ["csv"], pseudonymise=False)
    exported = read_labels(paths["csv"])
    assert exported["feedback_id"].tolist() == [1, 2, 3]
    assert exported.loc[exported["item_id"] == "two", "grade"].tolist() == [2, 0]


def test_repeated_undos_unwind_like_a_stack(repo: Repository) -> None:
    repo.add_tasks("c1", [_task(f"item-{i}") for i in range(3)])
    for i in range(3):
        task = repo.next_task("c1", "alice")
        repo.answer_task("alice", task.task_id, "like", None, f"r{i}")  # type: ignore[union-attr]
    assert repo.undo_last_answer("c1", "alice").item_id == "item-2"  # type: ignore[union-attr]
    assert repo.undo_last_answer("c1", "alice").item_id == "item-1"  # type: ignore[union-attr]
    # The latest undo comes back first; after answering it, the other re-opened one.
    first = repo.next_task("c1", "alice")
    assert first is not None and first.item_id == "item-1"
    repo.answer_task("alice", first.task_id, "dislike", None, "r1-again")
    assert repo.next_task("c1", "alice").item_id == "item-2"  # type: ignore[union-attr]


def test_skipping_a_reopened_task_keeps_the_earlier_answer(repo: Repository) -> None:
    repo.add_tasks("c1", [_task("one"), _task("two")])
    task = repo.next_task("c1", "alice")
    repo.answer_task("alice", task.task_id, "like", None, "r1")  # type: ignore[union-attr]
    reopened = repo.undo_last_answer("c1", "alice")
    assert reopened is not None
    assert repo.skip_task(reopened.task_id, "alice") == "kept"
    assert repo.annotator_progress("c1", "alice") == {"answered": 1, "open": 0, "skipped": 0, "remaining": 1}
    assert repo.next_task("c1", "alice").item_id == "two"  # type: ignore[union-attr]
    with Session(repo.engine) as s:
        kept = s.exec(select(TaskAssignment).where(TaskAssignment.task_id == reopened.task_id)).one()
    assert (kept.status, kept.feedback_id, kept.skipped_at) == ("answered", 1, None)
