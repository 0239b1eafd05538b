"""Judgements -> training labels: values, annotator exclusion, majority/soft/ties, snapshots, splits."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from recsys_core.labels.aggregation import (
    EXAMPLE_COLUMNS,
    AggregationConfig,
    LabelSet,
    aggregate,
    judgement_value,
    nested_groups,
    split_heldout,
)


class Judgements:
    """Builds a judgements frame row by row, numbering feedback ids 1, 2, 3... in call order."""

    def __init__(self) -> None:
        self.rows: list[dict] = []

    def add(self, annotator: str, context: list[str] | tuple[str, ...], item: str, label: str,
            grade: int | None = None, *, control: bool = False, expected: float | None = None,
            model: str = "v1") -> Judgements:
        self.rows.append({"feedback_id": len(self.rows) + 1, "annotator": annotator, "context_ids": context,
                          "item_id": item, "label": label, "grade": grade, "is_control": control,
                          "expected": expected, "model_version": model})
        return self

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


def spammer_case() -> pd.DataFrame:
    """a and b are careful; c fails the control and contradicts them on item x.

    ids: 1 a x like, 2 b x like, 3 c x dislike, 4 c y dislike, 5 a ctl dislike (ctrl, expected 0),
    6 b ctl dislike (ctrl), 7 c ctl like (ctrl, wrong).
    """
    j = Judgements()
    j.add("a", ["m1"], "x", "like").add("b", ["m1"], "x", "like").add("c", ["m1"], "x", "dislike")
    j.add("c", ["m1"], "y", "dislike")
    for who, label in (("a", "dislike"), ("b", "dislike"), ("c", "like")):
        j.add(who, ["m1"], "ctl", label, control=True, expected=0.0)
    return j.frame()


@pytest.mark.parametrize(("label", "grade", "expected"), [
    ("like", None, 1.0), ("dislike", None, 0.0), ("like", float("nan"), 1.0),
    ("graded", 0, 0.0), ("graded", 1, 1 / 3), ("graded", 2, 2 / 3), ("graded", 3, 1.0), ("graded", 2.0, 2 / 3),
])
def test_judgement_value_maps_onto_zero_one(label, grade, expected):
    assert judgement_value(label, grade) == pytest.approx(expected)


@pytest.mark.parametrize(("label", "grade", "message"), [
    ("like", 2, "takes no grade"), ("dislike", 0, "takes no grade"), ("graded", None, "needs an integer grade"),
    ("graded", 1.5, "needs an integer grade"), ("graded", True, "needs an integer grade"),
    ("graded", 4, "outside 0..3"), ("graded", -1, "outside 0..3"), ("love", None, "unknown label 'love'"),
])
def test_judgement_value_rejects_bad_combinations(label, grade, message):
    with pytest.raises(ValueError, match=message):
        judgement_value(label, grade)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"method": "median"}, "unknown aggregation method 'median'"),
    ({"min_control_accuracy": 1.5}, "min_control_accuracy must be a fraction"),
    ({"min_majority_agreement": -0.1}, "min_majority_agreement must be a fraction"),
    ({"positive_threshold": 0.0}, "positive_threshold must be in"),
    ({"min_annotators": 0}, "min_annotators must be an integer >= 1"),
    ({"min_annotators": 1.5}, "min_annotators must be an integer >= 1"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AggregationConfig(**kwargs)


def test_config_json_is_canonical():
    assert json.loads(AggregationConfig().to_json()) == {
        "method": "majority", "min_control_accuracy": 0.7, "min_majority_agreement": 0.0,
        "positive_threshold": 0.5, "min_annotators": 1}
    assert AggregationConfig().to_json() == AggregationConfig().to_json()


def test_failed_control_excludes_the_annotator_and_all_their_labels():
    labels = aggregate(spammer_case())
    # c: 1 control answered, 0 right -> 0.00 < 0.70. a and b: 1/1.
    assert labels.excluded_annotators == {"c": "control accuracy 0.00 < 0.70"}
    ex = labels.examples
    assert list(ex.columns) == list(EXAMPLE_COLUMNS)
    # Item y was judged only by c: gone. Item x: only a and b's likes remain. Controls never appear.
    assert ex[["context_key", "item_id", "label", "n_annotators"]].values.tolist() == [["m1", "x", 1.0, 2]]
    assert ex.loc[0, "annotators"] == ("a", "b")
    assert labels.feedback_ids == (1, 2)


def test_without_the_control_threshold_the_spammer_counts():
    labels = aggregate(spammer_case(), AggregationConfig(min_control_accuracy=0.0))
    assert labels.excluded_annotators == {}
    # x: like, like, dislike -> majority 1; y: c's dislike alone -> 0. Control rows (5-7) still unused.
    assert labels.examples[["item_id", "label", "n_annotators"]].values.tolist() == [["x", 1.0, 3], ["y", 0.0, 1]]
    assert labels.examples.loc[0, "annotators"] == ("a", "b", "c")
    assert labels.feedback_ids == (1, 2, 3, 4)


def test_majority_agreement_threshold_excludes_with_a_reason():
    # c: on x the others (a, b) say like, c dislike; on the control unit they say dislike, c like
    # -> 0/2 = 0.00. a and b: their others (one of them plus c) always tie -> skipped -> NaN, kept.
    config = AggregationConfig(min_control_accuracy=0.0, min_majority_agreement=0.5)
    labels = aggregate(spammer_case(), config)
    assert labels.excluded_annotators == {"c": "majority agreement 0.00 < 0.50"}
    assert labels.feedback_ids == (1, 2)


def test_majority_versus_soft_labels():
    j = Judgements()
    for who, label in (("a", "like"), ("b", "like"), ("c", "dislike")):
        j.add(who, ["m1"], "x", label)
    for who, grade in (("a", 3), ("b", 2), ("c", 0)):
        j.add(who, ["m1"], "z", "graded", grade)
    frame = j.frame()
    majority = aggregate(frame, AggregationConfig(method="majority"))
    soft = aggregate(frame, AggregationConfig(method="soft"))
    # x: votes 1, 1, 0 -> majority 1.0; soft mean 2/3.
    # z: values 1, 2/3, 0 -> two votes >= 0.5 -> majority 1.0; soft (1 + 2/3 + 0) / 3 = 5/9.
    assert majority.examples["label"].tolist() == [1.0, 1.0]
    assert soft.examples["label"].tolist() == pytest.approx([2 / 3, 5 / 9])
    assert majority.snapshot_id != soft.snapshot_id  # the config is part of the snapshot


def test_majority_ties_get_the_mean_value():
    j = Judgements()
    j.add("a", ["m1"], "x", "like").add("b", ["m1"], "x", "dislike")
    j.add("a", ["m1"], "z", "graded", 1).add("b", ["m1"], "z", "graded", 3)
    labels = aggregate(j.frame())
    # x: one positive, one negative -> mean 0.5. z: 1/3 (negative) vs 1 (positive) -> mean 2/3.
    assert labels.examples["label"].tolist() == pytest.approx([0.5, 2 / 3])
    # With threshold 0.9 it is still one positive (1.0) against one negative (1/3): the same tie.
    strict = aggregate(j.frame(), AggregationConfig(positive_threshold=0.9))
    assert strict.examples["label"].tolist() == pytest.approx([0.5, 2 / 3])


def test_positive_threshold_decides_majority_votes():
    j = Judgements()
    for who, grade in (("a", 2), ("b", 2), ("c", 3)):
        j.add(who, ["m1"], "x", "graded", grade)
    # Values 2/3, 2/3, 1: all >= 0.5 -> 1.0; with threshold 0.9 only c is positive, 1 vs 2 -> 0.0.
    assert aggregate(j.frame()).examples["label"].tolist() == [1.0]
    assert aggregate(j.frame(), AggregationConfig(positive_threshold=0.9)).examples["label"].tolist() == [0.0]


def test_min_annotators_drops_thin_examples_and_their_feedback_ids():
    j = Judgements()
    j.add("a", ["m1"], "x", "like").add("b", ["m1"], "x", "like").add("a", ["m1"], "y", "dislike")
    labels = aggregate(j.frame(), AggregationConfig(min_annotators=2))
    assert labels.examples["item_id"].tolist() == ["x"]
    assert labels.feedback_ids == (1, 2)


def test_context_key_ignores_order_and_rows_are_sorted():
    j = Judgements()
    j.add("a", ["m2", "m1"], "y", "like", model="v2").add("b", ("m1", "m2"), "y", "like", model="v1")
    j.add("a", ["m0"], "z", "dislike")
    ex = aggregate(j.frame()).examples
    assert ex[["context_key", "item_id", "n_annotators"]].values.tolist() == [["m0", "z", 1], ["m1|m2", "y", 2]]
    assert ex.loc[1, "context_ids"] == ("m1", "m2")
    assert ex.loc[1, "model_versions"] == ("v1", "v2")


def test_a_later_judgement_by_the_same_annotator_supersedes_the_earlier():
    j = Judgements()
    j.add("a", ["m1"], "x", "dislike").add("a", ["m1"], "x", "like")
    labels = aggregate(j.frame())
    assert labels.examples[["label", "n_annotators"]].values.tolist() == [[1.0, 1]]
    assert labels.feedback_ids == (2,)


def test_snapshot_id_is_stable_and_changes_with_any_used_label():
    frame = spammer_case()
    first = aggregate(frame).snapshot_id
    assert len(first) == 16 and int(first, 16) >= 0
    assert aggregate(frame).snapshot_id == first
    assert aggregate(frame.iloc[::-1].reset_index(drop=True)).snapshot_id == first  # row order irrelevant
    # A change in a label that is used (id 1, a on x: like -> dislike) gives a new id...
    changed = frame.copy()
    changed.loc[0, "label"] = "dislike"
    assert aggregate(changed).snapshot_id != first
    # ...and so does dropping a used judgement, or changing the config.
    assert aggregate(frame[frame.feedback_id != 2]).snapshot_id != first
    assert aggregate(frame, AggregationConfig(min_control_accuracy=0.5)).snapshot_id != first


def test_empty_input_gives_an_empty_label_set():
    for empty in (spammer_case().iloc[0:0], pd.DataFrame()):
        labels = aggregate(empty)
        assert isinstance(labels, LabelSet)
        assert labels.examples.empty and list(labels.examples.columns) == list(EXAMPLE_COLUMNS)
        assert labels.feedback_ids == () and labels.excluded_annotators == {} and len(labels.snapshot_id) == 16
        train, heldout = split_heldout(labels)
        assert train.empty and heldout.empty


def test_missing_columns_are_reported():
    with pytest.raises(ValueError, match=r"lack column\(s\) \['model_version'\]"):
        aggregate(spammer_case().drop(columns=["model_version"]))


def many_contexts(n_contexts: int = 10, items: int = 3) -> LabelSet:
    j = Judgements()
    for c in range(n_contexts):
        for i in range(items):
            j.add("a", [f"m{c}"], f"i{i}", "like" if (c + i) % 2 else "dislike")
    return aggregate(j.frame())


def test_split_heldout_keeps_each_context_on_one_side():
    labels = many_contexts()
    train, heldout = split_heldout(labels, fraction=0.2, seed=0)
    assert not set(train.context_key) & set(heldout.context_key)
    # ceil(0.2 * 10) = 2 held-out contexts with 3 items each; nothing lost or duplicated.
    assert heldout.context_key.nunique() == 2 and len(heldout) == 6 and len(train) == 24
    together = pd.concat([train, heldout]).sort_values(["context_key", "item_id"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(together, labels.examples)
    again_train, again_heldout = split_heldout(labels, fraction=0.2, seed=0)
    pd.testing.assert_frame_equal(again_heldout, heldout)
    assert any(set(split_heldout(labels, 0.2, seed=s)[1].context_key) != set(heldout.context_key)
               for s in range(1, 6))  # the seed matters


def test_split_heldout_edge_cases():
    train, heldout = split_heldout(many_contexts(n_contexts=1))
    assert len(train) == 3 and heldout.empty  # a single context cannot be split
    train, heldout = split_heldout(many_contexts(n_contexts=2), fraction=0.9)
    assert train.context_key.nunique() == 1 and heldout.context_key.nunique() == 1  # never an empty side
    with pytest.raises(ValueError, match="fraction must be in"):
        split_heldout(many_contexts(), fraction=1.0)


def test_nested_contexts_are_one_group_and_unrelated_ones_are_not():
    contexts = [("a", "b"), ("a", "b", "c"), ("c", "d"), ("a", "b", "c", "e"), ("x",), ("b", "a"), ("c", "d", "y"),
                ("a", "z")]
    groups = nested_groups(contexts)
    assert groups[0] == groups[1] == groups[3] == groups[5]  # one session's growing profile, in any order
    assert groups[2] == groups[6] and groups[2] != groups[0]  # {c, d} grew into {c, d, y}; it only overlaps {a, b, c}
    assert len({groups[4], groups[7], groups[0]}) == 3  # {a, z} shares an item with {a, b} but holds none of it
    assert nested_groups([]).tolist() == []


def test_split_heldout_keeps_a_growing_profile_on_one_side():
    """A session that liked items one by one leaves nested contexts; none of them may be held out while another is
    trained on (the held-out labels would be recalled, not predicted)."""
    j = Judgements()
    for session in range(10):
        profile = [f"s{session}p"]
        for step in range(4):
            j.add("a", list(profile), f"i{session}-{step}", "like")
            j.add("a", list(profile), f"j{session}-{step}", "dislike")
            profile.append(f"i{session}-{step}")
    labels = aggregate(j.frame())
    for seed in range(5):
        train, heldout = split_heldout(labels, fraction=0.2, seed=seed)
        session_of = lambda frame: {ids[0] for ids in frame.context_ids}  # noqa: E731 (the session's first item)
        assert heldout.context_key.nunique() == 8 and not session_of(train) & session_of(heldout)
