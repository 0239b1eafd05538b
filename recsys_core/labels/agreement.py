"""Inter-annotator agreement: how far the people who label recommendations agree with each other.

Why this exists: labels collected in the studio become training data (``recsys_core.labels.aggregation``), and
a model can only learn what annotators agree on. Krippendorff's alpha gives one number for the whole
pool (any number of annotators, missing judgements allowed); pairwise Cohen's kappa shows *which*
pairs disagree; per-annotator statistics (control accuracy, agreement with the others' majority)
single out an annotator who clicks at random so their labels can be left out.

Every function takes ratings in long format, one judgement per row:

``unit``
    Hashable id of the thing judged (e.g. a ``(context_key, item_id)`` tuple).
``annotator``
    Who judged it (str).
``value``
    The judgement as a number (e.g. 0/1 or a 0..3 grade).

An annotator who judged the same unit twice counts once, with their *last* row (a later judgement
supersedes an earlier one).

The maths is delegated to the ``krippendorff`` package and scikit-learn; this module only reshapes
the data and turns undefined statistics into NaN instead of exceptions or warnings.
"""

from __future__ import annotations

import itertools
import logging
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

LEVELS: tuple[str, ...] = ("nominal", "ordinal", "interval", "ratio")
KAPPA_WEIGHTS: tuple[str | None, ...] = (None, "linear", "quadratic")
RATING_COLUMNS: tuple[str, ...] = ("unit", "annotator", "value")
PAIRWISE_COLUMNS: tuple[str, ...] = ("annotator_a", "annotator_b", "kappa", "n_common")
ANNOTATOR_COLUMNS: tuple[str, ...] = ("annotator", "n_labels", "control_n", "control_accuracy", "majority_agreement")
# Values are compared with this absolute tolerance: grades stored as g/3 must match an ``expected``
# written as a float without failing on the last bit.
VALUE_ATOL = 1e-9


def _check_ratings(ratings: pd.DataFrame) -> pd.DataFrame:
    """Validate the long format and drop superseded duplicates (last row per annotator and unit wins)."""
    missing = [c for c in RATING_COLUMNS if c not in ratings.columns]
    if missing:
        raise ValueError(f"ratings lack column(s) {missing}; expected columns {list(RATING_COLUMNS)}")
    frame = ratings.loc[:, list(RATING_COLUMNS)].dropna(subset=["value"])
    frame = frame.assign(annotator=frame["annotator"].astype(str), value=frame["value"].astype(float))
    deduped = frame.drop_duplicates(subset=["annotator", "unit"], keep="last")
    if len(deduped) < len(frame):
        log.info("ignored %d superseded judgement(s) (same annotator and unit)", len(frame) - len(deduped))
    return deduped.reset_index(drop=True)


def _reliability_matrix(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Annotator x unit matrix of values, NaN where an annotator did not judge a unit.

    Rows follow the sorted annotator names, so pairwise output has a stable order.
    """
    a_codes, annotators = pd.factorize(frame["annotator"], sort=True)
    u_codes, units = pd.factorize(frame["unit"])
    matrix = np.full((len(annotators), len(units)), np.nan)
    matrix[a_codes, u_codes] = frame["value"].to_numpy(dtype=float)
    return matrix, [str(a) for a in annotators]


def krippendorff_alpha(ratings: pd.DataFrame, level: str = "nominal") -> float:
    """Krippendorff's alpha over all annotators and units (``krippendorff.alpha``).

    Returns NaN rather than raising when alpha is undefined: fewer than 2 annotators, no unit with
    2+ values, or no variation at all among the values (expected disagreement 0, alpha = 0/0).
    """
    if level not in LEVELS:
        raise ValueError(f"unknown level of measurement {level!r}; use one of {list(LEVELS)}")
    frame = _check_ratings(ratings)
    matrix, annotators = _reliability_matrix(frame)
    pairable = (~np.isnan(matrix)).sum(axis=0) >= 2
    if len(annotators) < 2 or not pairable.any():
        return float("nan")
    if np.unique(matrix[~np.isnan(matrix)]).size < 2:
        return float("nan")  # the library raises here: a one-value domain has no expected disagreement
    import krippendorff  # deferred: only needed when agreement is actually computed

    with np.errstate(divide="ignore", invalid="ignore"):  # pairable values all equal -> 0/0 -> NaN
        return float(krippendorff.alpha(reliability_data=matrix, level_of_measurement=level))


def _kappa(a: np.ndarray, b: np.ndarray, n_levels: int, weights: str | None) -> float:
    """sklearn's Cohen kappa on integer codes; NaN (and no warning) when kappa is undefined."""
    from sklearn.metrics import cohen_kappa_score

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # sklearn warns, then returns NaN, when kappa is 0/0
        kappa = cohen_kappa_score(a, b, labels=np.arange(n_levels), weights=weights)
    return float(kappa)


def pairwise_cohen_kappa(ratings: pd.DataFrame, weights: str | None = None) -> pd.DataFrame:
    """Cohen's kappa for every pair of annotators, on the units both judged.

    Values are coded by their rank on the scale of *all* values in ``ratings`` before calling
    sklearn (which weights by label position and rejects non-integer floats such as 1/3): so a
    weighted kappa always measures distances on the whole graded scale, even for a pair that never
    used some grade. Kappa is NaN with fewer than 2 common units or when it is undefined.
    """
    if weights not in KAPPA_WEIGHTS:
        raise ValueError(f"unknown kappa weights {weights!r}; use one of {list(KAPPA_WEIGHTS)}")
    frame = _check_ratings(ratings)
    matrix, annotators = _reliability_matrix(frame)
    domain = np.unique(matrix[~np.isnan(matrix)])
    rows = []
    for i, j in itertools.combinations(range(len(annotators)), 2):
        common = ~np.isnan(matrix[i]) & ~np.isnan(matrix[j])
        n_common = int(common.sum())
        kappa = float("nan")
        if n_common >= 2:
            codes_a = np.searchsorted(domain, matrix[i, common])
            codes_b = np.searchsorted(domain, matrix[j, common])
            kappa = _kappa(codes_a, codes_b, len(domain), weights)
        rows.append((annotators[i], annotators[j], kappa, n_common))
    out = pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))
    return out.astype({"annotator_a": object, "annotator_b": object, "kappa": float, "n_common": int})


def _control_accuracy(frame: pd.DataFrame, controls: pd.DataFrame | None) -> pd.DataFrame:
    """Per annotator: how many control units they answered and the fraction answered as expected."""
    empty = pd.DataFrame({"annotator": pd.Series(dtype=object), "control_n": pd.Series(dtype=int),
                          "control_accuracy": pd.Series(dtype=float)})
    if controls is None or controls.empty:
        return empty
    missing = [c for c in ("unit", "expected") if c not in controls.columns]
    if missing:
        raise ValueError(f"controls lack column(s) {missing}; expected columns ['unit', 'expected']")
    expected = controls.drop_duplicates(subset=["unit"], keep="last").loc[:, ["unit", "expected"]]
    answered = frame.merge(expected, on="unit", how="inner")
    if answered.empty:
        return empty
    answered = answered.assign(correct=np.isclose(answered["value"], answered["expected"].astype(float),
                                                  rtol=0.0, atol=VALUE_ATOL))
    grouped = answered.groupby("annotator")["correct"]
    return pd.DataFrame({"control_n": grouped.size(), "control_accuracy": grouped.mean()}).reset_index()


def _others_majority(values: np.ndarray) -> float | None:
    """The single most frequent value in ``values``; None when the top count is tied (no majority)."""
    uniques, counts = np.unique(values, return_counts=True)
    top = counts == counts.max()
    return float(uniques[top][0]) if top.sum() == 1 else None


def _majority_agreement(frame: pd.DataFrame) -> pd.Series:
    """Per annotator: fraction of their labels on shared units equal to the others' majority value.

    A unit where the *other* annotators have no single most frequent value is skipped for that
    annotator: there is no majority to agree or disagree with. NaN when nothing was compared.
    """
    hits: dict[str, list[bool]] = {a: [] for a in frame["annotator"].unique()}
    for _, unit in frame.groupby("unit", sort=False):
        if len(unit) < 2:
            continue
        names, values = unit["annotator"].to_numpy(), unit["value"].to_numpy(dtype=float)
        for k, name in enumerate(names):
            majority = _others_majority(np.delete(values, k))
            if majority is not None:
                hits[name].append(bool(np.isclose(values[k], majority, rtol=0.0, atol=VALUE_ATOL)))
    return pd.Series({a: (float(np.mean(h)) if h else float("nan")) for a, h in hits.items()}, dtype=float)


def annotator_stats(ratings: pd.DataFrame, controls: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per annotator (sorted by name): label count, control accuracy, majority agreement.

    ``controls`` has columns ``unit`` and ``expected``: units whose right answer is known. An
    annotator who answered none of them gets ``control_n`` 0 and NaN accuracy (unknown, not bad).
    """
    frame = _check_ratings(ratings)
    counts = frame.groupby("annotator").size().rename("n_labels").reset_index()
    out = counts.merge(_control_accuracy(frame, controls), on="annotator", how="left")
    out["control_n"] = out["control_n"].fillna(0).astype(int)
    out["control_accuracy"] = out["control_accuracy"].astype(float)
    out["majority_agreement"] = out["annotator"].map(_majority_agreement(frame)).astype(float)
    out = out.astype({"annotator": object, "n_labels": int})
    return out.loc[:, list(ANNOTATOR_COLUMNS)].sort_values("annotator").reset_index(drop=True)


@dataclass(frozen=True, eq=False)  # eq=False: comparing DataFrame fields with == is ambiguous
class AgreementReport:
    """Agreement of one pool of ratings: alpha overall, kappa per pair, statistics per annotator."""

    alpha: float
    level: str
    n_units: int
    n_annotators: int
    pairwise: pd.DataFrame
    per_annotator: pd.DataFrame


def agreement_report(ratings: pd.DataFrame, controls: pd.DataFrame | None = None,
                     level: str = "nominal") -> AgreementReport:
    """Everything the labelling dashboard shows about agreement, computed in one call.

    Pairwise kappa is unweighted for a nominal level and linearly weighted otherwise, so that a
    graded scale is not treated as unordered categories.
    """
    frame = _check_ratings(ratings)
    weights = None if level == "nominal" else "linear"
    return AgreementReport(
        alpha=krippendorff_alpha(frame, level=level),
        level=level,
        n_units=int(frame["unit"].nunique()),
        n_annotators=int(frame["annotator"].nunique()),
        pairwise=pairwise_cohen_kappa(frame, weights=weights),
        per_annotator=annotator_stats(frame, controls),
    )
