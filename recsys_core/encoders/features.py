"""Batched feature extraction with a progress bar and an on-disk cache.

The cache lives under ``<cache_dir>/<encoder cache key>/`` and maps a *content hash* (of the text,
or of the image file's bytes) to vectors, so a restart, a re-ordered catalog or a second catalog
sharing items recomputes nothing, while any change of text, image or encoder recomputes exactly
the items that changed. Shards are safetensors files written to a temporary name and renamed, so
a crash never leaves a half-written shard; a shard that fails to load is deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from recsys_core.config import ImageEncoderConfig, TextEncoderConfig
from recsys_core.data.catalog import Catalog
from recsys_core.device import resolve_device
from recsys_core.encoders.build import build_image_encoder, build_text_encoder
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.text import TextEncoder
from recsys_core.errors import InvalidInputError
from recsys_core.data.images import load_image

log = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class ExtractionStats:
    text_computed: int
    text_cached: int
    image_computed: int
    image_cached: int
    image_failed: int
    text_seconds: float
    image_seconds: float


@dataclass(frozen=True)
class CatalogFeatures:
    """Raw (not normalised) encoder outputs, row ``i`` = ``item_ids[i]``."""

    item_ids: tuple[str, ...]
    text: torch.Tensor  # [N, Dt] float32
    image: torch.Tensor  # [N, Di] float32; zeros where has_image is False
    has_image: torch.Tensor  # [N] bool
    regions: torch.Tensor | None  # [N, Di, 7, 7] float16 (zeros where no image) or None
    text_key: str
    image_key: str
    stats: ExtractionStats


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class FeatureCache:
    """Content-hash -> tensors, stored as safetensors shards in one folder per encoder."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._entries: dict[str, torch.Tensor] | None = None

    def _load(self) -> dict[str, torch.Tensor]:
        if self._entries is None:
            self._entries = {}
            if self.folder is not None and self.folder.is_dir():
                for shard in sorted(self.folder.glob("*.safetensors")):
                    try:
                        self._entries.update(load_file(shard))
                    except Exception as exc:  # any decoding error means the file is unusable
                        log.warning("feature cache shard %s is corrupt (%s): deleting, it will be recomputed", shard, exc)
                        shard.unlink(missing_ok=True)
        return self._entries

    def get(self, key: str) -> torch.Tensor | None:
        return self._load().get(key)

    def put_many(self, entries: dict[str, torch.Tensor]) -> None:
        if not entries:
            return
        self._load().update(entries)
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256("|".join(sorted(entries)).encode()).hexdigest()[:20]
        final = self.folder / f"{name}.safetensors"
        tmp = self.folder / f".{name}.{os.getpid()}.tmp"
        save_file({k: v.contiguous() for k, v in entries.items()}, str(tmp))
        os.replace(tmp, final)  # atomic on POSIX and Windows


def _progress_bar(total: int, desc: str, progress: ProgressFn | None) -> tqdm:
    bar = tqdm(total=total, desc=desc, unit="item", disable=total == 0)
    if progress is not None:
        progress(0.0, desc)
    return bar


def extract_text_features(
    texts: Sequence[str], encoder: TextEncoder, cache: FeatureCache, progress: ProgressFn | None = None
) -> tuple[torch.Tensor, int, float]:
    """Vectors for ``texts``: cached ones read, the rest encoded in batches. Returns (vectors, computed, seconds)."""
    hashes = [text_hash(t) for t in texts]
    todo = sorted({h: i for i, h in enumerate(hashes) if cache.get(h) is None}.items(), key=lambda kv: kv[1])
    start = time.perf_counter()
    if todo:
        bar = _progress_bar(len(todo), "text features", progress)
        new: dict[str, torch.Tensor] = {}
        step = encoder.config.batch_size
        for begin in range(0, len(todo), step):
            chunk = todo[begin : begin + step]
            vectors = encoder.encode([texts[i] for _, i in chunk])
            new.update({h: v.clone() for (h, _), v in zip(chunk, vectors)})
            bar.update(len(chunk))
            if progress is not None:
                progress(bar.n / len(todo), "text features")
        bar.close()
        cache.put_many(new)
    seconds = time.perf_counter() - start
    if not texts:
        return torch.empty(0, encoder.dim), 0, seconds
    return torch.stack([cache.get(h) for h in hashes]), len(todo), seconds  # type: ignore[misc]


def extract_image_features(
    paths: Sequence[Path | None],
    encoder: ImageEncoder,
    cache: FeatureCache,
    keep_regions: bool,
    progress: ProgressFn | None = None,
    max_pixels: int = 40_000_000,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int, int, int, float]:
    """(pooled, has_image, regions, computed, cached, failed, seconds); unreadable images count as no image."""
    hashes: list[str | None] = []
    for path in paths:
        hashes.append(file_hash(path) if path is not None and path.is_file() else None)

    def cached(h: str) -> bool:
        return cache.get(h + ".pooled") is not None and (not keep_regions or cache.get(h + ".regions") is not None)

    todo: dict[str, Path] = {}
    for h, path in zip(hashes, paths):
        if h is not None and h not in todo and not cached(h):
            todo[h] = path  # type: ignore[assignment]
    start = time.perf_counter()
    failed: set[str] = set()
    if todo:
        bar = _progress_bar(len(todo), "image features", progress)
        items = list(todo.items())
        step = encoder.config.batch_size
        for begin in range(0, len(items), step):
            images, keys = [], []
            for h, path in items[begin : begin + step]:
                try:
                    images.append(load_image(path, max_pixels=max_pixels, max_bytes=1 << 30))
                    keys.append(h)
                except InvalidInputError as exc:
                    log.warning("%s: %s; the item is served without an image", path, exc)
                    failed.add(h)
            if images:
                feats = encoder.encode(images, keep_regions=keep_regions)
                new = {f"{h}.pooled": feats.pooled[j].clone() for j, h in enumerate(keys)}
                if keep_regions:
                    new.update({f"{h}.regions": feats.regions[j].clone() for j, h in enumerate(keys)})
                cache.put_many(new)
            bar.update(len(items[begin : begin + step]))
            if progress is not None:
                progress(bar.n / len(items), "image features")
        bar.close()
    seconds = time.perf_counter() - start
    dim = encoder.dim
    pooled = torch.zeros(len(paths), dim)
    has_image = torch.zeros(len(paths), dtype=torch.bool)
    regions = None
    for i, h in enumerate(hashes):
        if h is None or h in failed:
            continue
        pooled[i] = cache.get(h + ".pooled")  # type: ignore[assignment]
        has_image[i] = True
        if keep_regions:
            block = cache.get(h + ".regions")
            if regions is None:
                regions = torch.zeros(len(paths), *block.shape, dtype=torch.float16)  # type: ignore[union-attr]
            regions[i] = block  # type: ignore[assignment]
    distinct = {h for h in hashes if h is not None}
    computed = len(todo) - len(failed)
    return pooled, has_image, regions, computed, len(distinct) - len(todo), len(failed), seconds


def extract_catalog_features(
    catalog: Catalog,
    text_encoder: TextEncoder,
    image_encoder: ImageEncoder,
    cache_dir: Path | None,
    *,
    keep_regions: bool = True,
    progress: ProgressFn | None = None,
    max_pixels: int = 40_000_000,
) -> CatalogFeatures:
    text_cache = FeatureCache(cache_dir / text_encoder.cache_key if cache_dir else None)
    image_cache = FeatureCache(cache_dir / image_encoder.cache_key if cache_dir else None)
    texts = [item.text for item in catalog.items]
    text, text_new, text_s = extract_text_features(texts, text_encoder, text_cache, progress)
    paths = [item.image for item in catalog.items]
    pooled, has_image, regions, image_new, image_cached, failed, image_s = extract_image_features(
        paths, image_encoder, image_cache, keep_regions, progress, max_pixels
    )
    stats = ExtractionStats(
        text_computed=text_new,
        text_cached=len(set(map(text_hash, texts))) - text_new,
        image_computed=image_new,
        image_cached=image_cached,
        image_failed=failed,
        text_seconds=text_s,
        image_seconds=image_s,
    )
    log.info(
        "features: text %d computed / %d cached in %.1fs; images %d computed / %d cached / %d unreadable in %.1fs",
        stats.text_computed, stats.text_cached, text_s, stats.image_computed, stats.image_cached, failed, image_s,
    )
    return CatalogFeatures(
        item_ids=tuple(catalog.ids),
        text=text,
        image=pooled,
        has_image=has_image,
        regions=regions,
        text_key=text_encoder.cache_key,
        image_key=image_encoder.cache_key,
        stats=stats,
    )


@dataclass(frozen=True)
class EncodedCatalog:
    """A catalog's encoders and their features: what training and evaluation need, without a service."""

    text_encoder: TextEncoder
    image_encoder: ImageEncoder
    features: CatalogFeatures


def encode_catalog(
    catalog: Catalog,
    text_config: TextEncoderConfig,
    image_config: ImageEncoderConfig,
    cache_dir: Path | None,
    device: torch.device | str = "auto",
    progress: ProgressFn | None = None,
    *,
    keep_regions: bool = True,
    max_pixels: int = 40_000_000,
) -> EncodedCatalog:
    """Build the configured encoders on ``device`` and extract (or read cached) the catalog's features.

    The same encoders, cache and defaults as :meth:`recsys_core.service.RecommenderService.prepare`, so
    a trainer reads the vectors the app serves from (and their cache) without building a service.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    text_encoder = build_text_encoder(text_config, device)
    image_encoder = build_image_encoder(image_config, device)
    features = extract_catalog_features(catalog, text_encoder, image_encoder, cache_dir, keep_regions=keep_regions,
                                        progress=progress, max_pixels=max_pixels)
    return EncodedCatalog(text_encoder, image_encoder, features)
