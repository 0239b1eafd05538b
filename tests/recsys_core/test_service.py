"""RecommenderService, ZeroShotModel and ExactIndex with tiny random encoders."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from recsys_core.config import ZeroShotConfig
from recsys_core.errors import EmptyProfileError, InvalidInputError, UnknownItemError
from recsys_core.serving.index import ExactIndex
from tests.conftest import make_tiny_service

ALL_IDS = ["chess", "checkers", "cards", "space", "racer", "puzzle", "noimage"]


def _ids(recs) -> list[str]:
    return [r.item_id for r in recs]


# -- recommend ---------------------------------------------------------------------------------------


def test_recommend_ranks_scores_and_exclusion(tiny_service) -> None:
    recs = tiny_service.recommend(["chess", "cards"], k=4)
    assert len(recs) == 4
    assert [r.rank for r in recs] == [1, 2, 3, 4]
    assert not {"chess", "cards"} & set(_ids(recs))
    scores = [r.score for r in recs]
    assert scores == sorted(scores, reverse=True)
    for r in recs:
        assert r.score == pytest.approx(r.text_score + r.image_score, abs=1e-5)
        item = tiny_service.item(r.item_id)
        assert (r.title, r.image, r.genres) == (item.title, item.image, item.genres)
    assert recs[0].to_api() == {"item_id": recs[0].item_id, "title": recs[0].title,
                                "score": round(recs[0].score, 6), "rank": 1}


def test_scores_are_weighted_cosines(tiny_service) -> None:
    recs = tiny_service.recommend(["space"], k=6)
    weights = tiny_service.config.zeroshot
    for r in recs:
        assert -weights.text_weight - 1e-5 <= r.text_score <= weights.text_weight + 1e-5
        assert -weights.image_weight - 1e-5 <= r.image_score <= weights.image_weight + 1e-5
    no_image = next(r for r in recs if r.item_id == "noimage")
    assert no_image.image_score == 0.0


def test_k_larger_than_catalog_returns_all_remaining(tiny_service) -> None:
    recs = tiny_service.recommend(["chess"], k=50)
    assert sorted(_ids(recs)) == sorted(set(ALL_IDS) - {"chess"})
    assert [r.rank for r in recs] == [1, 2, 3, 4, 5, 6]
    assert tiny_service.recommend(ALL_IDS, k=5) == []


@pytest.mark.parametrize("k", [0, -1, 101, True, False, 2.0, "3", None])
def test_bad_k(tiny_service, k) -> None:
    with pytest.raises(InvalidInputError, match="k "):
        tiny_service.recommend(["chess"], k=k)


def test_k_bounds_inclusive(tiny_service) -> None:
    assert len(tiny_service.recommend(["chess"], k=1)) == 1
    assert len(tiny_service.recommend(["chess"], k=tiny_service.config.limits.max_k)) == 6
    with pytest.raises(InvalidInputError, match="k is 101; allowed 1..100"):
        tiny_service.recommend(["chess"], k=101)
    with pytest.raises(InvalidInputError, match="k must be a whole number; got True"):
        tiny_service.recommend(["chess"], k=True)


@pytest.mark.parametrize("liked", [[], ["", "  "], ()])
def test_empty_profile(tiny_service, liked) -> None:
    with pytest.raises(EmptyProfileError, match="no liked items given"):
        tiny_service.recommend(liked, k=3)


@pytest.mark.parametrize("liked", [None, "chess"])
def test_liked_must_be_a_list(tiny_service, liked) -> None:
    with pytest.raises(InvalidInputError, match="liked_ids must be a list of item ids"):
        tiny_service.recommend(liked, k=3)


def test_unknown_ids_are_all_listed(tiny_service) -> None:
    with pytest.raises(UnknownItemError) as info:
        tiny_service.recommend(["chess", "ghost", "chess", "phantom"], k=3)
    assert info.value.item_ids == ("ghost", "phantom")
    assert "'ghost', 'phantom'" in str(info.value)


def test_too_many_liked(tiny_catalog) -> None:
    service = make_tiny_service(tiny_catalog, None)
    service.config = dataclasses.replace(
        service.config, limits=dataclasses.replace(service.config.limits, max_liked=2)
    )
    with pytest.raises(InvalidInputError, match="3 liked items; the limit is 2"):
        service.recommend(["chess", "cards", "space"], k=1)


def test_duplicate_liked_ids_are_deduped(tiny_service) -> None:
    assert tiny_service.clean_liked([" chess", "cards", "chess ", "cards"]) == ["chess", "cards"]
    once = tiny_service.recommend(["chess", "cards"], k=5)
    twice = tiny_service.recommend(["chess", "chess", "cards", "chess"], k=5)
    assert _ids(once) == _ids(twice)
    assert [r.score for r in once] == pytest.approx([r.score for r in twice], abs=1e-6)


def test_deterministic_across_fresh_services(tiny_catalog) -> None:
    a, b = make_tiny_service(tiny_catalog, None), make_tiny_service(tiny_catalog, None)
    ra, rb = a.recommend(["space", "puzzle"], k=5), b.recommend(["space", "puzzle"], k=5)
    assert _ids(ra) == _ids(rb)
    assert [r.score for r in ra] == pytest.approx([r.score for r in rb], abs=1e-6)
    assert a.model_version == b.model_version


def test_prepare_report_and_lazy_prepare(tiny_catalog, tmp_path: Path) -> None:
    service = make_tiny_service(tiny_catalog, tmp_path / "f")
    assert not service.ready
    assert len(service.recommend(["chess"], k=2)) == 2  # prepares on first use
    assert service.ready
    report = service.prepare()
    assert (report.items, report.with_image, report.device) == (7, 6, "cpu")
    assert (report.stats.text_computed, report.stats.image_computed) == (0, 0)  # second prepare: cache only
    assert report.model_version == service.model_version


# -- model_version -----------------------------------------------------------------------------------


def test_model_version_stable_and_sensitive_to_weights(tiny_catalog) -> None:
    base = make_tiny_service(tiny_catalog, None)
    again = make_tiny_service(tiny_catalog, None)
    assert base.model_version == again.model_version
    assert base.model_version.startswith("zeroshot-") and len(base.model_version) == len("zeroshot-") + 10
    other = make_tiny_service(tiny_catalog, None)
    other.config = dataclasses.replace(other.config, zeroshot=ZeroShotConfig(text_weight=0.5, image_weight=0.5))
    assert other.model_version != base.model_version
    assert other.recommend(["chess"], k=3)[0].score != pytest.approx(base.recommend(["chess"], k=3)[0].score)


def test_text_only_weights_give_zero_image_scores(tiny_catalog) -> None:
    service = make_tiny_service(tiny_catalog, None)
    service.config = dataclasses.replace(service.config, zeroshot=ZeroShotConfig(text_weight=1.0, image_weight=0.0))
    for r in service.recommend(["chess"], k=6):
        assert r.image_score == 0.0
        assert r.score == pytest.approx(r.text_score, abs=1e-6)


# -- uploads -----------------------------------------------------------------------------------------


def test_upload_text_only(tiny_service) -> None:
    recs = tiny_service.recommend_for_upload(image=None, title="Chess Master", description="board game", k=7)
    assert sorted(_ids(recs)) == sorted(ALL_IDS)  # nothing excluded for an upload
    assert [r.rank for r in recs] == list(range(1, 8))
    assert all(r.image_score == 0.0 for r in recs)


def test_upload_description_only(tiny_service) -> None:
    recs = tiny_service.recommend_for_upload(image=None, description="arcade racing", k=3)
    assert len(recs) == 3


def test_upload_image_path_and_bytes(tiny_service, tiny_catalog_dir: Path) -> None:
    path = tiny_catalog_dir / "images" / "racer.png"
    by_path = tiny_service.recommend_for_upload(image=path, k=3)
    by_str = tiny_service.recommend_for_upload(image=str(path), k=3)
    by_bytes = tiny_service.recommend_for_upload(image=path.read_bytes(), k=3)
    assert _ids(by_path) == _ids(by_str) == _ids(by_bytes)
    assert by_path[0].item_id == "racer"
    assert all(r.text_score == 0.0 for r in by_path)


@pytest.mark.parametrize("item_id", ["chess", "cards", "space", "puzzle"])
def test_uploaded_copy_of_catalog_image_ranks_it_first(tiny_service, tiny_catalog_dir: Path, tmp_path: Path,
                                                      item_id: str) -> None:
    copy = tmp_path / "upload.png"
    copy.write_bytes((tiny_catalog_dir / "images" / f"{item_id}.png").read_bytes())
    recs = tiny_service.recommend_for_upload(image=copy, k=3)
    assert recs[0].item_id == item_id
    assert recs[0].image_score == pytest.approx(tiny_service.config.zeroshot.image_weight, abs=1e-4)


def test_upload_with_nothing(tiny_service) -> None:
    with pytest.raises(InvalidInputError, match="give an image, a title or a description"):
        tiny_service.recommend_for_upload(image=None, title="  ", description="", k=3)


def test_upload_text_limit_is_for_title_and_description_together(tiny_service) -> None:
    """The README's rule (issue 15, defect 8): the limit is title + description combined, said with both numbers."""
    limit = tiny_service.config.limits.max_text_chars
    half = limit // 2 + 1  # each part alone is well under the limit, together they are over it
    with pytest.raises(InvalidInputError, match=rf"title \+ description is {2 * half:,} characters \(title {half:,}, "
                                                rf"description {half:,}\); the limit is {limit:,} for both together"):
        tiny_service.recommend_for_upload(image=None, title="x" * half, description="y" * half, k=3)
    with pytest.raises(InvalidInputError, match=f"is {limit + 1:,} characters"):
        tiny_service.recommend_for_upload(image=None, title="x" * (limit + 1), k=3)
    assert len(tiny_service.recommend_for_upload(image=None, title="x" * (limit - 10), description="y" * 10,
                                                 k=2)) == 2


def test_upload_bad_image_and_bad_k(tiny_service) -> None:
    with pytest.raises(InvalidInputError, match="could not be read as an image"):
        tiny_service.recommend_for_upload(image=b"not an image", k=3)
    with pytest.raises(InvalidInputError, match="k is 0"):
        tiny_service.recommend_for_upload(image=None, title="chess", k=0)


def test_search_limits_query_length(tiny_service) -> None:
    assert [i.item_id for i in tiny_service.search("arcade", "ActionGame")] == ["space"]
    with pytest.raises(InvalidInputError, match="search text is 10,001 characters"):
        tiny_service.search("a" * 10_001)
    assert tiny_service.has_item("chess") and not tiny_service.has_item("ghost")


# -- zero-shot model and index -----------------------------------------------------------------------


def test_item_vectors_blocks_have_weight_norms(tiny_service) -> None:
    model = tiny_service._state().model
    vectors = model.item_vectors
    zs = tiny_service.config.zeroshot
    text_norms = vectors[:, : model.text_dim].norm(dim=1)
    image_norms = vectors[:, model.text_dim :].norm(dim=1)
    assert torch.allclose(text_norms, torch.full_like(text_norms, zs.text_weight ** 0.5), atol=1e-5)
    no_image = tiny_service.catalog.index_of("noimage")
    assert image_norms[no_image] == 0
    others = torch.cat([image_norms[:no_image], image_norms[no_image + 1 :]])
    assert torch.allclose(others, torch.full_like(others, zs.image_weight ** 0.5), atol=1e-5)
    assert model.dim == vectors.shape[1]


def test_profile_of_image_less_item_has_zero_image_block(tiny_service) -> None:
    model = tiny_service._state().model
    profile = model.profile([tiny_service.catalog.index_of("noimage")])
    assert torch.count_nonzero(profile[model.text_dim :]) == 0
    recs = tiny_service.recommend(["noimage"], k=6)
    assert all(r.image_score == 0.0 for r in recs)


def test_exact_index_exclude_and_k() -> None:
    vectors = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.0]])
    index = ExactIndex(vectors)
    query = torch.tensor([1.0, 0.0])
    assert len(index) == 4
    assert index.search(query, 2).indices.tolist() == [0, 1]
    found = index.search(query, 2, exclude=[0])
    assert found.indices.tolist() == [1, 2]
    assert found.scores.tolist() == pytest.approx([0.9, 0.0])
    assert index.search(query, 10, exclude=[0, 0, 1]).indices.tolist() == [2, 3]
    for k in (0, -3):
        empty = index.search(query, k)
        assert empty.indices.tolist() == [] and empty.indices.dtype == torch.long
        assert empty.scores.tolist() == []
    assert index.search(query, 3, exclude=[0, 1, 2, 3]).indices.tolist() == []
    assert torch.equal(index.vectors, vectors)  # exclusion never touches the stored vectors


def test_upload_description_only_uses_the_whole_description(tiny_service) -> None:
    prefix = "chess game " * 8  # 88 characters of in-vocabulary words: well under max_length tokens
    a = tiny_service.recommend_for_upload(image=None, description=prefix + "arcade space shooter racing", k=7)
    b = tiny_service.recommend_for_upload(image=None, description=prefix + "card puzzle logic board", k=7)
    assert [r.score for r in a] != pytest.approx([r.score for r in b], abs=1e-6) or _ids(a) != _ids(b)


def test_diversity_rerank_keeps_the_best_item_and_mixes_the_rest(tiny_service) -> None:
    """MMR: 0 is the plain ranking; a high diversity weight changes the order but never the top item."""
    plain = tiny_service.recommend(["chess"], 5)
    assert [r.item_id for r in tiny_service.recommend(["chess"], 5, 0.0)] == [r.item_id for r in plain]
    diverse = tiny_service.recommend(["chess"], 5, 0.9)
    assert diverse[0].item_id == plain[0].item_id
    assert [r.item_id for r in diverse] != [r.item_id for r in plain]
    assert "chess" not in {r.item_id for r in diverse}
    assert [r.rank for r in diverse] == [1, 2, 3, 4, 5]
    for bad in (-0.1, 1.5, True, "0.5"):
        with pytest.raises(InvalidInputError, match="diversity"):
            tiny_service.recommend(["chess"], 5, bad)


# -- recommend_with (another version's list, not served) ----------------------------------------------


def _checkpoint(service, tmp_path: Path) -> Path:
    from recsys_core.training.finetune import FinetuneConfig, finetune
    from tests.recsys_core.training.test_finetune import _examples

    result = finetune(examples=_examples(6), heldout=_examples(1), catalog=service.catalog, features=service.features,
                      text_encoder=service.text_encoder, image_encoder=service.image_encoder,
                      base_model=service.active_model, base_dir=None, out_dir=tmp_path / "cand",
                      cache_dir=tmp_path / "features", config=FinetuneConfig(epochs=4, lr=3e-3, min_labels=10,
                                                                             batch_labels=8))
    return Path(result.out_dir)


def test_recommend_with_a_checkpoint_gives_its_list_without_serving_it_and_loads_it_once(tiny_service, tmp_path,
                                                                                          monkeypatch) -> None:
    import recsys_core.service as service_module

    folder = _checkpoint(tiny_service, tmp_path)
    zeroshot = tiny_service.model_version
    served = tiny_service.recommend(["chess", "cards"], k=4)
    loads = []
    real_load = service_module.load_model
    monkeypatch.setattr(service_module, "load_model", lambda *a, **kw: loads.append(a[0]) or real_load(*a, **kw))

    other = tiny_service.recommend_with(folder, ["chess", "cards"], k=4)
    again = tiny_service.recommend_with(folder, ["space"], k=3)
    assert len(loads) == 1  # kept aside for the next comparison
    assert tiny_service.model_version == zeroshot  # nothing swapped
    assert tiny_service.recommend(["chess", "cards"], k=4) == served
    assert other.model_kind == "multimodal" and not other.active and other.model_version != zeroshot
    assert len(again.items) == 3 and "space" not in _ids(again.items)
    # The same list the model gives once it is served.
    tiny_service.load_model(folder)
    assert tiny_service.recommend(["chess", "cards"], k=4) == list(other.items)
    # Now the served one answers itself, and zero-shot (not served any more) is built aside.
    assert tiny_service.recommend_with(folder, ["chess", "cards"], k=4).active
    back = tiny_service.recommend_with(None, ["chess", "cards"], k=4)
    assert (back.model_version, back.model_kind, back.active) == (zeroshot, "zeroshot", False)
    assert list(back.items) == served
    assert len(loads) == 2  # the load_model above; zero-shot needs no files


def test_recommend_with_checks_its_inputs_like_recommend(tiny_service, tmp_path) -> None:
    from recsys_core.errors import RecsysError

    with pytest.raises(UnknownItemError):
        tiny_service.recommend_with(None, ["nope"], k=3)
    with pytest.raises(InvalidInputError):
        tiny_service.recommend_with(None, ["chess"], k=0)
    with pytest.raises(RecsysError, match="not a model checkpoint"):
        tiny_service.recommend_with(tmp_path, ["chess"], k=3)
    assert tiny_service.recommend_with(None, ["chess"], k=3).active  # zero-shot is served


def test_diversity_reports_rank_by_score_and_gain_and_keeps_the_api_keys(tiny_service) -> None:
    plain = tiny_service.recommend(["chess"], 6)  # every other item: each diverse pick has its rank here
    diverse = tiny_service.recommend(["chess"], 5, diversity=0.9)
    assert all(r.score_rank is None and r.diversity_gain is None for r in plain)
    assert set(plain[0].to_api()) == {"item_id", "title", "score", "rank"}
    by_score = {r.item_id: r.rank for r in plain}
    for r in diverse:
        assert r.score_rank == by_score[r.item_id]  # where ranking by score put it
        assert r.score == pytest.approx(next(p.score for p in plain if p.item_id == r.item_id))  # relevance kept
        assert r.diversity_gain is not None and -1e-6 <= r.diversity_gain <= 2.0
    assert diverse[0].diversity_gain == 1.0
    api = diverse[1].to_api()
    assert {"item_id", "title", "score", "rank"} < set(api) and api["score_rank"] == diverse[1].score_rank
