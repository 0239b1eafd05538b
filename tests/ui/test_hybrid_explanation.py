"""The explanation and score panels with the hybrid model: text + image + collaborative parts that add up to the
score printed on screen, the model's mix, and who contributed (content part, collaborative part, item-item
weight); with the zero-shot model nothing collaborative is shown."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from storage import Repository
from tests.hybrid_checkpoint import save_hybrid_checkpoint
from ui import render
from ui.handlers import Handlers

LIKED = ["chess", "checkers"]


@pytest.fixture
def handlers(tiny_service) -> Handlers:
    return Handlers(tiny_service, Repository.from_url("sqlite://"))


@pytest.fixture
def hybrid(tiny_service, tmp_path):
    tiny_service.load_model(save_hybrid_checkpoint(tiny_service, tmp_path / "hybrid"))
    return tiny_service


def _printed(line: str) -> tuple[float, dict[str, float]]:
    """``Score **1.813** = text 0.074 + image 0.120 + collaborative 1.619 (...)`` -> (1.813, {"text": 0.074, ...})."""
    line = line.replace("\u2212", "-")
    score = float(re.search(r"\*\*(-?\d+\.\d{3})\*\*", line).group(1))
    rhs = line.split("=", 1)[1].split("(")[0]
    return score, {name.strip(): float(value) for name, value in re.findall(r"([a-zA-Z &]+?) (-?\d+\.\d{3})", rhs)}


def _explain(handlers, item_id: str, liked=LIKED, disliked=()) -> tuple:
    state = {"liked": list(liked), "disliked": list(disliked), "selected": item_id}
    return handlers.explain(state, "fast", progress=lambda *a, **k: None)


def _bars(frame, x: str, y: str) -> dict[str, float]:
    return {label: float(v) for label, v in frame.groupby(x, sort=False)[y].sum().items()}


def test_the_hybrid_decomposition_adds_up_to_the_score_on_screen(handlers, hybrid) -> None:
    recs = hybrid.recommend(LIKED, 5)
    assert any(abs(r.collaborative_score) > 0.01 for r in recs), "the fixture's collaborative part should show"
    for rec in recs:
        explanation = hybrid.explain(LIKED, rec.item_id, "fast")
        tokens, heat, parts, history, table, summary = _explain(handlers, rec.item_id)
        score, terms = _printed(summary.split("\n\n")[0])
        assert score == round(explanation.score, 3) == round(rec.score, 3)
        assert list(terms) == ["text", "image", "collaborative"]  # no "item ID & bias" for the hybrid
        assert round(sum(terms.values()), 3) == score  # exactly, as printed
        assert terms["collaborative"] == pytest.approx(explanation.collaborative_score, abs=1.5e-3)
        # the chart's signed bars: one per part, their heights add up to the score
        bars = _bars(parts, "part", "score part")
        assert list(bars) == ["text", "image", "collaborative"]
        assert bars["collaborative"] == pytest.approx(explanation.collaborative_score, abs=1e-4)
        assert sum(bars.values()) == pytest.approx(explanation.score, abs=3e-4)
        # the result's details print the same equation
        details = render.item_details(hybrid.item(rec.item_id), rec)
        d_score, d_terms = _printed(details.split("\n\n")[1])
        assert d_score == score and round(sum(d_terms.values()), 3) == d_score and "collaborative" in d_terms


def test_the_hybrid_panel_names_the_mix_and_each_liked_items_parts(handlers, hybrid) -> None:
    item = hybrid.recommend(LIKED, 1)[0].item_id
    explanation = hybrid.explain(LIKED, item, "fast")
    *_, table, summary = _explain(handlers, item)
    assert "Model mix: **content 0.60 + collaborative 0.40**" in summary
    assert "hybrid scores" in summary  # the scale line for this model
    assert list(table.columns) == ["item", "contribution", "content part", "collaborative part", "item-item weight"]
    rows = table.to_dict("records")
    for row, share in zip(rows, explanation.history):
        assert row["item"] == hybrid.item(share.item_id).title  # a liked item: no "(disliked)"
        assert row["collaborative part"] == pytest.approx(share.collaborative, abs=5e-4)
        assert row["item-item weight"] == pytest.approx(share.item_weight, abs=5e-4)
        assert round(row["content part"] + row["collaborative part"], 3) == row["contribution"]  # as printed
    # with the item's prior (the last row when it is not 0) the contributions add up to the printed score
    assert round(sum(r["contribution"] for r in rows), 3) == round(explanation.score, 3)


def test_a_cold_items_prior_is_its_own_row(handlers, hybrid) -> None:
    """"noimage" has no interactions: part of its score is the content-predicted prior, not any liked item."""
    explanation = hybrid.explain(LIKED, "noimage", "fast")
    *_, table, _ = _explain(handlers, "noimage")
    prior = explanation.score - sum(h.contribution for h in explanation.history)
    assert abs(prior) > 1e-3
    last = table.to_dict("records")[-1]
    assert last["item"] == render.PRIOR_ROW and last["contribution"] == pytest.approx(prior, abs=5e-4)


def test_the_results_table_and_chart_carry_the_collaborative_part(hybrid) -> None:
    recs = hybrid.recommend(LIKED, 5)
    frame = render.results_frame(recs)
    assert "collaborative part" in frame.columns and "item ID & bias part" not in frame.columns
    parts = frame["text part"] + frame["image part"] + frame["collaborative part"]
    assert parts.tolist() == pytest.approx(frame["score"].tolist(), abs=3e-4)
    chart = render.score_parts_frame(recs)
    assert set(chart["part"]) == {"text", "image", "collaborative"}
    assert chart.groupby("item", sort=False)["score"].sum().tolist() == pytest.approx([r.score for r in recs],
                                                                                        abs=3e-4)


def test_the_zero_shot_panel_shows_nothing_collaborative(handlers, tiny_service) -> None:
    recs = tiny_service.recommend(LIKED, 5)
    item = recs[0].item_id
    *_, parts, history, table, summary = _explain(handlers, item)
    assert "collaborative" not in summary.lower() and "mix" not in summary.lower()
    assert list(_bars(parts, "part", "score part")) == ["text", "image"]
    assert list(table.columns) == ["item", "contribution"]
    assert list(render.results_frame(recs).columns) == render.results_headers([])  # no empty parts columns
    assert set(render.score_parts_frame(recs)["part"]) == {"text", "image"}
    score, terms = _printed(summary.split("\n\n")[0])
    assert list(terms) == ["text", "image"] and round(sum(terms.values()), 3) == score


def test_a_new_list_clears_the_history_table(handlers, hybrid) -> None:
    outputs = handlers.recommend(LIKED, 3, SimpleNamespace(session_hash="s"))
    # results (4), details, then the explanation: tokens, heatmap, parts, history chart, history table, summary
    assert outputs[5:11] == (None, None, None, None, None, "")


@pytest.mark.parametrize(("score", "parts"), [(1.0, [1 / 3, 1 / 3, 1 / 3]), (0.0015, [0.0005, 0.0005, 0.0005]),
                                              (-0.2, [-0.0666, -0.0667, -0.0667]), (0.41, [0.2004, 0.2096])])
def test_printed_terms_add_up_to_the_printed_score(score, parts) -> None:
    terms = render.printed_terms(score, parts)
    assert round(sum(terms), 3) == round(score, 3)
    assert all(abs(t - p) <= 1e-3 + 1e-12 for t, p in zip(terms, parts))  # no term moves more than one unit
