"""The fusion model and its training loop on tiny synthetic data (frozen features, no real encoders)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from recsys_core.data.catalog import Catalog, Item
from recsys_core.model.fusion import FusionConfig, FusionRecommender, ItemContent
from recsys_core.model.checkpoint import load_checkpoint, save_checkpoint
from recsys_core.training.config import TrainConfig
from recsys_core.training.loop import TrainedModel, fit

N_ITEMS, N_USERS = 24, 30


def _catalog(tmp_path) -> Catalog:
    return Catalog(name="tiny", root=tmp_path, items=tuple(Item(str(i), f"item {i}") for i in range(N_ITEMS)))


def _content(config: FusionConfig) -> ItemContent:
    """Two clusters of items whose content differs in a consistent direction."""
    g = torch.Generator().manual_seed(0)
    cluster = torch.tensor([i % 2 for i in range(N_ITEMS)], dtype=torch.float32)
    text = torch.randn(N_ITEMS, config.max_text_tokens, config.text_dim, generator=g) * 0.1
    text[:, :, 0] += cluster[:, None] * 2 - 1
    regions = torch.randn(N_ITEMS, config.image_grid ** 2, config.image_dim, generator=g) * 0.1
    regions[:, :, 1] += cluster[:, None] * 2 - 1
    mask = torch.ones(N_ITEMS, config.max_text_tokens, dtype=torch.bool)
    return ItemContent(text.half(), mask, regions.half(), torch.ones(N_ITEMS, dtype=torch.bool))


def _interactions() -> pd.DataFrame:
    """Users like only items of their own cluster; items 22 and 23 never appear (unseen in training)."""
    rows = []
    for u in range(N_USERS):
        for i in range(u % 2, 22, 2):
            rows.append({"user_id": str(u), "item_id": str(i), "rating": 5, "timestamp": u * 100 + i})
    return pd.DataFrame(rows)


def _config(**kw) -> FusionConfig:
    base = dict(text_dim=8, image_dim=6, width=16, heads=2, max_text_tokens=4, image_grid=2, n_items=N_ITEMS,
                history_len=12, dropout=0.0)
    base.update(kw)
    return FusionConfig(**base)


def test_training_lowers_the_loss_and_learns_the_clusters(tmp_path) -> None:
    config = _config()
    trained = fit(_interactions(), _catalog(tmp_path), _content(config), config,
                  TrainConfig(epochs=12, batch_users=16, lr=5e-3, patience=20, warmup_epochs=1), progress=False)
    losses = [h["loss"] for h in trained.history]
    assert losses[-1] < losses[0]
    # A user of cluster 0 (even items) ranks the unseen even item 22 above the unseen odd item 23.
    scores = trained.score_users([[0, 2, 4, 6]])[0]
    assert torch.isfinite(scores[22]) and torch.isfinite(scores[23])
    assert scores[22] > scores[23]


def test_checkpoint_round_trip_gives_identical_scores(tmp_path) -> None:
    config = _config()
    catalog = _catalog(tmp_path)
    content = _content(config)
    trained = fit(_interactions(), catalog, content, config, TrainConfig(epochs=2, batch_users=16, patience=5),
                  progress=False)
    out = tmp_path / "ckpt"
    save_checkpoint(trained, out, metrics={"best_val_ndcg@20": 0.0}, fingerprint_info={"items": N_ITEMS},
                    encoders={"text": "test", "image": "test"})
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "metrics.json", "fingerprint.json",
                                               "items.json", "val_ndcg.png", "interactions.csv.gz"}
    replay = pd.read_csv(out / "interactions.csv.gz", dtype={"user_id": str, "item_id": str})
    assert len(replay) == len(_interactions())  # the training data travels with the model for replay
    model, saved = load_checkpoint(out)
    assert saved["fusion"] == dataclasses.asdict(trained.fusion)  # the config travels with the weights
    reloaded = TrainedModel(model, content, trained.interactions, trained.fusion, trained.train)
    assert torch.equal(reloaded.score_users([[1, 3]]), trained.score_users([[1, 3]]))


def test_unseen_items_get_content_only_vectors(tmp_path) -> None:
    config = _config()
    model = FusionRecommender(config)
    with torch.no_grad():
        model.items.ids.weight.normal_()
        model.items.id_bias.weight.normal_()
    model.eval()
    content = _content(config)
    index = torch.arange(N_ITEMS)
    known = torch.ones(N_ITEMS, dtype=torch.bool)
    known[22:] = False
    with_ids = model.item_vectors(content, index, known)
    content_only = model.item_vectors(content)
    assert torch.allclose(with_ids.vectors[22:], content_only.vectors[22:])
    assert torch.allclose(with_ids.bias[22:], content_only.bias[22:])
    assert not torch.allclose(with_ids.vectors[:22], content_only.vectors[:22])
    assert not torch.allclose(with_ids.bias[:22], content_only.bias[:22])
    assert torch.isfinite(content_only.bias).all()


def test_modality_ablations_and_bad_config() -> None:
    content = _content(_config())
    for modalities in ("text", "image"):
        model = FusionRecommender(_config(modalities=modalities, n_items=0)).eval()
        assert model.item_vectors(content).vectors.shape == (N_ITEMS, 16)
    with pytest.raises(ValueError):
        _config(width=15)
    with pytest.raises(ValueError):
        TrainConfig(strategy="everything")


def test_label_loss_on_the_batch_items_equals_the_full_catalog_loss() -> None:
    from recsys_core.training.data import LabelData
    from recsys_core.training.step import _label_loss, _label_loss_subset

    config = _config()
    model = FusionRecommender(config).eval()  # eval: no dropout, so both paths see the same vectors
    content = _content(config)
    index, known = torch.arange(N_ITEMS), torch.ones(N_ITEMS, dtype=torch.bool)
    labels = LabelData([[3, 5, 7], [2], [9, 1]], [4, 6, 3], [1.0, 0.0, 1.0])
    with torch.no_grad():
        full = _label_loss(model, model.item_vectors(content, index, known), labels, [0, 1, 2], config)
        subset = _label_loss_subset(model, content, index, known, labels, [0, 1, 2], config)
    assert torch.allclose(full, subset, atol=1e-6)
