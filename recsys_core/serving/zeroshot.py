"""The zero-shot recommender: pretrained text and image vectors fused into one item vector.

Each modality is mean-centred over the catalog, then L2-normalised. Raw CNN and sentence vectors
all point roughly the same way (every cosine is high), so centring is what makes cosines
discriminative. The fused vector is ``[sqrt(w_t) * text, sqrt(w_i) * image]``, so the dot product
of a profile and an item is exactly ``w_t * cos_text + w_i * cos_image``. A missing image is a zero
block: after centring that is "an average image", so the item scores on its text, neither boosted
nor penalised.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from recsys_core.config import ZeroShotConfig
from recsys_core.encoders.features import CatalogFeatures
from recsys_core.serving.protocol import ModalityScores, RegionFn, ScoreFn


class ZeroShotModel:
    """A :class:`recsys_core.serving.protocol.ServingModel`."""

    kind = "zeroshot"

    def __init__(self, features: CatalogFeatures, config: ZeroShotConfig) -> None:
        self.config = config
        self.text_dim = features.text.shape[1]
        self.image_dim = features.image.shape[1]
        self.text_mean = features.text.mean(0)
        has = features.has_image
        self.image_mean = features.image[has].mean(0) if bool(has.any()) else torch.zeros(self.image_dim)
        self._wt = math.sqrt(config.text_weight)
        self._wi = math.sqrt(config.image_weight)
        text = self._text_part(features.text)
        image = self._image_part(features.image) * has.unsqueeze(1)
        self.item_vectors = torch.cat([text, image], dim=1).contiguous()
        self.diversity_vectors = self.item_vectors  # similarity for MMR re-ranking
        digest = hashlib.sha256(
            f"{features.text_key}|{features.image_key}|{config.to_json()}|{','.join(features.item_ids)}".encode()
        ).hexdigest()[:10]
        self.version = f"zeroshot-{digest}"

    @property
    def dim(self) -> int:
        return self.text_dim + self.image_dim

    def _text_part(self, text: torch.Tensor) -> torch.Tensor:
        return self._wt * F.normalize(text - self.text_mean, dim=-1)

    def _image_part(self, image: torch.Tensor) -> torch.Tensor:
        return self._wi * F.normalize(image - self.image_mean, dim=-1)

    def embed_new(self, text: torch.Tensor | None, image: torch.Tensor | None) -> torch.Tensor:
        """Fused vector of an item outside the catalog (an upload); either modality may be absent."""
        t = self._text_part(text) if text is not None else torch.zeros(self.text_dim)
        i = self._image_part(image) if image is not None else torch.zeros(self.image_dim)
        return torch.cat([t.reshape(-1), i.reshape(-1)])

    def upload_query(self, item, text_vector: torch.Tensor | None, image, *, text_encoder,
                     image_encoder) -> torch.Tensor:
        """The upload's own fused vector: similar items are the ones someone who likes it would like."""
        image_vector = None
        if image is not None:
            image_vector = image_encoder.encode([image], keep_regions=False).pooled[0]
        return self.embed_new(text_vector, image_vector)

    def profile(self, indices: list[int], disliked: Sequence[int] = ()) -> torch.Tensor:
        """The liked items' mean direction per modality, renormalised so each block keeps its weight;
        minus ``dislike_weight`` times the disliked items' own profile."""
        query = self._profile(indices)
        if len(disliked):
            query = query - self.config.dislike_weight * self._profile(list(disliked))
        return query

    def profiles(self, matrix) -> torch.Tensor:
        """:meth:`profile` of every row of a (sparse) users x items 0/1 matrix at once [rows, dim]; a row
        without items gives a zero query. Sums and means have the same direction, so this is exact."""
        import numpy as np

        out = []
        for block, weight in ((slice(0, self.text_dim), self._wt), (slice(self.text_dim, None), self._wi)):
            summed = torch.from_numpy(np.asarray(matrix @ self.item_vectors[:, block].numpy(), dtype=np.float32))
            norm = summed.norm(dim=1, keepdim=True)
            out.append(torch.where(norm > 0, weight * summed / norm.clamp_min(1e-12), torch.zeros_like(summed)))
        return torch.cat(out, dim=1)

    def _profile(self, indices: list[int]) -> torch.Tensor:
        liked = self.item_vectors[indices]
        t = liked[:, : self.text_dim].mean(0)
        i = liked[:, self.text_dim :].mean(0)
        t = self._wt * F.normalize(t, dim=0) if t.norm() > 0 else t
        # All liked items lacking images leave the image block at zero: images then don't count.
        i = self._wi * F.normalize(i, dim=0) if i.norm() > 0 else i
        return torch.cat([t, i])

    # -- differentiable pieces of the score (explanations attribute through these) ---------------
    def text_score(self, query: torch.Tensor, pooled_text: torch.Tensor) -> torch.Tensor:
        """Text part of the score of items with raw text vectors ``pooled_text`` [B, Dt] -> [B]."""
        return self._text_part(pooled_text) @ query[: self.text_dim].to(pooled_text.dtype)

    def image_score(self, query: torch.Tensor, pooled_image: torch.Tensor) -> torch.Tensor:
        """Image part of the score of items with raw image vectors ``pooled_image`` [B, Di] -> [B]."""
        return self._image_part(pooled_image) @ query[self.text_dim :].to(pooled_image.dtype)

    def score_fns(self, query: torch.Tensor, target: int):
        """Full score of item ``target`` as functions of its pooled text / pooled image vectors.

        The score is additive over modalities, so each function is its modality's part plus the
        other part held constant.
        """
        parts = self.modality_scores(query, torch.tensor([target]))
        text_part, image_part = float(parts.text[0]), float(parts.image[0])
        return (lambda pooled: self.text_score(query, pooled) + image_part,
                lambda pooled: self.image_score(query, pooled) + text_part)

    def upload_image_score_fn(self, target: int, text_part: float) -> ScoreFn:
        """Similarity is symmetric: fix the catalog item and score the upload's pooled image vector."""
        item_vector = self.item_vectors[target]
        return lambda pooled: self.image_score(item_vector, pooled) + text_part

    def region_split(self, direction: torch.Tensor) -> RegionFn:
        """The image part ``image_score(direction, mean of the regions)`` split exactly over the regions.

        The image part is ``sqrt(w_i) * d . (p - mu) / |p - mu|`` with ``p`` the mean of the final
        map's regions ``A_r``. It only depends on the direction of ``p - mu``, so its gradient is
        orthogonal to ``p - mu`` and gradient maps (Grad-CAM) add up to ``g . mu``, not to the part:
        their sign is unrelated to it, and after a ReLU they were often empty for a positive part.
        Holding the normaliser ``|p - mu|`` at its value makes the part linear in the regions, and
        region ``r`` gets ``sqrt(w_i) * d . (A_r - mu) / (R |p - mu|)``: its features compared with the
        catalog's average image, along the other side's image direction. These add up to the part.
        ``direction``: the other side's fused vector (the query for the item's image, the catalog
        item's vector for an upload's image).
        """
        d = direction[self.text_dim :]

        def split(regions: torch.Tensor) -> torch.Tensor:
            centred = regions.float() - self.image_mean.to(regions.device)[:, None, None]
            count = centred.shape[1] * centred.shape[2]
            norm = centred.mean(dim=(1, 2)).norm()
            if norm == 0:  # the average image itself: its image part is 0
                return torch.zeros(centred.shape[1:])
            return self._wi * torch.einsum("chw,c->hw", centred, d.to(centred)) / (count * norm)

        return split

    def region_split_fns(self, query: torch.Tensor, target: int) -> tuple[RegionFn, RegionFn]:
        """Exact region splits of item ``target``'s image part: over its own image, and (similarity is
        symmetric) over an upload's image when ``query`` is that upload's vector."""
        return self.region_split(query), self.region_split(self.item_vectors[target])

    def history_contributions(self, liked: list[int], item: int) -> torch.Tensor:
        """Exact split of ``score(profile(liked), item)`` over the liked items; sums to the score.

        profile_t = sqrt(w_t) * sum_l T_l / |sum_l T_l|, so profile_t . T_j = sum_l sqrt(w_t) T_l.T_j / |sum T_l|
        (same for images): each liked item's share is its own similarity to the item, scaled.
        """
        liked_vectors = self.item_vectors[liked]
        target = self.item_vectors[item]
        out = torch.zeros(len(liked))
        for block, weight in ((slice(0, self.text_dim), self._wt), (slice(self.text_dim, None), self._wi)):
            mean_norm = liked_vectors[:, block].mean(0).norm()
            if mean_norm > 0:
                out += weight * (liked_vectors[:, block] @ target[block]) / (len(liked) * mean_norm)
        return out

    def modality_scores(self, query: torch.Tensor, indices: torch.Tensor) -> ModalityScores:
        vectors = self.item_vectors[indices]
        return ModalityScores(
            text=vectors[:, : self.text_dim] @ query[: self.text_dim],
            image=vectors[:, self.text_dim :] @ query[self.text_dim :],
        )

    # -- what the zero-shot model has none of (a collaborative part) ---------------------------------
    def collaborative_contributions(self, liked: list[int], item: int) -> torch.Tensor:
        return torch.zeros(len(liked))

    def item_weights(self, liked: list[int], item: int) -> torch.Tensor:
        return torch.zeros(len(liked))

    @property
    def dislike_weight(self) -> float:
        return self.config.dislike_weight

    @property
    def mix(self) -> dict[str, float]:
        return {"content": 1.0}
