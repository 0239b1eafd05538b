"""Inter-annotator agreement: published and hand-computed values, and NaN instead of crashes."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score

from recsys_core.labels.agreement import (
    AgreementReport,
    agreement_report,
    annotator_stats,
    krippendorff_alpha,
    pairwise_cohen_kappa,
)

NAN = float("nan")


def long_format(table: dict[str, list[float]]) -> pd.DataFrame:
    """{annotator: [value per unit, NaN = not judged]} -> long ratings with units 0..n-1."""
    rows = [(unit, name, value) for name, values in table.items()
            for unit, value in enumerate(values) if not math.isnan(value)]
    return pd.DataFrame(rows, columns=["unit", "annotator", "value"])


# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", example C: 4 coders x 12 units,
# missing values. Published: nominal alpha = 0.743, interval alpha = 0.849.
KRIPPENDORFF_2011 = long_format({
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    "C": [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
})


@contextmanager
def no_warnings() -> Iterator[None]:
    """Any warning inside fails the test: undefined statistics must be a silent NaN."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_alpha_reproduces_krippendorffs_published_example():
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level="nominal"), 3) == 0.743
    assert round(krippendorff_alpha(KRIPPENDORFF_2011, level="interval"), 3) == 0.849


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_alpha_is_one_for_perfect_agreement(level):
    ratings = long_format({"a": [1, 2, 3, 1], "b": [1, 2, 3, 1], "c": [1, 2, 3, NAN]})
    assert krippendorff_alpha(ratings, level=level) == pytest.approx(1.0)


def test_alpha_matches_a_hand_computed_two_coder_case():
    # Units (a, b): (1, 1), (1, 0), (0, 0). Coincidences: o_11 = 2, o_00 = 2, o_10 = o_01 = 1; n = 6,
    # n_1 = n_0 = 3. D_o = 2/6; D_e = 2 * 3 * 3 / (6 * 5) = 0.6; alpha = 1 - (1/3) / 0.6 = 4/9.
    ratings = long_format({"a": [1, 1, 0], "b": [1, 0, 0]})
    assert krippendorff_alpha(ratings) == pytest.approx(4 / 9)


def test_alpha_is_nan_not_an_error_when_undefined():
    with no_warnings():
        assert math.isnan(krippendorff_alpha(long_format({"a": [1, 0, 1]})))  # one annotator
        # Two annotators but never on the same unit: nothing pairable.
        assert math.isnan(krippendorff_alpha(long_format({"a": [1, NAN], "b": [NAN, 0]})))
        # Everyone always says 1: no variation, expected disagreement 0, alpha = 0/0.
        assert math.isnan(krippendorff_alpha(long_format({"a": [1, 1], "b": [1, 1]})))
        # Variation only in an unpairable unit: again 0/0 among the pairable values.
        assert math.isnan(krippendorff_alpha(long_format({"a": [1, 0], "b": [1, NAN]})))
        assert math.isnan(krippendorff_alpha(pd.DataFrame(columns=["unit", "annotator", "value"])))


def test_alpha_rejects_an_unknown_level_and_missing_columns():
    with pytest.raises(ValueError, match="unknown level of measurement 'binary'"):
        krippendorff_alpha(KRIPPENDORFF_2011, level="binary")
    with pytest.raises(ValueError, match=r"lack column\(s\) \['value'\]"):
        krippendorff_alpha(pd.DataFrame({"unit": [1], "annotator": ["a"]}))


def test_alpha_keeps_the_last_judgement_when_an_annotator_repeats_a_unit():
    # b first says 0 on unit 0 and then corrects to 1: perfect agreement with a.
    ratings = pd.DataFrame({"unit": [0, 1, 0, 1, 0], "annotator": ["a", "a", "b", "b", "b"],
                            "value": [1, 0, 0, 0, 1]})
    assert krippendorff_alpha(ratings) == pytest.approx(1.0)


def test_unweighted_kappa_matches_hand_computation_and_sklearn():
    # a = 1,1,1,0,0; b = 1,1,0,0,0. p_o = 4/5. Marginals: a 3/5 ones, b 2/5 ones.
    # p_e = 3/5 * 2/5 + 2/5 * 3/5 = 12/25. kappa = (4/5 - 12/25) / (1 - 12/25) = 8/13.
    a, b = [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]
    out = pairwise_cohen_kappa(long_format({"a": a, "b": b}))
    assert list(out.columns) == ["annotator_a", "annotator_b", "kappa", "n_common"]
    assert out.loc[0, ["annotator_a", "annotator_b", "n_common"]].tolist() == ["a", "b", 5]
    assert out.loc[0, "kappa"] == pytest.approx(8 / 13)
    assert out.loc[0, "kappa"] == pytest.approx(cohen_kappa_score(a, b))


@pytest.mark.parametrize(("weights", "expected"), [("linear", 0.8), ("quadratic", 0.9)])
def test_weighted_kappa_on_a_graded_scale(weights, expected):
    # a = 0,1,2,3; b = 0,2,2,3: one disagreement (1 vs 2), weight 1 in both schemes, so sum(w*O) = 1.
    # E_ij = a_i * b_j / 4 with a_i = 1 and b = (1, 0, 2, 1):
    # linear:    sum(w*E) = (1*6 + 2*4 + 1*6) / 4 = 5   -> kappa = 1 - 1/5  = 0.8
    # quadratic: sum(w*E) = (1*14 + 2*6 + 1*14) / 4 = 10 -> kappa = 1 - 1/10 = 0.9
    out = pairwise_cohen_kappa(long_format({"a": [0, 1, 2, 3], "b": [0, 2, 2, 3]}), weights=weights)
    assert out.loc[0, "kappa"] == pytest.approx(expected)


def test_weighted_kappa_uses_the_whole_scale_even_if_a_pair_skips_a_grade():
    # Grades stored on the 0..1 scale (g/3). a and b never use grade 2, but c does on another unit,
    # so distances are measured on codes 0..3 (what sklearn gives with labels=[0, 1, 2, 3]).
    a, b = [0, 1, 3, 3], [1, 1, 3, 0]
    table = {"a": [g / 3 for g in a] + [NAN], "b": [g / 3 for g in b] + [NAN], "c": [NAN] * 4 + [2 / 3]}
    out = pairwise_cohen_kappa(long_format(table), weights="linear")
    ab = out[(out.annotator_a == "a") & (out.annotator_b == "b")].iloc[0]
    assert ab["kappa"] == pytest.approx(cohen_kappa_score(a, b, labels=[0, 1, 2, 3], weights="linear"))
    assert ab["kappa"] != pytest.approx(cohen_kappa_score([0, 1, 2, 2], [1, 1, 2, 0], weights="linear"))


def test_kappa_is_nan_without_two_common_units_or_when_undefined_and_stays_silent():
    table = {"a": [1, 1, 0, NAN], "b": [1, 1, NAN, NAN], "c": [NAN, NAN, 0, 1]}
    with no_warnings():
        out = pairwise_cohen_kappa(long_format(table))
    assert out[["annotator_a", "annotator_b", "n_common"]].values.tolist() == [
        ["a", "b", 2], ["a", "c", 1], ["b", "c", 0]]
    # a-b both always said 1: p_e = 1, kappa = 0/0. a-c and b-c: fewer than 2 common units.
    assert out["kappa"].isna().all()


def test_kappa_rejects_unknown_weights_and_handles_one_annotator():
    with pytest.raises(ValueError, match="unknown kappa weights 'cubic'"):
        pairwise_cohen_kappa(KRIPPENDORFF_2011, weights="cubic")
    out = pairwise_cohen_kappa(long_format({"a": [1, 0]}))
    assert out.empty and list(out.columns) == ["annotator_a", "annotator_b", "kappa", "n_common"]


# Units u1..u6 (tuples, as recsys_core.labels.aggregation uses); u4 is a control whose right answer is 1.
#       u1 u2 u3 u4 u5 u6
#   a    1  0  1  1  .  .
#   b    1  0  0  1  .  .
#   c    0  1  .  0  1  .
#   d    1  0  1  1  .  .
#   e    .  .  .  .  .  1
STATS_TABLE = {
    "a": [1, 0, 1, 1, NAN, NAN],
    "b": [1, 0, 0, 1, NAN, NAN],
    "c": [0, 1, NAN, 0, 1, NAN],
    "d": [1, 0, 1, 1, NAN, NAN],
    "e": [NAN, NAN, NAN, NAN, NAN, 1],
}


def stats_ratings() -> pd.DataFrame:
    ratings = long_format(STATS_TABLE)
    return ratings.assign(unit=[("ctx", f"u{u + 1}") for u in ratings["unit"]])


def test_annotator_stats_worked_example():
    controls = pd.DataFrame({"unit": [("ctx", "u4")], "expected": [1.0]})
    out = annotator_stats(stats_ratings(), controls)
    assert list(out.columns) == ["annotator", "n_labels", "control_n", "control_accuracy", "majority_agreement"]
    assert out["annotator"].tolist() == ["a", "b", "c", "d", "e"]
    assert out["n_labels"].tolist() == [4, 4, 4, 4, 1]
    assert out["control_n"].tolist() == [1, 1, 1, 1, 0]
    assert out["control_accuracy"].tolist()[:4] == [1.0, 1.0, 0.0, 1.0]
    assert math.isnan(out["control_accuracy"].iloc[4])  # e answered no control: unknown, not 0
    # Majority of the *others* per unit (a tie among the others skips that unit):
    # a: u1 others (1,0,1)->1 hit, u2 (0,1,0)->0 hit, u3 (0,1) tie skip, u4 hit        -> 3/3 = 1.0
    # b: u1 hit, u2 hit, u3 others (1,1)->1 but b said 0 miss, u4 hit                   -> 3/4 = 0.75
    # c: u1 others all 1 (c 0) miss, u2 others all 0 (c 1) miss, u4 miss; u5 alone skip -> 0/3 = 0.0
    # d: u1 hit, u2 hit, u3 others (1,0) tie skip, u4 hit                               -> 3/3 = 1.0
    # e: shares no unit                                                                 -> NaN
    assert out["majority_agreement"].tolist()[:4] == [1.0, 0.75, 0.0, 1.0]
    assert math.isnan(out["majority_agreement"].iloc[4])


def test_annotator_stats_without_controls_gives_zero_control_count():
    out = annotator_stats(stats_ratings())
    assert out["control_n"].tolist() == [0] * 5
    assert out["control_accuracy"].isna().all()


def test_agreement_report_bundles_everything():
    report = agreement_report(KRIPPENDORFF_2011, level="nominal")
    assert isinstance(report, AgreementReport)
    assert round(report.alpha, 3) == 0.743 and report.level == "nominal"
    assert (report.n_units, report.n_annotators) == (12, 4)
    assert len(report.pairwise) == 6  # 4 choose 2
    assert report.per_annotator["n_labels"].tolist() == [9, 11, 10, 11]
    with pytest.raises(AttributeError):
        report.alpha = 0.0  # type: ignore[misc]  # frozen


def test_agreement_report_on_an_ordinal_scale_weights_kappa():
    report = agreement_report(long_format({"a": [0, 1, 2, 3], "b": [0, 2, 2, 3]}), level="ordinal")
    assert report.pairwise.loc[0, "kappa"] == pytest.approx(0.8)  # linear weights, see above
    assert np.isfinite(report.alpha)
