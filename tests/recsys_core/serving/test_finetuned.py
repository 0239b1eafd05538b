"""Serving a fine-tuned checkpoint: ``--model DIR`` / ``RecommenderService.load_model`` (tiny encoders)."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest
import torch
from PIL import Image

from recsys_core.model.content import build_content
from recsys_core.errors import CatalogError
from recsys_core.model.checkpoint import save_checkpoint
from recsys_core.model.fusion import FusionConfig, make_tops
from recsys_core.training.config import TrainConfig
from recsys_core.training.data import LabelData
from recsys_core.training.loop import fit

# Two tastes: board/strategy games versus arcade games.
TASTES = [["chess", "checkers", "noimage", "puzzle"], ["space", "racer", "cards"]]


def _frame() -> pd.DataFrame:
    rows = []
    for u in range(24):
        items = TASTES[u % 2]
        for t, item in enumerate(items[: 2 + u % 3]):
            rows.append({"user_id": str(u), "item_id": item, "rating": 5, "timestamp": u * 10 + t})
    return pd.DataFrame(rows)


def _train(service, tmp_path, train: TrainConfig):
    features = service.features
    catalog = service.catalog
    fusion = FusionConfig(text_dim=features.text.shape[1], image_dim=features.image.shape[1], width=16, heads=2,
                          max_text_tokens=8, image_grid=2, n_items=len(catalog), history_len=8, dropout=0.0,
                          **train.fusion_overrides())
    content = build_content(catalog, service.text_encoder, features.regions, features.has_image, fusion,
                            tmp_path / "features", text_pooled=features.text, image_pooled=features.image,
                            progress=False, image_encoder=service.image_encoder)
    text_top, image_top = make_tops(fusion, service.text_encoder, service.image_encoder)
    trained = fit(_frame(), catalog, content, fusion, train, progress=False, text_top=text_top, image_top=image_top)
    out = tmp_path / f"ckpt-{train.strategy}"
    save_checkpoint(trained, out, metrics={}, fingerprint_info={}, encoders={"text": "tiny", "image": "tiny"})
    return out, trained


@pytest.fixture
def checkpoint(tiny_service, tmp_path):
    return _train(tiny_service, tmp_path, TrainConfig(epochs=4, batch_users=8, patience=10))


def test_served_scores_equal_the_trained_model(tiny_service, checkpoint) -> None:
    out, trained = checkpoint
    zeroshot_version = tiny_service.model_version
    version = tiny_service.load_model(out)
    assert version.startswith("multimodal-") and tiny_service.model_kind == "multimodal"
    catalog = tiny_service.catalog
    liked = ["chess", "checkers"]
    recs = tiny_service.recommend(liked, k=5)
    assert [r.rank for r in recs] == [1, 2, 3, 4, 5]
    assert not {r.item_id for r in recs} & set(liked)
    # The app lists liked items oldest first; the model reads histories most recent first.
    expected = trained.score_users([[catalog.index_of("checkers"), catalog.index_of("chess")]])[0]
    for rec in recs:
        assert rec.score == pytest.approx(float(expected[catalog.index_of(rec.item_id)]), abs=1e-4)
    assert tiny_service.load_model(None) == zeroshot_version


def test_modality_split_explanation_and_upload(tiny_service, checkpoint) -> None:
    out, _ = checkpoint
    tiny_service.load_model(out)
    model = tiny_service._state().model
    query = model.profile([0, 1])
    idx = torch.arange(len(tiny_service.catalog))
    parts = model.modality_scores(query, idx)
    total = model.item_vectors @ query
    none = model._rows["none"] @ query
    assert torch.allclose(parts.text + parts.image, total - none, atol=1e-5)  # Shapley parts are exact

    rec = tiny_service.recommend(["chess"], k=3)[0]
    explanation = tiny_service.explain(["chess"], rec.item_id)
    assert explanation.score == pytest.approx(rec.score, abs=1e-4)
    assert explanation.text is not None and explanation.text.words
    # The attribution path reproduces the served score.
    assert explanation.text.score == pytest.approx(rec.score, abs=1e-3)
    assert len(explanation.history) == 1

    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 10, 200)).save(buf, format="PNG")
    upload = tiny_service.recommend_for_upload(image=buf.getvalue(), title="Space war", description="arcade", k=4)
    assert len(upload) == 4 and all(torch.isfinite(torch.tensor(r.score)) for r in upload)
    text_only = tiny_service.recommend_for_upload(image=None, title="Board game", k=3)
    assert len(text_only) == 3


def test_other_catalog_serves_content_only_and_bad_folders_are_refused(tiny_service, checkpoint, tmp_path) -> None:
    out, _ = checkpoint
    items = json.loads((out / "items.json").read_text())
    items["item_ids"] = list(reversed(items["item_ids"]))  # as if trained on a different catalog
    (out / "items.json").write_text(json.dumps(items))
    tiny_service.load_model(out)
    model = tiny_service._state().model
    assert not model.known.any()  # no ID part for items the table does not describe
    assert len(tiny_service.recommend(["chess"], k=3)) == 3

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CatalogError, match="config.json is missing"):
        tiny_service.load_model(empty)


@pytest.mark.parametrize("strategy", ["top-layers", "lora"])
def test_encoder_top_strategies_train_save_and_serve(tiny_service, tmp_path, strategy) -> None:
    text_before = {k: v.clone() for k, v in tiny_service.text_encoder.state_dict().items()}
    out, trained = _train(tiny_service, tmp_path, TrainConfig(strategy=strategy, epochs=5, batch_users=8,
                                                              patience=10, lr=5e-3, encoder_lr=5e-3, lora_rank=2))
    losses = [h["loss"] for h in trained.history]
    assert losses[-1] < losses[0]
    top = trained.model.items.text_top
    names = [n for n, p in top.named_parameters() if p.requires_grad]
    if strategy == "lora":
        assert names and all("lora_" in n for n in names)  # only the adapters train
    else:
        assert any("attention" in n for n in names) and trained.model.items.image_top is not None
    # The app's own encoder (features, explanations) is never modified by fine-tuning.
    assert all(torch.equal(v, tiny_service.text_encoder.state_dict()[k]) for k, v in text_before.items())

    tiny_service.load_model(out)
    catalog = tiny_service.catalog
    expected = trained.score_users([[catalog.index_of("chess")]])[0]
    for rec in tiny_service.recommend(["chess"], k=4):
        assert rec.score == pytest.approx(float(expected[catalog.index_of(rec.item_id)]), abs=1e-4)
    assert len(tiny_service.recommend_for_upload(image=None, title="Space war", k=3)) == 3


def test_explicit_labels_and_bf16_autocast(tiny_service, tmp_path) -> None:
    """Dislike labels push an item down for a profile; the bf16 autocast path (CUDA's) runs on CPU too."""
    features = tiny_service.features
    catalog = tiny_service.catalog
    fusion = FusionConfig(text_dim=features.text.shape[1], image_dim=features.image.shape[1], width=16, heads=2,
                          max_text_tokens=8, image_grid=2, n_items=len(catalog), history_len=8, dropout=0.0)
    content = build_content(catalog, tiny_service.text_encoder, features.regions, features.has_image, fusion,
                            tmp_path / "features", text_pooled=features.text, image_pooled=features.image,
                            progress=False)
    chess, racer = catalog.index_of("chess"), catalog.index_of("racer")
    labels = LabelData(histories=[[chess]] * 20, items=[racer] * 20, labels=[0.0] * 20)
    likes = LabelData(histories=[[chess]] * 20, items=[racer] * 20, labels=[1.0] * 20)
    scores = {}
    for name, data in (("dislike", labels), ("like", likes)):
        trained = fit(_frame(), catalog, content, fusion, TrainConfig(epochs=6, batch_users=8, patience=10,
                                                                      label_weight=5.0), progress=False, labels=data)
        scores[name] = float(trained.score_users([[chess]])[0, racer])
    assert scores["dislike"] < scores["like"]
    bf16 = fit(_frame(), catalog, content, fusion, TrainConfig(epochs=2, batch_users=8, precision="bf16"), progress=False)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in bf16.history)


def test_hot_swap_never_fails_in_flight_requests(tiny_service, checkpoint) -> None:
    """Requests keep succeeding while another thread swaps models back and forth."""
    import threading

    out, _ = checkpoint
    errors: list[BaseException] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                recs = tiny_service.recommend(["chess", "space"], k=4)
                assert len(recs) == 4
            except BaseException as exc:  # noqa: BLE001 - any failure is the test's finding
                errors.append(exc)
                return

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(4):
        tiny_service.load_model(out)
        tiny_service.load_model(None)
    stop.set()
    for t in threads:
        t.join()
    assert errors == []


def _printed_terms(line: str) -> tuple[float, list[float]]:
    """``**Score 6.857** = text 1.964 + image 2.778 + item ID & bias 2.115`` -> (6.857, [1.964, 2.778, 2.115])."""
    import re

    line = line.replace("\u2212", "-")
    score = float(re.search(r"[Ss]core \**(-?\d+\.\d+)", line).group(1))
    rhs = line.split("=", 1)[1].split("(")[0]
    return score, [float(v) for v in re.findall(r"-?\d+\.\d+", rhs)]


def test_finetuned_decompositions_add_up_to_the_printed_score(tiny_service, checkpoint) -> None:
    """Defect 4: "6.857 = text 1.964 + image 2.778" (4.742): the ID & bias part was not printed, and
    nothing said that fine-tuned scores are logits rather than 0-1 cosines."""
    from storage import Repository
    from ui import render
    from ui.handlers import Handlers

    out, _ = checkpoint
    tiny_service.load_model(out)
    handlers = Handlers(tiny_service, Repository.from_url("sqlite://"))
    liked = ["chess", "checkers"]
    recs = tiny_service.recommend(liked, k=4)
    for rec in recs:
        score, terms = _printed_terms(render.item_details(tiny_service.item(rec.item_id), rec).split("\n\n")[1])
        assert score == pytest.approx(sum(terms), abs=2e-3) and len(terms) == 3
        explanation = tiny_service.explain(liked, rec.item_id, "fast")
        *_, summary = handlers.explain({"liked": liked, "selected": rec.item_id}, "fast", progress=lambda *a, **k: None)
        score, terms = _printed_terms(summary.split("\n\n")[0])
        assert score == pytest.approx(round(explanation.score, 3)) and score == pytest.approx(sum(terms), abs=2e-3)
        assert "logit" in summary  # the scale change, in one line
        api = explanation.to_api()
        assert sum(api["score_parts"].values()) == pytest.approx(api["score"], abs=1e-5)
    for row in render.results_table(recs):
        assert row[2] == pytest.approx(row[3] + row[4] + row[5], abs=2e-4)
    frame = render.score_parts_frame(recs)
    assert frame.groupby("item", sort=False)["score"].sum().tolist() == pytest.approx(
        [r.score for r in recs], abs=2e-4)
