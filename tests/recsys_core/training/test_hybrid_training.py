"""Training the hybrid: selection on validation only, the checkpoint round trip, the trainer CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recsys_core.config import ZeroShotConfig
from recsys_core.model import checkpoint
from recsys_core.serving.zeroshot import ZeroShotModel
from recsys_core.training.hybrid import fit_hybrid, select_config, select_on_validation, split_targets
from tests.recsys_core.training.test_distributed import _write_data


def _frame(catalog, users: int = 24, seed: int = 0) -> pd.DataFrame:
    """Users who each like most items of one half of the catalog."""
    rng = np.random.default_rng(seed)
    ids = list(catalog.ids)
    halves = (ids[: len(ids) // 2], ids[len(ids) // 2:])
    rows = []
    for u in range(users):
        half = halves[u % 2]
        for t, item in enumerate(rng.choice(half, size=max(2, len(half) - 1), replace=False)):
            rows.append({"user_id": f"u{u}", "item_id": str(item), "timestamp": float(t)})
    return pd.DataFrame(rows)


def _split_files(root: Path, frame: pd.DataFrame) -> None:
    """Fixed warm split files: test = each user's last item, validation carved from train the same way."""
    splits = root / "splits"
    splits.mkdir(parents=True)
    frame = frame.assign(rating=5)
    last = frame.groupby("user_id").tail(1)
    train = frame.drop(last.index)
    val_last = train.groupby("user_id").tail(1)
    cols = ["user_id", "item_id", "rating", "timestamp"]
    train[cols].to_csv(splits / "warm_train.csv", index=False)
    last[cols].to_csv(splits / "warm_test.csv", index=False)
    train.drop(val_last.index)[cols].to_csv(splits / "warmval_train.csv", index=False)
    val_last[cols].to_csv(splits / "warmval_test.csv", index=False)
    frame[cols].to_csv(root / "ratings.csv", index=False)


def test_selection_never_reads_a_test_split(tiny_service, tmp_path, monkeypatch) -> None:
    import recsys_core.data.splits as splits

    _split_files(tmp_path, _frame(tiny_service.catalog))
    read: list[str] = []
    real = splits._read_interactions

    def spy(path):
        read.append(Path(path).name)
        if Path(path).name in ("warm_test.csv", "cold_test.csv"):
            raise AssertionError(f"model selection opened the test split {path}")
        return real(path)

    monkeypatch.setattr(splits, "_read_interactions", spy)
    selection = select_on_validation(tmp_path, "warm", tiny_service.catalog, tiny_service.zeroshot_model)
    assert read == ["warmval_train.csv", "warmval_test.csv"]
    assert selection.config.selected_on.startswith("warm-validation")
    assert selection.table and max(r["ndcg@20"] for r in selection.table) == pytest.approx(selection.ndcg, abs=1e-5)


def test_selection_prefers_the_collaborative_part_when_interactions_carry_the_signal(tiny_service) -> None:
    # Users like one half of the catalog; the tiny random encoders know nothing about halves.
    frame = _frame(tiny_service.catalog, users=40)
    last = frame.groupby("user_id").tail(1)
    split = type("S", (), {"train": frame.drop(last.index), "test": last, "candidate_items": None})()
    x, targets, cand = split_targets(split, tiny_service.catalog)
    chosen = select_config(x, targets, tiny_service.zeroshot_model, np.zeros((len(tiny_service.catalog), 0)),
                           candidates=cand)
    assert chosen.config.content_share < 1.0


def test_a_hybrid_checkpoint_round_trip_gives_identical_scores(tiny_service, tmp_path) -> None:
    from recsys_core.model.hybrid import HybridConfig

    catalog = tiny_service.catalog
    config = HybridConfig(lambda_=2.0, side_content=1.0, side_genre=1.0, content_share=0.5, content_scale=0.4,
                          collab_scale=0.3, prior_weight=0.2)
    fitted = fit_hybrid(_frame(catalog), catalog, tiny_service.zeroshot_model, config)
    out = tmp_path / "hybrid"
    checkpoint.save_hybrid(out, config=config, zeroshot=ZeroShotConfig().to_dict(), collab=fitted.collab,
                           item_ids=catalog.ids, frame=fitted.frame, metrics={"note": "test"},
                           fingerprint_info={}, encoders={"text": "tiny-random", "image": "tiny-random"})
    assert checkpoint.checkpoint_kind(out) == "hybrid" and checkpoint.is_checkpoint(out)
    assert checkpoint.read_interactions(out) is not None
    version = tiny_service.load_model(out)
    assert version == checkpoint.checkpoint_version(out) and tiny_service.model_kind == "multimodal"
    served = tiny_service.active_model
    for liked in (["chess"], ["space", "racer"]):
        idx = [catalog.index_of(i) for i in liked]
        assert torch.equal(served.item_vectors @ served.profile(idx), fitted.serving.item_vectors @ fitted.serving.profile(idx))
    recs = tiny_service.recommend(["chess"], k=4)
    assert [r.score for r in recs] == pytest.approx(
        [r.text_score + r.image_score + r.collaborative_score for r in recs], abs=1e-5)
    # A fusion loader refuses it by name rather than misreading it.
    with pytest.raises(ValueError, match="hybrid"):
        checkpoint.load_checkpoint(out)


def test_the_trainer_cli_writes_a_hybrid_checkpoint_by_default(tmp_path) -> None:
    from recsys_core.data.catalog import load_catalog_folder
    from recsys_core.training.cli import main

    catalog_dir, data = _write_data(tmp_path)
    out = tmp_path / "ckpt"
    main(["--data-root", str(data), "--catalog", str(catalog_dir), "--data-dir", str(tmp_path / "d"), "--out", str(out),
          "--text-encoder", "tiny-random", "--image-encoder", "tiny-random", "--device", "cpu", "--threads", "1"])
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "hybrid" and config["hybrid"]["selected_on"].startswith("warm-validation")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["selection"] and metrics["best_val_ndcg@20"] > 0
    saved = checkpoint.load_hybrid(out)
    assert list(saved.item_ids) == list(load_catalog_folder(catalog_dir).ids)
    # Two clusters of users: the collaborative part carries them, so it is in the mix.
    assert saved.config.content_share < 1.0


def test_zero_shot_profiles_batch_matches_one_by_one(tiny_service) -> None:
    import scipy.sparse as sp

    zs: ZeroShotModel = tiny_service.zeroshot_model
    n = zs.item_vectors.shape[0]
    rows = [[0, 2], [1], [3, 4, 5], []]
    m = sp.csr_matrix((np.ones(sum(map(len, rows))), ([r for r, row in enumerate(rows) for _ in row],
                                                      [i for row in rows for i in row])), shape=(len(rows), n))
    batch = zs.profiles(m)
    for r, row in enumerate(rows):
        want = zs.profile(row) if row else torch.zeros(zs.dim)
        assert batch[r].tolist() == pytest.approx(want.tolist(), abs=1e-6)
