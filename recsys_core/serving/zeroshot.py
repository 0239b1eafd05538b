"""The zero-shot recommender: pretrained text, image, audio and video vectors fused into one item vector.

Each modality is mean-centred over the catalog, then L2-normalised. Raw CNN and sentence vectors
all point roughly the same way (every cosine is high), so centring is what makes cosines
discriminative. The fused vector is ``[sqrt(w_t) * text, sqrt(w_i) * image, sqrt(w_a) * audio,
sqrt(w_v) * video]`` (audio and video blocks only for a catalog that has them), so the dot product of
a profile and an item is exactly ``sum_m w_m * cos_m``. A modality an item lacks is *masked*: its block
is left at zero after centring and normalising (never a zero feature vector pushed through them), so
its term drops out of the sum and the item scores on what it has, neither boosted nor penalised; a
profile whose items lack a modality has that block at zero too.
"""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import torch
import torch.nn.functional as F

from recsys_core.config import ZeroShotConfig
from recsys_core.encoders.features import CatalogFeatures
from recsys_core.encoders.sequence import TimeSteps, masked_pool
from recsys_core.serving.protocol import ModalityScores, RegionFn, ScoreFn

#: Modalities in the order of their blocks in the fused vector.
MODALITIES = ("text", "image", "audio", "video")


class ZeroShotModel:
    """A :class:`recsys_core.serving.protocol.ServingModel`."""

    kind = "zeroshot"

    def __init__(self, features: CatalogFeatures, config: ZeroShotConfig) -> None:
        self.config = config
        raw: dict[str, tuple[torch.Tensor, torch.Tensor]] = {
            "text": (features.text, torch.ones(features.text.shape[0], dtype=torch.bool)),
            "image": (features.image, features.has_image),
        }
        for name, seq in (("audio", features.audio), ("video", features.video)):
            if seq is not None:
                raw[name] = (seq.pooled, seq.present)
        self.modalities = tuple(raw)
        self.weights = {name: float(getattr(config, f"{name}_weight")) for name in self.modalities}
        if not any(w > 0 for w in self.weights.values()):
            from recsys_core.errors import CatalogError

            raise CatalogError(f"every modality this catalog has ({', '.join(self.modalities)}) has weight 0 in the "
                               "zero-shot score; give at least one of them a weight > 0 (--text-weight, --image-weight, "
                               "--audio-weight, --video-weight)")
        self._sqrt = {name: math.sqrt(w) for name, w in self.weights.items()}
        self.means: dict[str, torch.Tensor] = {}
        self.blocks: dict[str, slice] = {}
        parts, offset = [], 0
        for name, (vectors, present) in raw.items():
            dim = vectors.shape[1]
            self.means[name] = vectors[present].mean(0) if bool(present.any()) else torch.zeros(dim)
            self.blocks[name] = slice(offset, offset + dim)
            offset += dim
            parts.append(self._part(name, vectors) * present.unsqueeze(1))
        self.present = {name: present for name, (_, present) in raw.items()}
        self.text_dim = features.text.shape[1]
        self.image_dim = features.image.shape[1]
        self.text_mean, self.image_mean = self.means["text"], self.means["image"]
        self._wt, self._wi = self._sqrt["text"], self._sqrt["image"]
        self.item_vectors = torch.cat(parts, dim=1).contiguous()
        self.diversity_vectors = self.item_vectors  # similarity for MMR re-ranking
        self.steps = {"audio": features.audio.steps if features.audio is not None else (),
                      "video": features.video.steps if features.video is not None else ()}
        keys = [features.text_key, features.image_key] + [seq.key for seq in (features.audio, features.video)
                                                           if seq is not None]
        # A text + image catalog keeps its old version string (and so its cached index and explanations).
        digest = hashlib.sha256(
            f"{'|'.join(keys)}|{self._config_json()}|{','.join(features.item_ids)}".encode()
        ).hexdigest()[:10]
        self.version = f"zeroshot-{digest}"

    def _config_json(self) -> str:
        """The config as it enters the version: the audio/video weights only when the catalog has them."""
        data = self.config.to_dict()
        for name in ("audio", "video"):
            if name not in self.modalities:
                data.pop(f"{name}_weight", None)
        import json

        return json.dumps(data, sort_keys=True, default=str)

    @property
    def dim(self) -> int:
        return int(self.item_vectors.shape[1])

    def _part(self, name: str, vectors: torch.Tensor) -> torch.Tensor:
        """Modality ``name``'s block of raw vectors [.., D]: centred on the catalog, normalised, weighted."""
        return self._sqrt[name] * F.normalize(vectors - self.means[name], dim=-1)

    def _text_part(self, text: torch.Tensor) -> torch.Tensor:
        return self._part("text", text)

    def _image_part(self, image: torch.Tensor) -> torch.Tensor:
        return self._part("image", image)

    def embed_new(self, text: torch.Tensor | None, image: torch.Tensor | None, *, audio: torch.Tensor | None = None,
                  video: torch.Tensor | None = None) -> torch.Tensor:
        """Fused vector of an item outside the catalog (an upload); any modality may be absent (its block stays
        zero). Audio or video given to a model whose catalog has none is ignored: nothing in it could match."""
        given = {"text": text, "image": image, "audio": audio, "video": video}
        out = torch.zeros(self.dim)
        for name in self.modalities:
            if given[name] is not None:
                out[self.blocks[name]] = self._part(name, given[name].reshape(-1))
        return out

    def upload_query(self, item, text_vector: torch.Tensor | None, image, *, text_encoder,
                     image_encoder, audio_vector: torch.Tensor | None = None,
                     video_vector: torch.Tensor | None = None) -> torch.Tensor:
        """The upload's own fused vector: similar items are the ones someone who likes it would like.
        ``audio_vector``/``video_vector``: the upload's pooled audio / video vectors (the service encodes them)."""
        image_vector = None
        if image is not None:
            image_vector = image_encoder.encode([image], keep_regions=False).pooled[0]
        return self.embed_new(text_vector, image_vector, audio=audio_vector, video=video_vector)

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
        for name in self.modalities:
            block = self.blocks[name]
            summed = torch.from_numpy(np.asarray(matrix @ self.item_vectors[:, block].numpy(), dtype=np.float32))
            norm = summed.norm(dim=1, keepdim=True)
            out.append(torch.where(norm > 0, self._sqrt[name] * summed / norm.clamp_min(1e-12), torch.zeros_like(summed)))
        return torch.cat(out, dim=1)

    def _profile(self, indices: list[int]) -> torch.Tensor:
        liked = self.item_vectors[indices]
        out = []
        for name in self.modalities:
            mean = liked[:, self.blocks[name]].mean(0)
            # All liked items lacking a modality leave its block at zero: that modality then doesn't count.
            out.append(self._sqrt[name] * F.normalize(mean, dim=0) if mean.norm() > 0 else mean)
        return torch.cat(out)

    # -- differentiable pieces of the score (explanations attribute through these) ---------------
    def part_score(self, name: str, query: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        """Modality ``name``'s part of the score of items with raw pooled vectors ``pooled`` [B, D] -> [B]."""
        return self._part(name, pooled) @ query[self.blocks[name]].to(pooled.dtype)

    def text_score(self, query: torch.Tensor, pooled_text: torch.Tensor) -> torch.Tensor:
        """Text part of the score of items with raw text vectors ``pooled_text`` [B, Dt] -> [B]."""
        return self.part_score("text", query, pooled_text)

    def image_score(self, query: torch.Tensor, pooled_image: torch.Tensor) -> torch.Tensor:
        """Image part of the score of items with raw image vectors ``pooled_image`` [B, Di] -> [B]."""
        return self.part_score("image", query, pooled_image)

    def sequence_part_fn(self, name: str, direction: torch.Tensor, steps: TimeSteps) -> ScoreFn:
        """Modality ``name`` ("audio" or "video")'s part of the score as a function of which of ``steps`` are kept:
        ``mask`` [B, S] (1 kept, 0 left out) -> [B]. The pooled vector is the weighted mean of the kept steps
        (:func:`recsys_core.encoders.sequence.masked_pool`, the formula the cached vector was made with), so the
        all-ones mask gives the part itself and leaving every step out gives 0 (the modality masked).
        ``direction``: the other side's fused vector (the query for a catalog item's own segments, the catalog
        item's vector for an upload's segments)."""
        d = direction[self.blocks[name]]

        def part(mask: torch.Tensor) -> torch.Tensor:
            pooled = masked_pool(steps.vectors, steps.weights, mask)
            kept = mask.sum(1) > 0
            return self._part(name, pooled) @ d.to(pooled.dtype) * kept

        return part

    def item_steps(self, name: str, target: int) -> TimeSteps | None:
        """Item ``target``'s own segments ("audio") or keyframes ("video"); None if it has none."""
        if name not in self.modalities or not bool(self.present[name][target]):
            return None
        return self.steps[name][target]

    def sequence_score_fn(self, query: torch.Tensor, target: int, name: str,
                          upload_steps: TimeSteps | None = None) -> tuple[ScoreFn, TimeSteps] | None:
        """Item ``target``'s full score as a function of a mask over segments/keyframes of modality ``name``: its own
        (``upload_steps`` None), or an upload's (``query`` = that upload's vector; similarity is symmetric).
        None when there are none to attribute over (the catalog or the item lacks the modality)."""
        return sequence_score_fn(self, query, target, name, upload_steps, scale=1.0)

    def score_fns(self, query: torch.Tensor, target: int):
        """Full score of item ``target`` as functions of its pooled text / pooled image vectors.

        The score is additive over modalities, so each function is its modality's part plus the
        other parts held constant.
        """
        parts = self.modality_scores(query, torch.tensor([target]))
        total = float(self.item_vectors[target] @ query)
        text_rest, image_rest = total - float(parts.text[0]), total - float(parts.image[0])
        return (lambda pooled: self.text_score(query, pooled) + text_rest,
                lambda pooled: self.image_score(query, pooled) + image_rest)

    def upload_image_score_fn(self, target: int, text_part: float) -> ScoreFn:
        """Similarity is symmetric: fix the catalog item and score the upload's pooled image vector."""
        item_vector = self.item_vectors[target]
        return lambda pooled: self.image_score(item_vector, pooled) + text_part

    def region_split(self, direction: torch.Tensor, name: str = "image") -> RegionFn:
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
        ``name``: "video" splits one keyframe's share of the video part the same way (the caller scales it by
        that frame's pooling weight).
        """
        d = direction[self.blocks[name]]
        mean, weight = self.means[name], self._sqrt[name]

        def split(regions: torch.Tensor) -> torch.Tensor:
            centred = regions.float() - mean.to(regions.device)[:, None, None]
            count = centred.shape[1] * centred.shape[2]
            norm = centred.mean(dim=(1, 2)).norm()
            if norm == 0:  # the average image itself: its image part is 0
                return torch.zeros(centred.shape[1:])
            return weight * torch.einsum("chw,c->hw", centred, d.to(centred)) / (count * norm)

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
        for name in self.modalities:
            block, weight = self.blocks[name], self._sqrt[name]
            mean_norm = liked_vectors[:, block].mean(0).norm()
            if mean_norm > 0:
                out += weight * (liked_vectors[:, block] @ target[block]) / (len(liked) * mean_norm)
        return out

    def modality_scores(self, query: torch.Tensor, indices: torch.Tensor) -> ModalityScores:
        vectors = self.item_vectors[indices]
        parts = {name: vectors[:, self.blocks[name]] @ query[self.blocks[name]] for name in self.modalities}
        return ModalityScores(text=parts["text"], image=parts["image"], audio=parts.get("audio"),
                              video=parts.get("video"))

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


def sequence_score_fn(model, query: torch.Tensor, target: int, name: str, upload_steps: TimeSteps | None,
                      *, scale: float, content: slice | None = None) -> tuple[ScoreFn, TimeSteps] | None:
    """The shared body of ``sequence_score_fn`` for models whose content block is a zero-shot vector
    (``model.zeroshot`` or the model itself) scaled by ``scale`` and found at ``content`` of the query."""
    zs: ZeroShotModel = getattr(model, "zeroshot", model)
    if name not in zs.modalities:
        return None
    q = query[content] if content is not None else query
    if upload_steps is None:
        steps, direction = zs.item_steps(name, target), q
    else:
        steps, direction = upload_steps, zs.item_vectors[target]
    if steps is None:
        return None
    part = zs.sequence_part_fn(name, direction, steps)
    total = float(model.item_vectors[target] @ query.to(model.item_vectors.dtype))
    rest = total - scale * float(part(torch.ones(1, len(steps)))[0])
    return (lambda mask: scale * part(mask) + rest), steps
