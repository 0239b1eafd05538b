"""Serve the hybrid model (content + collaborative, :mod:`recsys_core.model.hybrid`) as one dot product.

Item rows are ``[w_c * zero-shot vector, w_cf * collaborative block, w_p * prior]`` and a query is
``[content query, sum of the liked items' collaborative rows, 1]``, so the same exact/FAISS index
serves it and the score splits exactly into its parts: text and image (the content block, split as
the zero-shot model splits it), collaborative (item-item weights from the liked items, plus the
prior of an item nobody interacted with). A dislike subtracts its item's profile at
the zero-shot config's ``dislike_weight`` from both blocks: the item's content neighbours and the items it co-occurs with
go down.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import torch

from recsys_core.model.hybrid import CollaborativePart, HybridConfig
from recsys_core.serving.protocol import ModalityScores, RegionFn, ScoreFn
from recsys_core.serving.zeroshot import ZeroShotModel, sequence_score_fn


class HybridServing:
    """A :class:`recsys_core.serving.protocol.ServingModel` over a zero-shot model and a collaborative part."""

    kind = "multimodal"

    def __init__(self, zeroshot: ZeroShotModel, collab: CollaborativePart, config: HybridConfig,
                 version: str | None = None) -> None:
        self.zeroshot = zeroshot
        self.collab = collab
        self.config = config
        n = zeroshot.item_vectors.shape[0]
        if collab.right.shape[0] != n:
            raise ValueError(f"collaborative part has {collab.right.shape[0]} items; the catalog has {n}")
        self.content_dim = zeroshot.dim
        self.collab_dim = collab.right.shape[1]
        self.wc, self.wcf, self.wp = config.content_weight, config.collab_weight, config.prior_weight
        # Blocks a model does not have are left out (not zero-filled), so with nothing collaborative the rows
        # and queries are the zero-shot model's own and the scores equal it bit for bit.
        self._prior_column = self.wp != 0.0
        rows = [zeroshot.item_vectors if self.wc == 1.0 else self.wc * zeroshot.item_vectors]
        if self.collab_dim:
            rows.append(self.wcf * torch.from_numpy(np.ascontiguousarray(collab.right, dtype=np.float32)))
        if self._prior_column:
            rows.append(self.wp * torch.from_numpy(collab.prior.astype(np.float32))[:, None])
        self.item_vectors = torch.cat(rows, dim=1).contiguous() if len(rows) > 1 else rows[0]
        self.diversity_vectors = zeroshot.item_vectors  # content similarity for MMR re-ranking
        if version is None:
            digest = hashlib.sha256(zeroshot.version.encode() + config.to_json().encode()
                                    + self.item_vectors.numpy().tobytes()).hexdigest()[:10]
            version = f"multimodal-{digest}"
        self.version = version

    @property
    def dim(self) -> int:
        return self.item_vectors.shape[1]

    @property
    def n_items(self) -> int:
        return self.item_vectors.shape[0]

    # -- queries ------------------------------------------------------------------------------------
    def _collab_query(self, liked: Sequence[int], disliked: Sequence[int]) -> torch.Tensor:
        weights = np.zeros(self.n_items, dtype=np.float64)
        weights[list(liked)] += 1.0
        weights[list(disliked)] -= self.zeroshot.config.dislike_weight
        return torch.from_numpy(self.collab.query(weights)) if self.collab_dim else torch.zeros(0)

    def profile(self, indices: list[int], disliked: Sequence[int] = ()) -> torch.Tensor:
        return torch.cat([self.zeroshot.profile(indices, disliked), self._collab_query(indices, disliked),
                          torch.ones(int(self._prior_column))])

    def upload_query(self, item, text_vector, image, *, text_encoder, image_encoder, audio_vector=None,
                     video_vector=None) -> torch.Tensor:
        """An upload has no interactions: its query is its content (plus the items' priors)."""
        content = self.zeroshot.upload_query(item, text_vector, image, text_encoder=text_encoder,
                                             image_encoder=image_encoder, audio_vector=audio_vector,
                                             video_vector=video_vector)
        return torch.cat([content, torch.zeros(self.collab_dim), torch.ones(int(self._prior_column))])

    # -- explanation pieces --------------------------------------------------------------------------
    def modality_scores(self, query: torch.Tensor, indices: torch.Tensor) -> ModalityScores:
        content = self.zeroshot.modality_scores(query[: self.content_dim], indices)
        rest = self.item_vectors[indices, self.content_dim:] @ query[self.content_dim:]
        scaled = {name: (self.wc * part if part is not None else None)
                  for name, part in (("audio", content.audio), ("video", content.video))}
        return ModalityScores(text=self.wc * content.text, image=self.wc * content.image, collaborative=rest,
                              **scaled)

    def score_fns(self, query: torch.Tensor, target: int) -> tuple[ScoreFn, ScoreFn]:
        parts = self.modality_scores(query, torch.tensor([target]))
        total = float(self.item_vectors[target] @ query)
        text_rest, image_rest = total - float(parts.text[0]), total - float(parts.image[0])
        q = query[: self.content_dim]
        return (lambda pooled: self.wc * self.zeroshot.text_score(q, pooled) + text_rest,
                lambda pooled: self.wc * self.zeroshot.image_score(q, pooled) + image_rest)

    def sequence_score_fn(self, query: torch.Tensor, target: int, name: str, upload_steps=None):
        return sequence_score_fn(self, query, target, name, upload_steps, scale=self.wc,
                                 content=slice(0, self.content_dim))

    def upload_image_score_fn(self, target: int, text_part: float) -> ScoreFn:
        """The content part is symmetric in the catalog item and the upload; the prior is the item's own.
        ``text_part``: the rest of the content score (every part but the image's)."""
        vector = self.zeroshot.item_vectors[target]
        other = self.wp * float(self.collab.prior[target])
        return lambda pooled: self.wc * self.zeroshot.image_score(vector, pooled) + (text_part + other)

    def region_split_fns(self, query: torch.Tensor, target: int) -> tuple[RegionFn, RegionFn]:
        item_split, upload_split = self.zeroshot.region_split_fns(query[: self.content_dim], target)
        return (lambda regions: self.wc * item_split(regions)), (lambda regions: self.wc * upload_split(regions))

    def collaborative_contributions(self, liked: list[int], item: int) -> torch.Tensor:
        """``w_cf * B[l, item]`` per liked item: the collaborative part split over the likes."""
        if not self.collab_dim:
            return torch.zeros(len(liked))
        return torch.from_numpy(self.wcf * self.collab.pair(liked, item)).float()

    def item_weights(self, liked: list[int], item: int) -> torch.Tensor:
        """The raw item-item weights ``B[l, item]`` behind :meth:`collaborative_contributions`."""
        if not self.collab_dim:
            return torch.zeros(len(liked))
        return torch.from_numpy(self.collab.pair(liked, item)).float()

    def history_contributions(self, liked: list[int], item: int) -> torch.Tensor:
        """Each liked item's share of the score: its content similarity (as the zero-shot split) plus its
        item-item weight; they add up to the score less the item's prior."""
        return self.wc * self.zeroshot.history_contributions(liked, item) + self.collaborative_contributions(liked, item)

    def prior_part(self, item: int) -> float:
        return self.wp * float(self.collab.prior[item])

    def prior_part_vector(self) -> torch.Tensor:
        """Every item's prior part [n] (the part of a score that no liked item gives)."""
        return self.wp * torch.from_numpy(self.collab.prior.astype(np.float32))

    @property
    def dislike_weight(self) -> float:
        return self.zeroshot.config.dislike_weight

    @property
    def mix(self) -> dict[str, float]:
        return {"content": self.config.content_share, "collaborative": round(1.0 - self.config.content_share, 6)}
