"""storage/views.py: the one reader of judgements (judgements_frame, the anonymous rule) and the statistics."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage import ALLOWED_LABELS, FeedbackIn, LabelSession, Repository, add_feedback, list_feedback
from storage.views import ANONYMOUS, JUDGEMENT_COLUMNS, is_anonymous
from tests.storage.helpers import _fb


def test_list_feedback_newest_first_with_limit(engine: Engine) -> None:
    with Session(engine) as s:
        for i in range(5):
            add_feedback(session=s, feedback=_fb(f"r{i}", label=ALLOWED_LABELS[i % 2]))
        s.commit()
    with Session(engine) as s:
        assert [f.request_id for f in list_feedback(session=s)] == ["r4", "r3", "r2", "r1", "r0"]
        assert [f.request_id for f in list_feedback(session=s, limit=2)] == ["r4", "r3"]
        assert list_feedback(session=s, limit=0) == []


def test_my_feedback_returns_only_own_rows(repo: Repository) -> None:
    repo.add_feedback(_fb("a1", annotator="alice"))
    repo.add_feedback(_fb("b1", annotator="bob", label="dislike"))
    repo.add_feedback(_fb("a2", annotator="alice", label="graded", grade=3))
    repo.add_feedback(_fb("n1"))
    assert [f.request_id for f in repo.my_feedback("alice")] == ["a2", "a1"]
    assert [f.request_id for f in repo.my_feedback("bob")] == ["b1"]
    assert [f.request_id for f in repo.my_feedback("alice", limit=1)] == ["a2"]
    assert repo.my_feedback("nobody") == []


# --------------------------------------------------------------------------- statistics


def test_judgements_frame_marks_controls_and_scales_expected(filled: Repository) -> None:
    frame = filled.judgements_frame()
    assert tuple(frame.columns) == JUDGEMENT_COLUMNS
    assert len(frame) == 10
    rows = {(r.annotator, r.item_id): r for r in frame.itertuples(index=False)}
    hi_alice = rows[("alice", "ctl-hi")]
    assert (hi_alice.label, hi_alice.grade, hi_alice.is_control, hi_alice.expected) == ("graded", 2, True, 1.0)
    assert hi_alice.campaign == "graded" and hi_alice.task_id == 2 and hi_alice.context_ids == ["ctx-1"]
    assert rows[("alice", "ctl-mid")].expected == pytest.approx(1 / 3)
    assert rows[("carol", "ctl-like")].expected == 1.0  # like/dislike control: 0/1 as is
    assert rows[("carol", "ctl-like")].model_version == "random"
    rec = rows[("bob", "rec-1")]
    assert (rec.is_control, math.isnan(rec.expected), rec.grade) == (False, True, 1)
    free = rows[("dave", "item x")]
    assert (free.is_control, free.campaign, free.grade, free.task_id) == (False, None, pd.NA, pd.NA)
    assert frame.loc[frame["annotator"] == ANONYMOUS, "item_id"].tolist() == ["item-3"]  # never None
    assert frame["annotator"].notna().all()
    assert str(frame["grade"].dtype) == "Int64" and str(frame["created_at"].dtype) == "datetime64[us, UTC]"
    assert frame["feedback_id"].tolist() == sorted(frame["feedback_id"])


def test_judgements_frame_filters_by_campaign(filled: Repository) -> None:
    graded = filled.judgements_frame("graded")
    assert set(graded["campaign"]) == {"graded"} and len(graded) == 5
    assert graded["is_control"].sum() == 3
    assert filled.judgements_frame("binary")["annotator"].tolist() == ["carol"]
    empty = filled.judgements_frame("nope")
    assert tuple(empty.columns) == JUDGEMENT_COLUMNS and len(empty) == 0


def test_judgements_without_annotator_are_named_once_per_labelling_session(repo: Repository) -> None:
    """Distinct anonymous browser sessions stay distinct raters; without a session they share one name."""
    for request_id, session_key in (("s1-a", "sess-1"), ("s1-b", "sess-1"), ("s2-a", "sess-2"), ("none", None)):
        repo.add_feedback(FeedbackIn(request_id, f"item-{request_id}", "like", ("ctx-1",), "v1",
                                     session_key=session_key))
    repo.add_feedback(FeedbackIn("named", "item-n", "like", ("ctx-1",), "v1", session_key="sess-3", annotator="erin"))
    frame = repo.judgements_frame()
    with Session(repo.engine) as s:
        ids = {row.session_key: row.id for row in s.exec(select(LabelSession)).all()}
    assert frame["annotator"].tolist() == [
        f"anonymous-{ids['sess-1']}", f"anonymous-{ids['sess-1']}", f"anonymous-{ids['sess-2']}", ANONYMOUS, "erin",
    ]
    assert all(is_anonymous(a) for a in frame["annotator"][:4]) and not is_anonymous("erin")
    assert not is_anonymous("anonymous-bob") and not is_anonymous("anonymous-")


def test_like_rate_by_model_and_label_counts(filled: Repository) -> None:
    # The Admin tab's definition: 👍 or a grade of 2-3 over non-control judgements. "random" has only
    # carol's control, so no row; v1 = alice 3 and bob 1 on rec-1, then dave's like, dislike, like.
    assert filled.like_rate_by_model().to_dict("records") == [
        {"model_version": "v1", "judgements": 5, "like_rate": pytest.approx(3 / 5)},
        {"model_version": "v2", "judgements": 1, "like_rate": 0.0},
    ]
    assert filled.like_rate_by_model("graded").to_dict("records") == [
        {"model_version": "v1", "judgements": 2, "like_rate": 0.5},
    ]
    assert list(filled.like_rate_by_model("nope").columns) == ["model_version", "judgements", "like_rate"]
    assert filled.label_counts() == {"like": 2, "dislike": 3, "graded": 5, "total": 10}


def test_agreement_training_labels_and_exports_name_the_same_annotators(repo: Repository, tmp_path: Path) -> None:
    """The Admin agreement table, the training labels and the exports read the same rows through
    judgements_frame, so they name the same people, anonymous ones included (two anonymous browser
    sessions stay two raters; a judgement with no session is ``anonymous``)."""
    from recsys_core.labels.aggregation import aggregate, agreement
    from storage.export import export_labels, read_labels

    judgements = [  # (annotator, session, item, label): everyone judges the same two pairs
        ("alice", "sess-a", "i1", "like"), ("alice", "sess-a", "i2", "dislike"),
        ("bob", None, "i1", "like"), ("bob", None, "i2", "like"),
        (None, "sess-1", "i1", "like"), (None, "sess-1", "i2", "dislike"),
        (None, "sess-2", "i1", "dislike"),
        (None, None, "i2", "like"),
    ]
    for n, (annotator, session_key, item, label) in enumerate(judgements):
        repo.add_feedback(FeedbackIn(f"r{n}", item, label, ("c1", "c2"), "v1", session_key=session_key,
                                     annotator=annotator))
    with Session(repo.engine) as s:
        ids = {row.session_key: row.id for row in s.exec(select(LabelSession)).all()}
    people = {"alice", "bob", f"anonymous-{ids['sess-1']}", f"anonymous-{ids['sess-2']}", ANONYMOUS}

    frame = repo.judgements_frame()
    assert set(frame["annotator"]) == people and frame["annotator"].notna().all()

    # Admin: the agreement table (per_annotator) and its annotator count.
    report = agreement(frame)
    assert set(report.per_annotator["annotator"]) == people and report.n_annotators == len(people)
    # Training: every annotator is either in some example or named as excluded; nobody is "None".
    labels = aggregate(frame)
    in_examples = {a for names in labels.examples["annotators"] for a in names}
    assert in_examples | set(labels.excluded_annotators) == people
    assert set(labels.feedback_ids) <= set(frame["feedback_id"])
    # Exports: as written (no pseudonyms) and read back, the same names, row for row; pseudonymised,
    # one pseudonym per person and the anonymous names as they are.
    for fmt, path in export_labels(frame, tmp_path / "plain", formats=("csv", "parquet", "jsonl"),
                                   pseudonymise=False).items():
        back = read_labels(path)
        assert back["annotator"].tolist() == frame["annotator"].tolist(), fmt
        assert set(agreement(back).per_annotator["annotator"]) == people, fmt
    key = b"k" * 32
    shared = read_labels(export_labels(frame, tmp_path / "shared", formats=("csv",), key=key)["csv"])
    pairs = set(zip(frame["annotator"], shared["annotator"]))
    assert len(pairs) == len(people) == shared["annotator"].nunique()
    assert {shown for name, shown in pairs if is_anonymous(name)} == {name for name in people if is_anonymous(name)}
    assert set(aggregate(shared).examples["n_annotators"]) == set(labels.examples["n_annotators"])
