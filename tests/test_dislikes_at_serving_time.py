"""A dislike at serving time: the disliked item is never returned and its neighbours go down, through the
service and through the /recommend and /explain API functions (zero-shot and hybrid models)."""

from __future__ import annotations

import gradio as gr
import pytest

from storage import Repository
from tests.hybrid_checkpoint import save_hybrid_checkpoint
from ui.handlers import Handlers

LIKED = ["chess"]


@pytest.fixture(params=["zeroshot", "hybrid"])
def service(request, tiny_service, tmp_path):
    if request.param == "hybrid":
        tiny_service.load_model(save_hybrid_checkpoint(tiny_service, tmp_path / "hybrid"))
    return tiny_service


def test_a_dislike_lowers_that_items_neighbours(service) -> None:
    before = {r.item_id: r.score for r in service.recommend(LIKED, 6)}
    disliked = next(iter(before))  # the top result
    neighbour, similarity = next((r.item_id, r.score) for r in service.similar(disliked, 6) if r.item_id not in LIKED)
    after = {r.item_id: r.score for r in service.recommend(LIKED, 6, disliked_ids=[disliked])}

    assert disliked not in after and set(after) == set(before) - {disliked}
    assert after[neighbour] < before[neighbour]
    if service.model_kind == "zeroshot":  # the query less dislike_weight x the disliked item's own profile
        weight = service.active_model.dislike_weight
        assert before[neighbour] - after[neighbour] == pytest.approx(weight * similarity, abs=1e-5)


def test_the_api_passes_disliked_ids_and_old_callers_still_work(service) -> None:
    handlers = Handlers(service, Repository.from_url("sqlite://"))
    plain = handlers.api_recommend(LIKED, 6, None)
    assert [r["item_id"] for r in plain] == [r.item_id for r in service.recommend(LIKED, 6)]
    disliked = plain[0]["item_id"]
    out = handlers.api_recommend(LIKED, 6, None, 0.0, [disliked])
    assert [r["item_id"] for r in out] == [r.item_id for r in service.recommend(LIKED, 6, disliked_ids=[disliked])]
    explained = handlers.api_explain(LIKED, out[0]["item_id"], "fast", [disliked])
    assert [(h["item_id"], h["disliked"]) for h in explained["history"]] == [("chess", False), (disliked, True)]
    assert sum(explained["score_parts"].values()) == pytest.approx(explained["score"], abs=1e-5)
    with pytest.raises(gr.Error, match="cannot be both liked and disliked"):
        handlers.api_recommend(LIKED, 6, None, 0.0, LIKED)
    with pytest.raises(gr.Error, match="disliked_ids must be a list of item ids"):
        handlers.api_recommend(LIKED, 6, None, 0.0, "chess")
    with pytest.raises(gr.Error, match="unknown item"):
        handlers.api_explain(LIKED, out[0]["item_id"], "fast", ["ghost"])
