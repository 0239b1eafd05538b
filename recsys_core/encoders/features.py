"""Batched feature extraction with a progress bar and an on-disk cache.

The cache lives under ``<cache_dir>/<encoder cache key>/`` and maps a *content hash* (of the text,
or of the image, audio or video file's bytes) to vectors (for audio and video: one per segment or
keyframe, with their times), so a restart, a re-ordered catalog or a second catalog
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
from typing import TYPE_CHECKING, Callable, Sequence

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from recsys_core.config import AudioEncoderConfig, ImageEncoderConfig, TextEncoderConfig, VideoEncoderConfig
from recsys_core.data.catalog import Catalog
from recsys_core.device import resolve_device
from recsys_core.encoders.audio import AudioEncoder
from recsys_core.encoders.build import build_audio_encoder, build_image_encoder, build_text_encoder, build_video_encoder
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.sequence import TimeSteps
from recsys_core.encoders.text import TextEncoder
from recsys_core.encoders.video import VideoEncoder
from recsys_core.errors import InvalidInputError
from recsys_core.data.images import load_image

if TYPE_CHECKING:
    from recsys_core.data.media import MediaLimits

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
    audio_computed: int = 0
    audio_cached: int = 0
    audio_failed: int = 0
    audio_seconds: float = 0.0
    video_computed: int = 0
    video_cached: int = 0
    video_failed: int = 0
    video_seconds: float = 0.0


@dataclass(frozen=True)
class SequenceFeatures:
    """A time-ordered modality of the whole catalog (audio segments or video keyframes), row ``i`` = item ``i``."""

    pooled: torch.Tensor  # [N, D] float32 pooled vectors; zeros where present is False
    present: torch.Tensor  # [N] bool
    steps: tuple[TimeSteps | None, ...]  # each item's segments / keyframes (None: the item has none)
    key: str  # the encoder's cache key

    @property
    def dim(self) -> int:
        return int(self.pooled.shape[1])


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
    audio: SequenceFeatures | None = None  # None: the catalog has no audio (nor video soundtracks)
    video: SequenceFeatures | None = None  # None: the catalog has no video


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


def extract_sequence_features(
    sources: Sequence[Path | None],
    encode: Callable[[Path], TimeSteps],
    dim: int,
    cache: FeatureCache,
    kind: str,
    progress: ProgressFn | None = None,
) -> tuple[SequenceFeatures, int, int, int, float]:
    """Per-item segment (audio) or keyframe (video) vectors of the files in ``sources``: cached ones read, the
    rest decoded and encoded one file at a time (a clip is already a batch of segments). A file that cannot be
    decoded is logged and the item served without that modality. Returns (features, computed, cached, failed,
    seconds)."""
    hashes = [file_hash(p) if p is not None and p.is_file() else None for p in sources]
    todo: dict[str, Path] = {}
    for h, path in zip(hashes, sources):
        if h is not None and h not in todo and cache.get(h + ".vectors") is None:
            todo[h] = path  # type: ignore[assignment]
    start = time.perf_counter()
    failed: set[str] = set()
    stage = f"{kind} features"
    if todo:
        bar = _progress_bar(len(todo), stage, progress)
        for done, (h, path) in enumerate(todo.items(), start=1):
            try:
                steps = encode(path)
            except InvalidInputError as exc:
                log.warning("%s: %s; the item is served without its %s", path, exc, kind)
                failed.add(h)
            else:
                cache.put_many({f"{h}.vectors": steps.vectors.float().contiguous(), f"{h}.starts": steps.starts_s,
                                f"{h}.ends": steps.ends_s, f"{h}.weights": steps.weights.float()})
            bar.update(1)
            if progress is not None:
                progress(done / len(todo), stage)
        bar.close()
    seconds = time.perf_counter() - start
    pooled = torch.zeros(len(sources), dim)
    present = torch.zeros(len(sources), dtype=torch.bool)
    steps_out: list[TimeSteps | None] = []
    for i, h in enumerate(hashes):
        if h is None or h in failed:
            steps_out.append(None)
            continue
        steps = TimeSteps(vectors=cache.get(h + ".vectors"), starts_s=cache.get(h + ".starts"),  # type: ignore[arg-type]
                          ends_s=cache.get(h + ".ends"), weights=cache.get(h + ".weights"))  # type: ignore[arg-type]
        steps_out.append(steps)
        pooled[i] = steps.pooled
        present[i] = True
    distinct = {h for h in hashes if h is not None}
    features = SequenceFeatures(pooled=pooled, present=present, steps=tuple(steps_out), key=cache_key_of(cache))
    return features, len(todo) - len(failed), len(distinct) - len(todo), len(failed), seconds


def cache_key_of(cache: FeatureCache) -> str:
    return cache.folder.name if cache.folder is not None else ""


def catalog_has_audio(catalog: Catalog) -> bool:
    return any(item.audio_source is not None for item in catalog.items)


def catalog_has_video(catalog: Catalog) -> bool:
    return any(item.video is not None for item in catalog.items)


def extract_catalog_features(
    catalog: Catalog,
    text_encoder: TextEncoder,
    image_encoder: ImageEncoder,
    cache_dir: Path | None,
    *,
    keep_regions: bool = True,
    progress: ProgressFn | None = None,
    max_pixels: int = 40_000_000,
    audio_encoder: AudioEncoder | None = None,
    video_encoder: VideoEncoder | None = None,
    media_limits: MediaLimits | None = None,
) -> CatalogFeatures:
    """Every modality's features of ``catalog``. Audio (items' own audio, else their video's soundtrack) and
    video are extracted when their encoder is given and the catalog has any; otherwise they are None."""
    text_cache = FeatureCache(cache_dir / text_encoder.cache_key if cache_dir else None)
    image_cache = FeatureCache(cache_dir / image_encoder.cache_key if cache_dir else None)
    texts = [item.text for item in catalog.items]
    text, text_new, text_s = extract_text_features(texts, text_encoder, text_cache, progress)
    paths = [item.image for item in catalog.items]
    pooled, has_image, regions, image_new, image_cached, failed, image_s = extract_image_features(
        paths, image_encoder, image_cache, keep_regions, progress, max_pixels
    )
    audio = video = None
    media_stats: dict[str, float] = {}
    if media_limits is None and (audio_encoder is not None or video_encoder is not None):
        from recsys_core.data.media import MediaLimits

        media_limits = MediaLimits()
    limits = media_limits
    if audio_encoder is not None and catalog_has_audio(catalog):
        enc_audio = audio_encoder

        def read_audio(path: Path) -> TimeSteps:
            clip = enc_audio.decode(path, limits=limits)
            return enc_audio.encode(clip.samples, clip.sample_rate)

        audio, *counts = extract_sequence_features(
            [item.audio_source for item in catalog.items], read_audio, audio_encoder.dim,
            FeatureCache(cache_dir / audio_encoder.cache_key if cache_dir else None), "audio", progress)
        media_stats.update(zip(("audio_computed", "audio_cached", "audio_failed", "audio_seconds"), counts))
    if video_encoder is not None and catalog_has_video(catalog):
        enc_video = video_encoder

        def read_video(path: Path) -> TimeSteps:
            return enc_video.encode(enc_video.decode(path, limits=limits))

        video, *counts = extract_sequence_features(
            [item.video for item in catalog.items], read_video, video_encoder.dim,
            FeatureCache(cache_dir / video_encoder.cache_key if cache_dir else None), "video", progress)
        media_stats.update(zip(("video_computed", "video_cached", "video_failed", "video_seconds"), counts))
    stats = ExtractionStats(
        text_computed=text_new,
        text_cached=len(set(map(text_hash, texts))) - text_new,
        image_computed=image_new,
        image_cached=image_cached,
        image_failed=failed,
        text_seconds=text_s,
        image_seconds=image_s,
        **media_stats,  # type: ignore[arg-type]
    )
    log.info(
        "features: text %d computed / %d cached in %.1fs; images %d computed / %d cached / %d unreadable in %.1fs",
        stats.text_computed, stats.text_cached, text_s, stats.image_computed, stats.image_cached, failed, image_s,
    )
    for kind, present in (("audio", audio), ("video", video)):
        if present is not None:
            log.info("features: %s %d computed / %d cached / %d unreadable in %.1fs", kind,
                     getattr(stats, f"{kind}_computed"), getattr(stats, f"{kind}_cached"),
                     getattr(stats, f"{kind}_failed"), getattr(stats, f"{kind}_seconds"))
    return CatalogFeatures(
        item_ids=tuple(catalog.ids),
        text=text,
        image=pooled,
        has_image=has_image,
        regions=regions,
        text_key=text_encoder.cache_key,
        image_key=image_encoder.cache_key,
        stats=stats,
        audio=audio,
        video=video,
    )


@dataclass(frozen=True)
class EncodedCatalog:
    """A catalog's encoders and their features: what training and evaluation need, without a service."""

    text_encoder: TextEncoder
    image_encoder: ImageEncoder
    features: CatalogFeatures
    audio_encoder: AudioEncoder | None = None  # built only for a catalog with audio
    video_encoder: VideoEncoder | None = None  # built only for a catalog with video


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
    audio_config: AudioEncoderConfig | None = None,
    video_config: VideoEncoderConfig | None = None,
    media_limits: MediaLimits | None = None,
) -> EncodedCatalog:
    """Build the configured encoders on ``device`` and extract (or read cached) the catalog's features.

    The same encoders, cache and defaults as :meth:`recsys_core.service.RecommenderService.prepare`, so
    a trainer reads the vectors the app serves from (and their cache) without building a service.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    text_encoder = build_text_encoder(text_config, device)
    image_encoder = build_image_encoder(image_config, device)
    # Audio and video encoders only where the catalog has such media, so a text + image catalog loads nothing more.
    audio_encoder = build_audio_encoder(audio_config or AudioEncoderConfig(), device) if catalog_has_audio(catalog) else None
    video_encoder = build_video_encoder(video_config or VideoEncoderConfig(), image_encoder) \
        if catalog_has_video(catalog) else None
    features = extract_catalog_features(catalog, text_encoder, image_encoder, cache_dir, keep_regions=keep_regions,
                                        progress=progress, max_pixels=max_pixels, audio_encoder=audio_encoder,
                                        video_encoder=video_encoder, media_limits=media_limits)
    return EncodedCatalog(text_encoder, image_encoder, features, audio_encoder, video_encoder)
