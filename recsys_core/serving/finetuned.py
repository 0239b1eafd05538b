"""Serve a fine-tuned fusion checkpoint behind the same interface as the zero-shot model.

The service asks its active model for: index vectors (``item_vectors``, ranked by dot product with
a query), a query for a set of liked items (``profile``) or for an upload (``embed_upload``), the
text/image split of a score (``modality_scores``), score functions over the pooled encoder outputs
for Captum (``score_fns``) and per-liked-item contributions (``history_contributions``).

The fusion score is ``s * cos(user, item) + bias(item)``. It is written as one dot product, so the
same exact/FAISS index serves it: item rows are ``[s * unit(item), bias]`` and a query is
``[unit(user), 1]``.

Modality split: the fusion is not additive, so the text and image parts are the exact two-player
Shapley values of the score over {text, image} (item content with a modality removed), and they
sum to ``score - score(no content)``; the remainder is the ID/bias part.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from recsys_core.errors import CatalogError, InvalidInputError
from recsys_core.model import checkpoint
from recsys_core.model.fusion import FusionRecommender, ItemContent, ItemVectors
from recsys_core.serving.protocol import ModalityScores, ScoreFn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadParts:
    """An uploaded item as the item tower reads it (any part may be missing)."""

    token_states: torch.Tensor | None  # [1, T, Dt]
    token_mask: torch.Tensor | None  # [1, T]
    text_pooled: torch.Tensor | None  # [Dt]
    regions: torch.Tensor | None  # [1, R, Di] pooled regions
    image_pooled: torch.Tensor | None  # [Di]


def _without(content: ItemContent, *, text: bool = False, image: bool = False) -> ItemContent:
    if text:
        content = replace(content, text_mask=torch.zeros_like(content.text_mask), text_pooled=None)
    if image:
        content = replace(content, has_image=torch.zeros_like(content.has_image))
    return content


class FusionServing:
    """A :class:`recsys_core.serving.protocol.ServingModel` over a fine-tuned fusion checkpoint."""

    kind = "multimodal"
    dislike_weight = 0.5  # as ZeroShotConfig.dislike_weight

    def __init__(self, model: FusionRecommender, content: ItemContent, known: torch.Tensor, version: str,
                 source: Path | None = None, *, split_modalities: bool = True) -> None:
        self.model = model.eval()
        self.config = model.config
        self.content = content
        self.known = known.bool()
        self.version = version
        self.source = source
        n = content.text_tokens.shape[0]
        device = content.text_tokens.device
        self.known = self.known.to(device)
        self._index = torch.arange(n, device=device) if model.items.ids is not None else None
        self.scale = float(model.log_scale.detach().exp())
        with torch.no_grad():
            self.items = self._encode(content)
            # Rows for the modality split: the same items with text, image or both removed.
            self._rows = {"both": self._rows_of(self.items)}
            if split_modalities:  # three more passes over the catalog; scoring-only uses skip them
                self._rows.update({
                    "text": self._rows_of(self._encode(_without(content, image=True))),
                    "image": self._rows_of(self._encode(_without(content, text=True))),
                    "none": self._rows_of(self._encode(_without(content, text=True, image=True))),
                })
        self.item_vectors = self._rows["both"]
        self.diversity_vectors = F.normalize(self.items.vectors, dim=-1)  # similarity for MMR re-ranking
        self.dim = self.item_vectors.shape[1]

    def _encode(self, content: ItemContent) -> ItemVectors:
        return self.model.item_vectors(content, self._index, self.known)

    def _rows_of(self, items: ItemVectors) -> torch.Tensor:
        return torch.cat([self.scale * F.normalize(items.vectors, dim=-1), items.bias[:, None]], dim=1).contiguous()

    # -- queries --------------------------------------------------------------------------------
    def _user(self, history_vectors: torch.Tensor) -> torch.Tensor:
        """``history_vectors`` [L, d], most recent first -> query [d + 1]."""
        history_vectors = history_vectors[: self.config.history_len]
        mask = torch.ones(1, history_vectors.shape[0], dtype=torch.bool, device=history_vectors.device)
        user = self.model.users(history_vectors[None], mask)[0]
        return torch.cat([F.normalize(user, dim=-1), user.new_ones(1)])

    @torch.no_grad()
    def profile(self, indices: list[int], disliked: Sequence[int] = ()) -> torch.Tensor:
        """Query for someone who liked ``indices`` (in the order given; the last is the most recent); the
        disliked items' user vector is subtracted at ``dislike_weight`` (their neighbours go down)."""
        query = self._user(self.items.vectors[list(reversed(indices))])
        if len(disliked):
            away = self._user(self.items.vectors[list(reversed(list(disliked)))])
            query = query - self.dislike_weight * torch.cat([away[:-1], away.new_zeros(1)])
        return query

    def upload_parts(self, text_encoder, image_encoder, token_text: str | None, text_vec: torch.Tensor | None,
                     image) -> UploadParts:
        """Encode an upload the way the catalog's content was encoded (states below a trained top, if any)."""
        from recsys_core.model.content import pool_regions, token_states
        from recsys_core.encoders.tops import lower_image_maps

        cfg = self.config
        tokens = mask = regions = image_vec = None
        if token_text is not None:
            tokens, mask = token_states(text_encoder, [token_text], cfg.max_text_tokens, below_top=cfg.text_top_layers)
        if image is not None:
            if cfg.image_top:
                regions = lower_image_maps(image_encoder, image_encoder.preprocess([image])).float().cpu()
            else:
                encoded = image_encoder.encode([image], keep_regions=True)
                image_vec, regions = encoded.pooled[0], pool_regions(encoded.regions, cfg.image_grid)
        return UploadParts(tokens, mask, text_vec, regions, image_vec)

    @torch.no_grad()
    def embed_upload(self, parts: UploadParts) -> torch.Tensor:
        """Query for someone who likes the uploaded item: the user tower over a one-item history."""
        return self._user(self.upload_vector(parts)[None])

    def upload_vector(self, parts: UploadParts) -> torch.Tensor:
        """The item tower's vector of an upload (no ID part: the item is new)."""
        cfg = self.config
        has_image = parts.regions is not None
        tokens = parts.token_states if parts.token_states is not None else torch.zeros(1, 1, cfg.text_dim)
        mask = parts.token_mask if parts.token_mask is not None else torch.zeros(1, tokens.shape[1], dtype=torch.bool)
        # A missing image: zeros shaped like the catalog's regions, masked out by has_image=False.
        regions = parts.regions if has_image else torch.zeros_like(self.content.regions[:1], dtype=torch.float32)
        text_pooled = None
        if parts.text_pooled is not None and self.content.text_pooled is not None:
            text_pooled = parts.text_pooled.reshape(1, -1)
        image_pooled = None  # with a trained CNN head the tower pools the head's own output
        if not cfg.image_top and self.content.image_pooled is not None:
            image_pooled = parts.image_pooled.reshape(1, -1) if parts.image_pooled is not None else torch.zeros(1, cfg.image_dim)
        content = ItemContent(text_tokens=tokens, text_mask=mask, regions=regions, has_image=torch.tensor([has_image]),
                              text_pooled=text_pooled, image_pooled=image_pooled)
        return self.model.items(content).vectors[0]

    def upload_query(self, item, text_vector: torch.Tensor | None, image, *, text_encoder,
                     image_encoder, audio_vector=None, video_vector=None) -> torch.Tensor:
        """The two-tower model reads text and images only: an upload's audio or video is not part of its query."""
        from recsys_core.model.content import token_text

        if text_vector is None and image is None:
            raise InvalidInputError("the served model (the two-tower fusion ablation) reads text and images only; "
                                    "give the upload a title, a description or an image")

        parts = self.upload_parts(text_encoder, image_encoder, token_text(item) if text_vector is not None else None,
                                  text_vector, image)
        return self.embed_upload(parts)

    # -- explanation pieces -----------------------------------------------------------------------
    def modality_scores(self, query: torch.Tensor, indices: torch.Tensor) -> ModalityScores:
        f = {name: rows[indices] @ query for name, rows in self._rows.items()}
        text = 0.5 * ((f["text"] - f["none"]) + (f["both"] - f["image"]))
        image = 0.5 * ((f["image"] - f["none"]) + (f["both"] - f["text"]))
        return ModalityScores(text=text, image=image)

    def score_fns(self, query: torch.Tensor, target: int) -> tuple[ScoreFn, ScoreFn]:
        """Full score of item ``target`` as a function of its pooled text / pooled image vector.

        The other inputs of the item tower (token states, regions) are held at the item's own
        values, so the attributions explain the path through the whole-item summaries.
        """
        one = self.content.slice(slice(target, target + 1))
        index = None if self._index is None else torch.tensor([target])
        known = self.known[target : target + 1]

        def score(content: ItemContent) -> torch.Tensor:
            b = content.text_tokens.shape[0]
            items = self.model.items(content, None if index is None else index.expand(b), known.expand(b))
            rows = self._rows_of(items)
            return rows @ query.to(rows.dtype)

        def expand(b: int) -> ItemContent:
            return one.expand(b)

        def text_fn(pooled: torch.Tensor) -> torch.Tensor:
            return score(replace(expand(pooled.shape[0]), text_pooled=pooled))

        def image_fn(pooled: torch.Tensor) -> torch.Tensor:
            return score(replace(expand(pooled.shape[0]), image_pooled=pooled))

        return text_fn, image_fn

    def upload_image_score_fn(self, target: int, text_part: float) -> None:
        """None: the two towers differ, so the score is not symmetric in the catalog item and the upload."""
        return None

    def sequence_score_fn(self, query: torch.Tensor, target: int, name: str, upload_steps=None) -> None:
        """None: the two-tower model has no audio or video part."""
        return None

    def region_split_fns(self, query: torch.Tensor, target: int) -> tuple[None, None]:
        """None: the item tower is not linear in the regions; the explainer falls back to Grad-CAM."""
        return None, None

    @torch.no_grad()
    def history_contributions(self, liked: list[int], item: int) -> torch.Tensor:
        """Leave-one-out: how much the item's score drops when each liked item is left out.

        Unlike the zero-shot split these do not sum to the score (attention pooling is not
        additive); they rank which liked items pulled the recommendation in.
        """
        full = float(self.profile(liked) @ self.item_vectors[item])
        if len(liked) == 1:
            return torch.tensor([full])
        out = [full - float(self.profile(liked[:i] + liked[i + 1 :]) @ self.item_vectors[item]) for i in range(len(liked))]
        return torch.tensor(out)

    def collaborative_contributions(self, liked: list[int], item: int) -> torch.Tensor:
        return torch.zeros(len(liked))

    def item_weights(self, liked: list[int], item: int) -> torch.Tensor:
        return torch.zeros(len(liked))

    @property
    def mix(self) -> dict[str, float]:
        return {}


def load_serving(folder: Path, catalog, features, text_encoder, image_encoder, cache_dir: Path | None,
                 max_pixels: int = 40_000_000) -> FusionServing:
    """Load a checkpoint folder for ``catalog``. Item IDs are used only when the catalog is the one it trained on."""
    from recsys_core.model.content import build_content, media_dims

    folder = Path(folder)
    missing = checkpoint.missing_files(folder)
    if missing:
        raise CatalogError(f"{folder} is not a model checkpoint: {missing[0]} is missing "
                           "(expected a folder written by python -m recsys_core.train)")
    try:
        model, config = checkpoint.load_checkpoint(folder, text_encoder, image_encoder)
    except (KeyError, RuntimeError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"checkpoint {folder} cannot be loaded by this version ({type(exc).__name__}: "
                           f"{str(exc)[:300]}); retrain it with python -m recsys_core.train") from exc
    fusion = model.config
    if fusion.text_dim != features.text.shape[1] or fusion.image_dim != features.image.shape[1]:
        raise CatalogError(f"checkpoint {folder} expects text/image widths {fusion.text_dim}/{fusion.image_dim}; "
                           f"the app's encoders give {features.text.shape[1]}/{features.image.shape[1]} "
                           f"(trained with {config.get('encoders')})")
    media = media_dims(features)
    if (fusion.audio_dim, fusion.video_dim) != (media["audio_dim"], media["video_dim"]):
        raise CatalogError(f"checkpoint {folder} was trained with audio/video widths {fusion.audio_dim}/"
                           f"{fusion.video_dim}; this catalog's features give {media['audio_dim']}/{media['video_dim']} "
                           "(0 = none): train it on this catalog")
    known = torch.zeros(len(catalog), dtype=torch.bool)
    saved = checkpoint.read_items(folder)
    if model.items.ids is not None and saved is not None:
        saved_known = saved.known_for(catalog.ids)
        if saved_known is not None:
            known = saved_known
        else:
            log.warning("checkpoint %s was trained on another catalog: serving from content only (no item IDs)", folder)
    content = build_content(catalog, text_encoder, features.regions, features.has_image, fusion, cache_dir,
                            text_pooled=features.text, image_pooled=features.image, progress=False,
                            image_encoder=image_encoder if fusion.image_top else None, max_pixels=max_pixels,
                            audio=features.audio, video=features.video)
    return FusionServing(model, content, known, checkpoint.checkpoint_version(folder), source=folder)
