"""Feature extraction: content-hash cache, encoder-keyed folders, corrupt shard recovery, shapes."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recsys_core.data.catalog import load_catalog_folder
from recsys_core.config import ImageEncoderConfig, TextEncoderConfig
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.tiny import tiny_image_backbone, tiny_text_encoder
from recsys_core.encoders.features import FeatureCache, extract_catalog_features, text_hash

N_ITEMS = 7
N_IMAGES = 6  # "noimage" has none


@pytest.fixture(scope="module")
def encoders():
    text = tiny_text_encoder(TextEncoderConfig(model="tiny-random", max_length=64, batch_size=4))
    image = ImageEncoder(tiny_image_backbone(), ImageEncoderConfig(model="tiny-random", image_size=64, batch_size=4),
                         "tiny-random")
    return text, image


def _extract(catalog, encoders, cache_dir, **kwargs):
    text, image = encoders
    return extract_catalog_features(catalog, text, image, cache_dir, **kwargs)


def _rewrite_description(folder: Path, old: str, new: str) -> None:
    path = folder / "items.csv"
    content = path.read_text(encoding="utf-8")
    assert content.count(old) == 1
    path.write_text(content.replace(old, new), encoding="utf-8")


def test_cache_hits_and_single_recompute(tiny_catalog_dir: Path, encoders, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _extract(load_catalog_folder(tiny_catalog_dir), encoders, cache)
    s = first.stats
    assert (s.text_computed, s.text_cached) == (N_ITEMS, 0)
    assert (s.image_computed, s.image_cached, s.image_failed) == (N_IMAGES, 0, 0)

    second = _extract(load_catalog_folder(tiny_catalog_dir), encoders, cache)
    s = second.stats
    assert (s.text_computed, s.text_cached) == (0, N_ITEMS)
    assert (s.image_computed, s.image_cached, s.image_failed) == (0, N_IMAGES, 0)
    assert torch.equal(first.text, second.text)
    assert torch.equal(first.image, second.image)
    assert torch.equal(first.regions, second.regions)

    _rewrite_description(tiny_catalog_dir, "logic puzzle", "a brand new logic puzzle")
    third = _extract(load_catalog_folder(tiny_catalog_dir), encoders, cache)
    s = third.stats
    assert (s.text_computed, s.text_cached) == (1, N_ITEMS - 1)
    assert (s.image_computed, s.image_cached) == (0, N_IMAGES)
    changed = third.item_ids.index("puzzle")
    assert not torch.equal(third.text[changed], first.text[changed])
    others = [i for i in range(N_ITEMS) if i != changed]
    assert torch.equal(third.text[others], first.text[others])


def test_cached_vectors_match_a_fresh_computation(tiny_catalog, encoders, tmp_path: Path) -> None:
    cached_run = _extract(tiny_catalog, encoders, tmp_path / "c")
    _extract(tiny_catalog, encoders, tmp_path / "c")
    fresh = _extract(tiny_catalog, encoders, None)
    assert torch.allclose(cached_run.text, fresh.text, atol=1e-6)
    assert torch.allclose(cached_run.image, fresh.image, atol=1e-6)


def test_changed_encoder_config_uses_a_new_cache_key(tiny_catalog, encoders, tmp_path: Path) -> None:
    text, image = encoders
    cache = tmp_path / "cache"
    first = _extract(tiny_catalog, encoders, cache)
    other_text = tiny_text_encoder(TextEncoderConfig(model="tiny-random", max_length=32, batch_size=4))
    assert other_text.cache_key != text.cache_key
    second = extract_catalog_features(tiny_catalog, other_text, image, cache)
    assert second.text_key == other_text.cache_key != first.text_key
    assert (second.stats.text_computed, second.stats.text_cached) == (N_ITEMS, 0)
    assert (second.stats.image_computed, second.stats.image_cached) == (0, N_IMAGES)  # image encoder unchanged
    assert sorted(p.name for p in cache.iterdir()) == sorted([text.cache_key, other_text.cache_key, image.cache_key])

    other_image = ImageEncoder(tiny_image_backbone(), ImageEncoderConfig(model="tiny-random", image_size=96,
                                                                         batch_size=4), "tiny-random")
    assert other_image.cache_key != image.cache_key
    third = extract_catalog_features(tiny_catalog, text, other_image, cache)
    assert (third.stats.text_computed, third.stats.image_computed) == (0, N_IMAGES)


def test_corrupt_shard_is_deleted_and_recomputed(tiny_catalog, encoders, tmp_path: Path, caplog) -> None:
    text, _ = encoders
    cache = tmp_path / "cache"
    first = _extract(tiny_catalog, encoders, cache)
    shards = sorted((cache / text.cache_key).glob("*.safetensors"))
    assert len(shards) == 1
    shards[0].write_bytes(b"\x00garbage, not a safetensors file" * 10)
    with caplog.at_level(logging.WARNING, logger="recsys_core.encoders.features"):
        second = _extract(tiny_catalog, encoders, cache)
    assert "is corrupt" in caplog.text
    assert (second.stats.text_computed, second.stats.text_cached) == (N_ITEMS, 0)
    assert (second.stats.image_computed, second.stats.image_cached) == (0, N_IMAGES)
    assert torch.allclose(second.text, first.text, atol=1e-6)
    # The garbage was replaced by a valid shard holding every text vector.
    reloaded = load_file(sorted((cache / text.cache_key).glob("*.safetensors"))[0])
    assert set(reloaded) == {text_hash(item.text) for item in tiny_catalog.items}
    third = _extract(tiny_catalog, encoders, cache)
    assert third.stats.text_computed == 0


def test_feature_cache_deletes_unreadable_shard(tmp_path: Path) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"nope")
    cache = FeatureCache(tmp_path)
    assert cache.get("anything") is None
    assert not bad.exists()
    cache.put_many({"k": torch.ones(3)})
    assert torch.equal(FeatureCache(tmp_path).get("k"), torch.ones(3))
    assert list(tmp_path.glob("*.tmp")) == []  # written under a temporary name, then renamed


def test_no_cache_dir_works_and_writes_nothing(tiny_catalog, encoders, tmp_path: Path, monkeypatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    first = _extract(tiny_catalog, encoders, None)
    second = _extract(tiny_catalog, encoders, None)
    assert (second.stats.text_computed, second.stats.image_computed) == (N_ITEMS, N_IMAGES)
    assert torch.equal(first.text, second.text)
    assert list(cwd.iterdir()) == []


def test_shapes_has_image_and_regions(tiny_catalog, encoders) -> None:
    text, image = encoders
    feats = _extract(tiny_catalog, encoders, None)
    assert feats.item_ids == tuple(tiny_catalog.ids)
    assert feats.text.shape == (N_ITEMS, text.dim) and feats.text.dtype == torch.float32
    assert feats.image.shape == (N_ITEMS, image.dim) and feats.image.dtype == torch.float32
    no_image = feats.item_ids.index("noimage")
    assert feats.has_image.tolist() == [i != no_image for i in range(N_ITEMS)]
    assert torch.count_nonzero(feats.image[no_image]) == 0
    assert all(torch.count_nonzero(feats.image[i]) > 0 for i in range(N_ITEMS) if i != no_image)
    assert feats.regions is not None
    assert tuple(feats.regions.shape) == (N_ITEMS, image.dim, 7, 7)
    assert feats.regions.dtype == torch.float16
    assert torch.count_nonzero(feats.regions[no_image]) == 0


def test_regions_not_kept(tiny_catalog, encoders) -> None:
    feats = _extract(tiny_catalog, encoders, None, keep_regions=False)
    assert feats.regions is None
    assert int(feats.has_image.sum()) == N_IMAGES


def test_regions_requested_after_a_pooled_only_run_are_computed(tiny_catalog, encoders, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _extract(tiny_catalog, encoders, cache, keep_regions=False)
    feats = _extract(tiny_catalog, encoders, cache, keep_regions=True)
    assert feats.stats.image_computed == N_IMAGES
    assert feats.regions is not None and feats.regions.shape[0] == N_ITEMS


def test_unreadable_image_counts_as_failed(tiny_catalog_dir: Path, encoders) -> None:
    catalog = load_catalog_folder(tiny_catalog_dir)
    # Corrupt an image after the catalog's header check passed (e.g. changed on disk meanwhile).
    (tiny_catalog_dir / "images" / "racer.png").write_bytes(b"not a png any more")
    feats = _extract(catalog, encoders, None)
    racer = feats.item_ids.index("racer")
    assert feats.stats.image_failed == 1
    assert feats.stats.image_computed == N_IMAGES - 1
    assert not bool(feats.has_image[racer])
    assert torch.count_nonzero(feats.image[racer]) == 0


def test_progress_callback_reaches_one(tiny_catalog, encoders) -> None:
    calls: list[tuple[float, str]] = []
    _extract(tiny_catalog, encoders, None, progress=lambda f, d: calls.append((f, d)))
    text_calls = [f for f, d in calls if d == "text features"]
    image_calls = [f for f, d in calls if d == "image features"]
    assert text_calls[0] == 0.0 and text_calls[-1] == 1.0
    assert image_calls[0] == 0.0 and image_calls[-1] == 1.0


def test_extraction_autocast_is_bf16_on_cuda_only(monkeypatch) -> None:
    import contextlib

    import torch

    from recsys_core.device import extraction_autocast

    assert isinstance(extraction_autocast(torch.device("cpu")), contextlib.nullcontext)
    import warnings

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    with warnings.catch_warnings():  # without a GPU torch warns that this autocast is disabled
        warnings.simplefilter("ignore", UserWarning)
        ctx = extraction_autocast(torch.device("cuda"))
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16
