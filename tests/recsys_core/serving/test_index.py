"""Exact and FAISS indexes: agreement, exclusions, the automatic choice, the on-disk cache, the service."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import recsys_core.serving.index as index_module
from recsys_core.config import IndexConfig
from recsys_core.serving.index import CACHE_FOLDER, ExactIndex, FaissIndex, build_index
from tests.conftest import make_tiny_service

# Low enough that the small sets below are served by FAISS under kind="auto".
SMALL_FAISS = IndexConfig(kind="auto", faiss_threshold=500, nlist=16, nprobe=4)


def clustered(n: int, dim: int = 17, clusters: int = 12, seed: int = 0) -> torch.Tensor:
    """Rows shaped like the fused model's: [scale * unit(direction), bias], directions in clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim - 1))
    directions = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim - 1))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    rows = np.concatenate([7.0 * directions, 0.3 * rng.standard_normal((n, 1))], axis=1)
    return torch.from_numpy(rows.astype(np.float32))


def queries(n: int, dim: int = 17, seed: int = 1) -> list[torch.Tensor]:
    """User queries [unit(direction), 1] drawn near item rows (so they have real neighbours)."""
    rows = clustered(n, dim, seed=seed)
    return [torch.cat([torch.nn.functional.normalize(r[:-1], dim=0), torch.ones(1)]) for r in rows]


def test_faiss_agrees_with_exact() -> None:
    vectors = clustered(2000)
    exact, approx = ExactIndex(vectors), build_index(vectors, SMALL_FAISS)
    assert isinstance(approx, FaissIndex)
    overlap = []
    for q in queries(30):
        want, got = exact.search(q, 10), approx.search(q, 10)
        assert len(got.indices) == 10
        overlap.append(len(set(want.indices.tolist()) & set(got.indices.tolist())) / 10)
        # IVF-Flat keeps the rows uncompressed: a score it returns is the exact inner product.
        assert torch.allclose(got.scores, vectors[got.indices] @ q, atol=1e-4)
        assert torch.all(got.scores[:-1] >= got.scores[1:])  # best first
    assert np.mean(overlap) >= 0.9


@pytest.mark.parametrize("kind", ["exact", "faiss"])
def test_exclude_is_honoured(kind: str) -> None:
    vectors = clustered(1000)
    index = build_index(vectors, IndexConfig(kind=kind, nlist=16, nprobe=16))  # all lists probed: exact
    q = queries(1)[0]
    top = ExactIndex(vectors).search(q, 15).indices.tolist()
    excluded = top[:5]
    found = index.search(q, 10, exclude=excluded)
    assert found.indices.tolist() == top[5:15]
    assert not set(found.indices.tolist()) & set(excluded)


def test_auto_choice_by_size() -> None:
    config = IndexConfig(kind="auto", faiss_threshold=300, nlist=8)
    assert isinstance(build_index(clustered(299), config), ExactIndex)
    assert isinstance(build_index(clustered(300), config), FaissIndex)
    assert isinstance(build_index(clustered(300), IndexConfig(kind="exact", faiss_threshold=300)), ExactIndex)
    assert isinstance(build_index(clustered(50), IndexConfig(kind="faiss", nlist=4)), FaissIndex)


def test_too_few_faiss_results_fall_back_to_exact() -> None:
    # 40 lists of ~5 items, one probed: FAISS alone cannot return 30 results.
    vectors = clustered(200)
    index = build_index(vectors, IndexConfig(kind="faiss", nlist=40, nprobe=1))
    q = queries(1)[0]
    want = ExactIndex(vectors).search(q, 30, exclude=[3])
    got = index.search(q, 30, exclude=[3])
    assert got.indices.tolist() == want.indices.tolist()
    assert index.search(q, 500, exclude=range(190)).indices.numel() == 10  # k is capped at what is left


def test_faiss_index_is_cached_reused_and_rebuilt_for_new_vectors(tmp_path: Path, monkeypatch) -> None:
    builds = []
    real_build = index_module._build
    monkeypatch.setattr(index_module, "_build", lambda x, config: builds.append(len(x)) or real_build(x, config))
    vectors = clustered(1000)

    first = build_index(vectors, SMALL_FAISS, tmp_path)
    files = sorted(p.name for p in (tmp_path / CACHE_FOLDER).iterdir())
    assert len(builds) == 1 and len(files) == 2  # the index and its checksum sidecar, no temp files left

    q = queries(1)[0]
    again = build_index(vectors, SMALL_FAISS, tmp_path)  # a restart
    assert len(builds) == 1
    assert again.search(q, 10).indices.tolist() == first.search(q, 10).indices.tolist()

    # nprobe is a search-time setting: changing it reuses the cached index, and takes effect.
    wider = build_index(vectors, IndexConfig(kind="faiss", nlist=16, nprobe=16), tmp_path)
    assert len(builds) == 1
    assert index_module._faiss().extract_index_ivf(wider.index).nprobe == 16

    swapped = vectors.clone()
    swapped[0, 0] += 1.0  # a model swap: other vectors, other key
    build_index(swapped, SMALL_FAISS, tmp_path)
    assert len(builds) == 2
    assert len(list((tmp_path / CACHE_FOLDER).glob("*.faiss"))) == 2


def test_old_cached_indexes_are_pruned_but_the_one_in_use_is_kept(tmp_path: Path) -> None:
    import os
    import time

    config = IndexConfig(kind="faiss", nlist=16, nprobe=4, cache_keep=2)
    base = clustered(600)
    versions = []
    for step in range(3):  # three promotions: three different sets of vectors
        vectors = base.clone()
        vectors[0, 0] += step
        versions.append(vectors)
        build_index(vectors, config, tmp_path)
        time.sleep(0.02)  # distinct modification times
    folder = tmp_path / CACHE_FOLDER
    assert len(list(folder.glob("*.faiss"))) == 2 and len(list(folder.glob("*.json"))) == 2
    oldest_kept = min(folder.glob("*.faiss"), key=lambda p: p.stat().st_mtime)
    os.utime(oldest_kept, (1, 1))
    build_index(versions[1], config, tmp_path)  # a rollback to a kept index marks it as in use
    vectors = base.clone()
    vectors[0, 0] += 10
    build_index(vectors, config, tmp_path)  # the next promotion prunes the least recently used
    names = {p.name for p in folder.glob("*.faiss")}
    assert oldest_kept.name in names and len(names) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar"])
def test_corrupt_cache_is_detected_and_rebuilt(tmp_path: Path, damage: str, caplog) -> None:
    vectors = clustered(1000)
    first = build_index(vectors, SMALL_FAISS, tmp_path)
    path = next((tmp_path / CACHE_FOLDER).glob("*.faiss"))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same length, one byte changed: only the checksum can tell
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    else:
        path.with_suffix(".json").write_text("{not json", encoding="utf-8")

    with caplog.at_level(logging.WARNING, logger="recsys_core.serving.index"):
        rebuilt = build_index(vectors, SMALL_FAISS, tmp_path)
    assert "unusable" in caplog.text
    q = queries(1)[0]
    assert rebuilt.search(q, 10).indices.tolist() == first.search(q, 10).indices.tolist()
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    assert meta["sha256"] == index_module._file_sha256(path)  # rewritten whole


def test_bad_config_and_vectors_are_refused() -> None:
    with pytest.raises(ValueError, match="auto, exact, faiss"):
        IndexConfig(kind="annoy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nprobe is 0"):
        IndexConfig(nprobe=0)
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        build_index(torch.zeros(5))


def test_service_serves_with_a_forced_faiss_index(tiny_catalog, tiny_service, tmp_path: Path) -> None:
    # nprobe >= the 7 lists of the 7-item catalog: every list is scanned, so FAISS must match exact.
    service = make_tiny_service(tiny_catalog, tmp_path / "features", IndexConfig(kind="faiss", nprobe=16))
    service.prepare()
    assert isinstance(service._state().index, FaissIndex)
    assert isinstance(tiny_service._state().index, ExactIndex)  # the default config: exact for 7 items
    assert list((tmp_path / "features" / CACHE_FOLDER).glob("*.faiss"))

    liked = ["chess", "racer"]
    got = service.recommend(liked, k=4)
    want = tiny_service.recommend(liked, k=4)
    assert [r.item_id for r in got] == [r.item_id for r in want]
    assert [r.score for r in got] == pytest.approx([r.score for r in want], abs=1e-4)
    assert not {r.item_id for r in got} & set(liked)
    diverse = service.recommend(liked, k=4, diversity=0.5)  # MMR reads the exact vectors
    assert len(diverse) == 4 and not {r.item_id for r in diverse} & set(liked)
