"""``RecommenderService``: the one facade the UI (and any script) uses.

It owns the catalog, the encoders, the active model and its index. Requests read one immutable
snapshot (model + index) so a model swap never changes the ground under a running request.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from recsys_core.data.catalog import Catalog, Item
from recsys_core.config import ServiceConfig
from recsys_core.device import resolve_device
from recsys_core.encoders.audio import AudioEncoder
from recsys_core.encoders.build import build_audio_encoder, build_image_encoder, build_text_encoder, build_video_encoder
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.sequence import TimeSteps
from recsys_core.encoders.text import TextEncoder
from recsys_core.encoders.video import VideoEncoder
from recsys_core.errors import EmptyProfileError, InvalidInputError, NotReadyError
from recsys_core.serving.explain import METHODS, Explainer, ExplainConfig, Explanation, HistoryShare, modality_share
from recsys_core.encoders.features import (CatalogFeatures, ExtractionStats, ProgressFn, catalog_has_audio,
                                           catalog_has_video, extract_catalog_features, text_hash)
from recsys_core.serving.explain_media import FrameAttribution, SegmentAttribution, attribute_steps
from recsys_core.data.images import load_image
from recsys_core.serving.index import VectorIndex, build_index
from recsys_core.serving.load import load_model
from recsys_core.serving.protocol import ServingModel
from recsys_core.serving.rerank import mmr_search
from recsys_core.serving.zeroshot import ZeroShotModel

log = logging.getLogger(__name__)


def _upload_name(source: object) -> str | None:
    """The file name of an uploaded path, for messages (None for raw bytes: the decoder says "upload")."""
    return Path(source).name if isinstance(source, (str, Path)) else None


@dataclass(frozen=True)
class Recommendation:
    item_id: str
    title: str
    score: float
    rank: int  # 1-based
    text_score: float  # the text part of ``score``
    image_score: float  # the image part of ``score``
    image: Path | None
    genres: tuple[str, ...]
    # Set only when diversity (MMR) re-ranked the list; ``score`` stays the relevance score.
    score_rank: int | None = None  # where ranking by score alone would have put it (1-based)
    diversity_gain: float | None = None  # 1 - its highest cosine to the items above it (rerank.diversity_gains)
    collaborative_score: float = 0.0  # the hybrid's item-item part of ``score`` (0 for other models)
    audio_score: float = 0.0  # the audio part (0 where the catalog or the item has no audio)
    video_score: float = 0.0  # the video part
    has_audio: bool = False  # the item has audio (its own or its video's soundtrack): the UI shows a player
    has_video: bool = False

    @property
    def other_score(self) -> float:
        """What the modality parts and the collaborative part do not explain: the fusion model's item ID and
        bias part, ~0 for the zero-shot and hybrid models."""
        return (self.score - self.text_score - self.image_score - self.audio_score - self.video_score
                - self.collaborative_score)

    def to_api(self) -> dict[str, object]:
        """The existing keys always; "score_rank" and "diversity_gain" as well when MMR re-ranked the list."""
        out: dict[str, object] = {"item_id": self.item_id, "title": self.title, "score": round(self.score, 6),
                                  "rank": self.rank}
        if self.score_rank is not None:
            out["score_rank"] = self.score_rank
        if self.diversity_gain is not None:
            out["diversity_gain"] = round(self.diversity_gain, 6)
        return out


@dataclass(frozen=True)
class ModelRecommendations:
    """One model's list for a profile (:meth:`RecommenderService.recommend_with`), named by the model that made it."""

    model_version: str
    model_kind: str  # zeroshot | multimodal: their scores are on different scales (cosine vs logit)
    items: tuple[Recommendation, ...]
    active: bool  # made by the model requests are served from


@dataclass(frozen=True)
class PrepareReport:
    items: int
    with_image: int
    seconds: float
    stats: ExtractionStats
    model_version: str
    device: str
    with_audio: int = 0
    with_video: int = 0


@dataclass(frozen=True)
class PrepareStatus:
    """Where preparation stands: what the header shows and what a request made too early is told."""

    items: int  # catalog size
    stage: str = "waiting"  # waiting, loading the encoders, text features, image features, building the index,
    # finishing start-up (the app's own steps after prepare, e.g. the registry's model), ready, failed
    fraction: float = 0.0  # of the current stage's work (the items it has to compute, not the cached ones)
    started_at: float | None = None  # time.monotonic() when prepare began
    error: str | None = None  # stage "failed": why

    @property
    def ready(self) -> bool:
        return self.stage == "ready"

    def describe(self) -> str:
        """e.g. "image features 45%; 189 items, 12 s so far"."""
        stage = self.stage if not self.stage.endswith(" features") else f"{self.stage} {self.fraction:.0%}"
        since = f", {time.monotonic() - self.started_at:.0f} s so far" if self.started_at is not None else ""
        return f"{stage}; {self.items} items{since}"


@dataclass(frozen=True)
class ExplanationInputs:
    item: Item
    text: str
    image: object | None  # PIL image, or None when the item has none (or its image part is 0)
    text_part: float
    image_part: float
    collaborative_part: float  # the hybrid's item-item part (0 for other models)
    text_score_fn: Callable[[torch.Tensor], torch.Tensor]  # pooled text vectors [B, Dt] -> full score [B]
    image_score_fn: Callable[[torch.Tensor], torch.Tensor]  # pooled image vectors [B, Di] -> full score [B]
    audio_part: float = 0.0
    video_part: float = 0.0


@dataclass(frozen=True)
class _Upload:
    title: str
    description: str
    image: object | None  # PIL image after validation
    audio: TimeSteps | None = None  # the clip's segments (its own audio, else a video's soundtrack)
    video: TimeSteps | None = None  # the clip's keyframes
    frames: tuple = ()  # the keyframes themselves (PIL), for the heatmap inside the top one
    key: str = ""  # content hash of the media, for the explanation cache


@dataclass(frozen=True)
class _Snapshot:
    model: ServingModel  # the active model: what requests are served from
    index: VectorIndex  # exact for small catalogs, FAISS IVF above IndexConfig.faiss_threshold
    features: CatalogFeatures
    zeroshot: ZeroShotModel  # always built: the baseline, and the fallback when no checkpoint is set
    folder: Path | None = None  # the checkpoint it was loaded from (resolved; None = zero-shot)


class RecommenderService:
    def __init__(
        self,
        catalog: Catalog,
        config: ServiceConfig | None = None,
        *,
        text_encoder: TextEncoder | None = None,
        image_encoder: ImageEncoder | None = None,
        audio_encoder: AudioEncoder | None = None,
    ) -> None:
        self.catalog = catalog
        self.config = config or ServiceConfig()
        self.device = resolve_device(self.config.device)
        self._text_encoder = text_encoder
        self._image_encoder = image_encoder
        self._audio_encoder = audio_encoder
        self._video_encoder: VideoEncoder | None = None
        self._lock = threading.Lock()
        self._snapshot: _Snapshot | None = None
        self._explainer: Explainer | None = None
        self.explain_config = ExplainConfig()
        self._status = PrepareStatus(items=len(catalog))
        self._starting = False  # inside starting(): requests are refused until it ends
        # recommend_with's one model kept aside (never served), and the lock that loads it once: its own
        # lock, not _lock, so loading a checkpoint for a comparison never stalls requests or a promotion.
        self._aside: _Snapshot | None = None
        self._aside_lock = threading.Lock()

    # -- set-up ---------------------------------------------------------------------------------
    @property
    def text_encoder(self) -> TextEncoder:
        if self._text_encoder is None:
            self._text_encoder = build_text_encoder(self.config.text, self.device)
        return self._text_encoder

    @property
    def image_encoder(self) -> ImageEncoder:
        if self._image_encoder is None:
            self._image_encoder = build_image_encoder(self.config.image, self.device)
        return self._image_encoder

    @property
    def audio_encoder(self) -> AudioEncoder:
        if self._audio_encoder is None:
            self._audio_encoder = build_audio_encoder(self.config.audio, self.device)
        return self._audio_encoder

    @property
    def video_encoder(self) -> VideoEncoder:
        if self._video_encoder is None:
            self._video_encoder = build_video_encoder(self.config.video, self.image_encoder)
        return self._video_encoder

    @property
    def media_limits(self):
        """Size and duration limits of audio and video (``recsys_core.data.media.MediaLimits``)."""
        from recsys_core.data.media import MediaLimits

        limits = self.config.limits
        return MediaLimits(max_audio_seconds=limits.max_audio_seconds, max_video_seconds=limits.max_video_seconds)

    def prepare(self, progress: ProgressFn | None = None) -> PrepareReport:
        """Load encoders, extract (or read cached) features, build the model and index. Idempotent.

        While it runs (in any thread), requests that need the model raise :class:`NotReadyError` with
        the progress instead of waiting or preparing a second time; :attr:`status` reports it too.
        """
        start = time.perf_counter()
        self._set_status("loading the encoders", started_at=time.monotonic())

        def track(fraction: float, stage: str) -> None:
            self._set_status(stage, fraction)
            if progress is not None:
                progress(fraction, stage)

        try:
            with self._lock:
                text_encoder, image_encoder = self.text_encoder, self.image_encoder
                # Audio and video encoders only for a catalog with such media.
                audio_encoder = self.audio_encoder if catalog_has_audio(self.catalog) else None
                video_encoder = self.video_encoder if catalog_has_video(self.catalog) else None
                features = extract_catalog_features(
                    self.catalog,
                    text_encoder,
                    image_encoder,
                    self.config.cache_dir,
                    keep_regions=self.config.cache_feature_maps,
                    progress=track,
                    max_pixels=self.config.limits.max_image_pixels,
                    audio_encoder=audio_encoder,
                    video_encoder=video_encoder,
                    media_limits=self.media_limits if (audio_encoder or video_encoder) else None,
                )
                self._set_status("building the index")
                zeroshot = ZeroShotModel(features, self.config.zeroshot)
                self._snapshot = self._snapshot_for(self.config.model_dir, features, zeroshot)
                model = self._snapshot.model
        except BaseException as exc:
            self._set_status("failed", error=str(exc) or type(exc).__name__)
            raise
        self._set_status("finishing start-up" if self._starting else "ready")
        report = PrepareReport(
            items=len(self.catalog),
            with_image=int(features.has_image.sum()),
            seconds=time.perf_counter() - start,
            stats=features.stats,
            model_version=model.version,
            device=str(self.device),
            with_audio=int(features.audio.present.sum()) if features.audio is not None else 0,
            with_video=int(features.video.present.sum()) if features.video is not None else 0,
        )
        log.info("service ready: %d items (%d with image), model %s, %.1fs", report.items, report.with_image,
                 report.model_version, report.seconds)
        return report

    @property
    def ready(self) -> bool:
        """Prepared, and not inside :meth:`starting`: requests are served."""
        return self._snapshot is not None and not self._starting

    @property
    def status(self) -> PrepareStatus:
        return self._status

    def _set_status(self, stage: str, fraction: float = 0.0, *, started_at: float | None = None,
                    error: str | None = None) -> None:
        # One assignment of a frozen object: readers in other threads see the old status or the new one.
        started = started_at if started_at is not None else self._status.started_at
        self._status = PrepareStatus(items=len(self.catalog), stage=stage, fraction=fraction, started_at=started,
                                     error=error)

    @contextlib.contextmanager
    def starting(self) -> Iterator[None]:
        """Refuse requests (:class:`NotReadyError`) until the block ends, e.g. while the app prepares in the
        background and then serves the registry's active model. Inside, :meth:`prepare` and :meth:`load_model`
        work; the catalog (:meth:`search`, :meth:`item`) is available throughout. After an exception the
        service stays closed (status "failed"): the app stops."""
        self._starting = True
        try:
            yield
        except BaseException as exc:
            if self._status.stage != "failed":
                self._set_status("failed", error=str(exc) or type(exc).__name__)
            raise
        self._starting = False
        self._set_status("ready")

    def _not_ready(self) -> NotReadyError:
        status = self._status
        if status.stage == "failed":
            return NotReadyError(f"the studio could not prepare the catalog ({status.error}); see the server log")
        return NotReadyError(f"the studio is still preparing the catalog ({status.describe()}); "
                             "try again in a few seconds")

    def _state(self) -> _Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            if self._starting or self._status.stage not in ("waiting", "ready", "failed"):
                raise self._not_ready()  # another thread is preparing: say how far, do not prepare twice
            self.prepare()  # first use without an explicit prepare (scripts, tests)
            snapshot = self._snapshot
        assert snapshot is not None
        return snapshot

    def _serving(self) -> _Snapshot:
        """The snapshot a request is served from; refused with the progress while :meth:`starting` runs."""
        if self._starting:
            raise self._not_ready()
        return self._state()

    @property
    def model_version(self) -> str:
        return self._state().model.version

    @property
    def zeroshot_model(self) -> ZeroShotModel:
        """The zero-shot model (read-only use: evaluation and training read its vectors)."""
        return self._state().zeroshot

    @property
    def active_model(self) -> ServingModel:
        """The model requests are served from now (read-only use)."""
        return self._state().model

    @property
    def model_kind(self) -> str:
        """``zeroshot`` or ``multimodal`` (a fine-tuned checkpoint)."""
        return self._state().model.kind

    def load_model(self, folder: Path | None) -> str:
        """Serve the checkpoint in ``folder`` (None = back to zero-shot) without a restart.

        The new model and index are built aside and swapped in one assignment: requests already
        running finish on the snapshot they started with. Returns the new model version.
        """
        state = self._state()
        snapshot = self._snapshot_for(folder, state.features, state.zeroshot)  # built aside, outside the lock
        with self._lock:
            self._snapshot = snapshot
        log.info("now serving %s", snapshot.model.version)
        return snapshot.model.version

    def _snapshot_for(self, folder: Path | None, features: CatalogFeatures, zeroshot: ZeroShotModel) -> _Snapshot:
        """Model + index for the checkpoint in ``folder`` (None = the zero-shot model)."""
        model: ServingModel = zeroshot
        if folder is not None:
            model = load_model(Path(folder), self.catalog, features, zeroshot=zeroshot, text_encoder=self.text_encoder,
                               image_encoder=self.image_encoder, cache_dir=self.config.cache_dir,
                               max_pixels=self.config.limits.max_image_pixels)
        # Exact for small catalogs, FAISS above IndexConfig.faiss_threshold (cached beside the features).
        index = build_index(model.item_vectors, self.config.index, self.config.cache_dir)
        return _Snapshot(model=model, index=index, features=features, zeroshot=zeroshot,
                         folder=Path(folder).resolve() if folder is not None else None)

    @property
    def features(self) -> CatalogFeatures:
        """The catalog's encoder outputs behind the active model."""
        return self._state().features

    # -- catalog ----------------------------------------------------------------------------------
    def has_item(self, item_id: str) -> bool:
        return item_id in self.catalog

    def item(self, item_id: str) -> Item:
        return self.catalog.get(item_id)

    def search(self, query: str = "", genre: str | None = None, limit: int | None = None) -> list[Item]:
        if len(query) > self.config.limits.max_text_chars:
            raise InvalidInputError(f"search text is {len(query):,} characters; the limit is {self.config.limits.max_text_chars:,}")
        if genre and genre not in self.catalog.genres():
            raise InvalidInputError(f"unknown genre {genre!r}; the catalog's genres are: {', '.join(self.catalog.genres())}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise InvalidInputError(f"limit is {limit!r}; give a whole number of 1 or more")
        return self.catalog.search(query, genre, limit)

    def genres(self) -> list[str]:
        return self.catalog.genres()

    # -- recommendations --------------------------------------------------------------------------
    def _check_k(self, k: int) -> int:
        if isinstance(k, bool) or not isinstance(k, int):
            raise InvalidInputError(f"k must be a whole number; got {k!r}")
        if not 1 <= k <= self.config.limits.max_k:
            raise InvalidInputError(f"k is {k}; allowed 1..{self.config.limits.max_k}")
        return k

    def clean_liked(self, liked_ids: Sequence[str] | None) -> list[str]:
        """Validated, de-duplicated liked ids (order kept). Raises on empty, too many or unknown ids."""
        if liked_ids is None or isinstance(liked_ids, str):
            raise InvalidInputError("liked_ids must be a list of item ids")
        ids = list(dict.fromkeys(str(i).strip() for i in liked_ids if str(i).strip()))
        if not ids:
            raise EmptyProfileError()
        if len(ids) > self.config.limits.max_liked:
            raise InvalidInputError(f"{len(ids)} liked items; the limit is {self.config.limits.max_liked}")
        self.catalog.check_ids(ids)
        return ids

    def clean_disliked(self, disliked_ids: Sequence[str] | None, liked: Sequence[str]) -> list[str]:
        """Validated, de-duplicated disliked ids (may be empty); an item cannot be liked and disliked at once."""
        if disliked_ids is None:
            return []
        if isinstance(disliked_ids, str):
            raise InvalidInputError("disliked_ids must be a list of item ids")
        ids = list(dict.fromkeys(str(i).strip() for i in disliked_ids if str(i).strip()))
        if len(ids) > self.config.limits.max_liked:
            raise InvalidInputError(f"{len(ids)} disliked items; the limit is {self.config.limits.max_liked}")
        both = [i for i in ids if i in set(liked)]
        if both:
            raise InvalidInputError(f"{', '.join(both[:5])} cannot be both liked and disliked; remove it from one list")
        self.catalog.check_ids(ids)
        return ids

    def recommend(self, liked_ids: Sequence[str], k: int = 10, diversity: float = 0.0,
                  disliked_ids: Sequence[str] | None = None) -> list[Recommendation]:
        """Top-``k`` catalog items for someone who likes ``liked_ids`` (which are never returned).

        ``diversity`` in [0, 1] re-ranks with maximal marginal relevance over the fused item vectors:
        0 = plain ranking by score, higher = fewer near-duplicates in the list. ``disliked_ids`` are never
        returned either, and push their neighbours down (the model's ``dislike_weight``).
        """
        k = self._check_k(k)
        diversity = self._check_diversity(diversity)
        ids = self.clean_liked(liked_ids)
        indices = self.catalog.check_ids(ids)
        disliked = self.catalog.check_ids(self.clean_disliked(disliked_ids, ids))
        state = self._serving()
        query = state.model.profile(indices, disliked)
        return self._results(state, query, k, exclude=indices + disliked, diversity=diversity)

    def recommend_with(self, folder: Path | None, liked_ids: Sequence[str], k: int = 10) -> ModelRecommendations:
        """Top-``k`` items for ``liked_ids`` from the checkpoint in ``folder`` (None = the zero-shot model),
        served or not, without changing what requests are served from.

        The active model answers itself; any other is loaded aside (model + index, as :meth:`load_model`
        would build them) and kept until another one is asked for: one at a time, since each holds a copy of
        the catalog's vectors.
        """
        k = self._check_k(k)
        indices = self.catalog.check_ids(self.clean_liked(liked_ids))
        state = self._serving()
        wanted = Path(folder).resolve() if folder is not None else None
        snapshot = state if state.folder == wanted else self._aside_for(wanted, state)
        query = snapshot.model.profile(indices)
        items = self._results(snapshot, query, k, exclude=indices)
        return ModelRecommendations(model_version=snapshot.model.version, model_kind=snapshot.model.kind,
                                    items=tuple(items), active=snapshot is state)

    def _aside_for(self, folder: Path | None, state: _Snapshot) -> _Snapshot:
        with self._aside_lock:  # two comparisons at once load the model once
            aside = self._aside
            if aside is None or aside.folder != folder or aside.features is not state.features:
                self._aside = None  # let the old one go before the new one is built
                aside = self._snapshot_for(folder, state.features, state.zeroshot)
                self._aside = aside
                log.info("loaded %s aside for a comparison", aside.model.version)
            return aside

    def similar(self, item_id: str, k: int = 10) -> list[Recommendation]:
        """Top-``k`` items like ``item_id`` (itself excluded): the recommendations for a one-item profile."""
        return self.recommend([item_id], k)

    @staticmethod
    def _check_diversity(diversity: float) -> float:
        if isinstance(diversity, bool) or not isinstance(diversity, (int, float)) or not 0.0 <= diversity <= 1.0:
            raise InvalidInputError(f"diversity is {diversity!r}; allowed 0..1 (0 = no re-ranking)")
        return float(diversity)

    def recommend_for_upload(
        self, *, image: str | Path | bytes | None, title: str = "", description: str = "", k: int = 10,
        audio: str | Path | bytes | None = None, video: str | Path | bytes | None = None,
    ) -> list[Recommendation]:
        """Catalog items most similar to a new item given by any of an image, a text, an audio clip and a video."""
        k = self._check_k(k)
        upload = self._check_upload(image, title, description, audio=audio, video=video)
        state = self._serving()
        return self._results(state, self._upload_query(state, upload), k, exclude=[])

    def _check_upload(self, image: str | Path | bytes | None, title: str, description: str, *,
                      audio: str | Path | bytes | None = None, video: str | Path | bytes | None = None) -> "_Upload":
        """Validate an uploaded item (text limits, at least one part, safe media) and encode its audio/video."""
        limits = self.config.limits
        title, description = (title or "").strip(), (description or "").strip()
        if len(title) + len(description) > limits.max_text_chars:
            raise InvalidInputError(f"title + description is {len(title) + len(description):,} characters (title "
                                    f"{len(title):,}, description {len(description):,}); the limit is "
                                    f"{limits.max_text_chars:,} for both together")
        if image is None and audio is None and video is None and not title and not description:
            raise InvalidInputError("give an image, a title or a description, an audio clip or a video (any of "
                                    "them, or several) for the new item")
        pil = None
        if image is not None:
            pil = load_image(image, max_bytes=limits.max_upload_bytes, max_pixels=limits.max_image_pixels)
        audio_steps = video_steps = None
        frames: tuple = ()
        key = ""
        if audio is not None or video is not None:
            audio_steps, video_steps, frames, key = self._encode_upload_media(audio, video)
            if not (title or description or pil is not None) and audio_steps is None and video_steps is None:
                raise InvalidInputError(self._no_media_message(audio is not None, video is not None))
        return _Upload(title=title, description=description, image=pil, audio=audio_steps, video=video_steps,
                       frames=frames, key=key)

    def _no_media_message(self, audio: bool, video: bool) -> str:
        what = " and ".join(w for w, given in (("audio", audio), ("video", video)) if given)
        return (f"this catalog ({self.catalog.name}) has no {what}, so an uploaded clip matches nothing in it; "
                "add a title, a description or an image, or serve a catalog with audio and video (--catalog media)")

    def _encode_upload_media(self, audio, video) -> tuple[TimeSteps | None, TimeSteps | None, tuple, str]:
        """Decode (with the upload limits) and encode an upload's audio and video. Media of a kind the catalog
        does not have is still checked, so a bad file is refused the same way everywhere, but not encoded."""
        from dataclasses import replace

        limits = replace(self.media_limits, max_bytes=self.config.limits.max_upload_bytes)
        features = self._serving().features
        audio_steps = video_steps = None
        frames: tuple = ()
        digest = hashlib.sha256()
        if video is not None:
            decoded = self.video_encoder.decode(video, limits=limits, name=_upload_name(video))
            frames = decoded.frames
            digest.update(b"video" + b"".join(f.tobytes() for f in frames))
            if features.video is not None:
                video_steps = self.video_encoder.encode(decoded)
        if features.audio is not None and (audio is not None or video is not None):
            source = audio if audio is not None else video
            try:
                clip = self.audio_encoder.decode(source, limits=limits, name=_upload_name(source))
            except InvalidInputError:
                if audio is not None:
                    raise
                clip = None  # a silent video: no soundtrack to read
            if clip is not None:
                digest.update(b"audio" + clip.samples.tobytes())
                audio_steps = self.audio_encoder.encode(clip.samples, clip.sample_rate)
        elif audio is not None:
            from recsys_core.data.media import decode_audio

            clip = decode_audio(audio, limits=limits, name=_upload_name(audio), max_seconds=1.0)  # checked only
            digest.update(b"audio" + clip.samples.tobytes())
        return audio_steps, video_steps, frames, digest.hexdigest()

    def _upload_query(self, state: "_Snapshot", upload: "_Upload") -> torch.Tensor:
        """The query for an uploaded item (any modality may be absent)."""
        item = Item(item_id="upload", title=upload.title, description=upload.description)
        has_text = bool(upload.title or upload.description)
        text_vec = self.text_encoder.encode([item.text])[0] if has_text else None
        return state.model.upload_query(item, text_vec, upload.image, text_encoder=self.text_encoder,
                                        image_encoder=self.image_encoder,
                                        audio_vector=upload.audio.pooled if upload.audio is not None else None,
                                        video_vector=upload.video.pooled if upload.video is not None else None)

    # -- explanations -----------------------------------------------------------------------------
    @property
    def explainer(self) -> Explainer:
        with self._lock:
            if self._explainer is None:
                self._explainer = Explainer(self.text_encoder, self.image_encoder, self.explain_config)
            return self._explainer

    def _check_method(self, method: str) -> str:
        if method not in METHODS:
            raise InvalidInputError(f"method {method!r} is not allowed; use one of: {', '.join(METHODS)}")
        return method

    def _item_image(self, item: Item):
        if item.image is None:
            return None
        try:
            return load_image(item.image, max_bytes=1 << 30, max_pixels=self.config.limits.max_image_pixels)
        except InvalidInputError:
            return None  # served without an image, so explained without one

    def explain(self, liked_ids: Sequence[str], item_id: str, method: str = "fast",
                disliked_ids: Sequence[str] | None = None) -> Explanation:
        """Why ``item_id`` scores as it does for someone who likes ``liked_ids`` (and disliked ``disliked_ids``),
        see recsys_core.serving.explain."""
        method = self._check_method(method)
        ids = self.clean_liked(liked_ids)
        indices = self.catalog.check_ids(ids)
        dis_ids = self.clean_disliked(disliked_ids, ids)
        disliked = self.catalog.check_ids(dis_ids)
        target = self.catalog.index_of(str(item_id))
        state = self._serving()
        key = (state.model.version, tuple(ids), tuple(dis_ids), str(item_id), method)
        hit = self.explainer.cached(key)
        if hit is not None:
            return hit
        query = state.model.profile(indices, disliked)
        history = self._history(state.model, ids, indices, dis_ids, disliked, target)
        explanation = self._explain_item(state, query, target, method, history=history)
        self.explainer.remember(key, explanation)
        return explanation

    @staticmethod
    def _history(model: ServingModel, ids: list[str], indices: list[int], dis_ids: list[str], disliked: list[int],
                 target: int) -> tuple[HistoryShare, ...]:
        """Each liked item's part of the score (and, with dislikes, what each disliked item took away)."""
        rows: list[tuple[str, float, float, float, bool]] = []
        for names, where, sign in ((ids, indices, 1.0), (dis_ids, disliked, -model.dislike_weight)):
            if not where:
                continue
            total = model.history_contributions(where, target)
            collab = model.collaborative_contributions(where, target)
            weights = model.item_weights(where, target)
            rows += [(i, sign * float(c), sign * float(b), float(w), sign < 0)
                     for i, c, b, w in zip(names, total, collab, weights)]
        scale = sum(abs(r[1]) for r in rows) or 1.0
        return tuple(HistoryShare(item_id=i, contribution=c, share=c / scale, collaborative=b, item_weight=w,
                                  disliked=d) for i, c, b, w, d in rows)

    def explain_upload(self, *, image: str | Path | bytes | None, title: str = "", description: str = "",
                       item_id: str, method: str = "fast", audio: str | Path | bytes | None = None,
                       video: str | Path | bytes | None = None) -> Explanation:
        """Why catalog item ``item_id`` matched an uploaded item; also maps the matching upload regions and which
        seconds / keyframes of an uploaded clip matched."""
        method = self._check_method(method)
        target = self.catalog.index_of(str(item_id))
        upload = self._check_upload(image, title, description, audio=audio, video=video)
        state = self._serving()
        image_key = hashlib.sha256(upload.image.tobytes()).hexdigest() if upload.image is not None else ""
        text_key = text_hash(upload.title + "\x00" + upload.description)
        key = (state.model.version, "upload", image_key, text_key, upload.key, str(item_id), method)
        hit = self.explainer.cached(key)
        if hit is not None:
            return hit
        explanation = self._explain_item(state, self._upload_query(state, upload), target, method, history=(),
                                         upload_image=upload.image, upload=upload)
        self.explainer.remember(key, explanation)
        return explanation

    def explanation_inputs(self, liked_ids: Sequence[str], item_id: str) -> "ExplanationInputs":
        """What an explanation of ``item_id`` for ``liked_ids`` attributes through (used by benchmarks too)."""
        indices = self.catalog.check_ids(self.clean_liked(liked_ids))
        state = self._serving()
        return self._inputs(state, state.model.profile(indices), self.catalog.index_of(str(item_id)))

    def _inputs(self, state: _Snapshot, query: torch.Tensor, target: int) -> "ExplanationInputs":
        model = state.model
        item = self.catalog.items[target]
        parts = model.modality_scores(query, torch.tensor([target]))
        text_part, image_part = float(parts.text[0]), float(parts.image[0])
        collab_part = float(parts.collaborative[0]) if parts.collaborative is not None else 0.0
        audio_part = float(parts.audio[0]) if parts.audio is not None else 0.0
        video_part = float(parts.video[0]) if parts.video is not None else 0.0
        has_image = bool(state.features.has_image[target])
        # Each attribution targets the full score of the item.
        text_fn, image_fn = model.score_fns(query, target)
        return ExplanationInputs(
            item=item,
            text=item.text,
            image=self._item_image(item) if has_image and image_part != 0.0 else None,
            text_part=text_part,
            image_part=image_part,
            collaborative_part=collab_part,
            text_score_fn=text_fn,
            image_score_fn=image_fn,
            audio_part=audio_part,
            video_part=video_part,
        )

    def _explain_item(self, state: _Snapshot, query: torch.Tensor, target: int, method: str, *,
                      history: tuple[HistoryShare, ...], upload_image=None, upload: "_Upload | None" = None) -> Explanation:
        model = state.model
        inputs = self._inputs(state, query, target)
        # The heatmaps show the regions that moved the score the way the image part did.
        sign = -1.0 if inputs.image_part < 0 else 1.0
        item_split, upload_split = model.region_split_fns(query, target)
        text, heatmap, image_method, seconds = self.explainer.explain_parts(
            text=inputs.text, image=inputs.image, text_score_fn=inputs.text_score_fn,
            image_score_fn=inputs.image_score_fn, method=method, image_sign=sign,  # type: ignore[arg-type]
            region_fn=item_split,
        )
        query_heatmap = None
        score = float(model.item_vectors[target] @ query.to(model.item_vectors.dtype))
        upload_score_fn = model.upload_image_score_fn(target, score - inputs.image_part - inputs.collaborative_part) \
            if upload_image is not None else None
        if upload_score_fn is not None and bool(state.features.has_image[target]):
            # Attribute over the upload's pixels (only where the score is symmetric in the two items).
            _, query_heatmap, _, more = self.explainer.explain_parts(
                text=None, image=upload_image, text_score_fn=inputs.text_score_fn, image_score_fn=upload_score_fn,
                method=method, image_sign=sign, region_fn=upload_split,  # type: ignore[arg-type]
            )
            seconds += more
        started = time.perf_counter()
        steps = self._explain_steps(state, query, target, method, upload)
        seconds += time.perf_counter() - started
        return Explanation(
            item_id=inputs.item.item_id,
            method=method,
            model_version=model.version,
            score=score,
            text_score=inputs.text_part,
            image_score=inputs.image_part,
            text=text,
            image_heatmap=heatmap,
            image_method=image_method,
            query_heatmap=query_heatmap,
            modality_share=modality_share({"text": inputs.text_part, "image": inputs.image_part,
                                           **{name: part for name, part in (("audio", inputs.audio_part),
                                                                            ("video", inputs.video_part))
                                              if name in getattr(state.zeroshot, "modalities", ())},
                                           **({"collaborative": inputs.collaborative_part} if model.mix.get(
                                               "collaborative") else {})}),
            history=history,
            seconds=seconds,
            image_direction="lowered" if sign < 0 else "raised",
            model_kind=model.kind,
            collaborative_score=inputs.collaborative_part,
            mix=dict(model.mix),
            audio_score=inputs.audio_part,
            video_score=inputs.video_part,
            **steps,
        )

    def _explain_steps(self, state: _Snapshot, query: torch.Tensor, target: int, method: str,
                       upload: "_Upload | None") -> dict:
        """Attributions over the item's audio segments and video keyframes (and an upload's), adding up to each
        part; the top keyframe gets a region heatmap. Keys are :class:`Explanation` fields."""
        model = state.model
        samples = self.explain_config.fast_steps if method == "fast" else self.explain_config.thorough_steps
        out: dict = {}
        deltas = []
        for name in ("audio", "video"):
            sides = [(f"{name}_segments" if name == "audio" else "video_frames", None)]
            if upload is not None and getattr(upload, name) is not None:
                sides.append((f"upload_{name}_segments" if name == "audio" else "upload_video_frames", getattr(upload, name)))
            for field_name, upload_steps in sides:
                found = model.sequence_score_fn(query, target, name, upload_steps)
                if found is None:
                    continue
                fn, steps = found
                attr = attribute_steps(fn, len(steps), samples=samples)
                deltas.append(abs(attr.delta))
                if name == "audio":
                    out[field_name] = tuple(SegmentAttribution(float(a), float(b), float(v)) for a, b, v in
                                            zip(steps.starts_s.tolist(), steps.ends_s.tolist(), attr.values))
                else:
                    frames = upload.frames if upload_steps is not None and upload is not None else None
                    out[field_name] = self._frame_attributions(state, query, target, steps, attr.values, frames,
                                                               upload_steps is not None)
        out["steps_delta"] = max(deltas, default=0.0)
        return out

    def _frame_attributions(self, state: _Snapshot, query: torch.Tensor, target: int, steps: TimeSteps,
                            values, frames, is_upload: bool) -> tuple[FrameAttribution, ...]:
        """One attribution per keyframe; inside the keyframe that moved the score most, the regions (as for
        images: the zero-shot split of the video part over the CNN's 7x7 map)."""
        import numpy as np

        top = int(np.argmax(np.abs(values)))
        heatmap = None
        zs = state.zeroshot
        try:
            if frames is None:
                item = self.catalog.items[target]
                frames = self.video_encoder.decode(item.video, limits=self.media_limits).frames if item.video else ()
            if len(frames) == len(steps) and values[top] != 0:  # no heatmap for a frame that moved nothing
                direction = zs.item_vectors[target] if is_upload else query[: zs.dim]
                sign = -1.0 if values[top] < 0 else 1.0
                heatmap, _ = self.explainer.explain_frame(frames[top], zs.region_split(direction, "video"), sign)
        except InvalidInputError as exc:  # the clip changed or broke since its features were cached
            log.warning("no keyframe heatmap for %s: %s", self.catalog.items[target].item_id, exc)
        return tuple(FrameAttribution(float(t), float(v), heatmap if i == top else None)
                     for i, (t, v) in enumerate(zip(steps.starts_s.tolist(), values)))

    def _results(self, state: _Snapshot, query: torch.Tensor, k: int, exclude: list[int],
                 diversity: float = 0.0) -> list[Recommendation]:
        if diversity > 0.0:
            found = mmr_search(state.index, state.model.diversity_vectors, query, k, exclude, diversity)
        else:
            found = state.index.search(query, k, exclude=exclude)
        parts = state.model.modality_scores(query, found.indices)
        ranks = getattr(found, "score_ranks", None)  # RerankedResult (diversity > 0) only
        gains = getattr(found, "gains", None)
        out = []
        for rank, (idx, score) in enumerate(zip(found.indices.tolist(), found.scores.tolist()), start=1):
            item = self.catalog.items[idx]
            out.append(
                Recommendation(
                    item_id=item.item_id,
                    title=item.title,
                    score=float(score),
                    rank=rank,
                    text_score=float(parts.text[rank - 1]),
                    image_score=float(parts.image[rank - 1]),
                    image=item.image,
                    genres=item.genres,
                    score_rank=ranks[rank - 1] if ranks is not None else None,
                    diversity_gain=gains[rank - 1] if gains is not None else None,
                    collaborative_score=float(parts.collaborative[rank - 1]) if parts.collaborative is not None else 0.0,
                    audio_score=float(parts.audio[rank - 1]) if parts.audio is not None else 0.0,
                    video_score=float(parts.video[rank - 1]) if parts.video is not None else 0.0,
                    has_audio=item.audio_source is not None,
                    has_video=item.video is not None,
                )
            )
        return out
