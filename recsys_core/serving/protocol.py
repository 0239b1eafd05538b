"""``ServingModel``: what the service asks of the model it serves, zero-shot or fine-tuned.

:class:`recsys_core.serving.zeroshot.ZeroShotModel`, :class:`recsys_core.serving.hybrid.HybridServing`
(the product's ``multimodal`` model) and :class:`recsys_core.serving.finetuned.FusionServing` (the
two-tower fusion model, kept as an ablation) satisfy it, so ``service.py`` never asks which
one it holds. Scores are dot products: ``item_vectors[i] @ query`` is item ``i``'s score for a query
from :meth:`ServingModel.profile` or :meth:`ServingModel.upload_query`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol, Sequence

import torch

if TYPE_CHECKING:
    from PIL import Image

    from recsys_core.data.catalog import Item
    from recsys_core.encoders.sequence import TimeSteps
    from recsys_core.encoders.image import ImageEncoder
    from recsys_core.encoders.text import TextEncoder

ScoreFn = Callable[..., torch.Tensor]  # pooled vectors [B, D] -> full score of one item [B]
RegionFn = Callable[[torch.Tensor], torch.Tensor]  # final feature map [C, h, w] -> image part per region [h, w]


@dataclass(frozen=True)
class ModalityScores:
    text: torch.Tensor  # [N] weighted text contribution to the score
    image: torch.Tensor  # [N] weighted image contribution
    # [N] the hybrid's collaborative part (item-item weights from the likes, plus the prior); None for models
    # without one. text + image + collaborative is the whole score of the hybrid.
    collaborative: torch.Tensor | None = None
    # [N] audio / video parts, for a model whose catalog has that modality (None otherwise). The parts present
    # add up to the whole score (plus the fusion model's item-ID part, which it keeps to itself).
    audio: torch.Tensor | None = None
    video: torch.Tensor | None = None


class ServingModel(Protocol):
    kind: str  # "zeroshot" or "multimodal" (a fine-tuned checkpoint)
    version: str  # changes whenever the scores would
    item_vectors: torch.Tensor  # [N, d] index rows
    diversity_vectors: torch.Tensor  # [N, d'] item similarity for MMR re-ranking

    @property
    def dim(self) -> int: ...

    def profile(self, indices: list[int], disliked: Sequence[int] = ()) -> torch.Tensor:
        """The query [d] for someone who liked catalog items ``indices`` (oldest first) and disliked
        ``disliked``: a dislike pushes that item's neighbours down."""
        ...

    def upload_query(self, item: "Item", text_vector: torch.Tensor | None, image: "Image.Image | None", *,
                     text_encoder: "TextEncoder", image_encoder: "ImageEncoder") -> torch.Tensor:
        """The query [d] for someone who likes an uploaded item (``text_vector``: its pooled text, or None)."""
        ...

    def modality_scores(self, query: torch.Tensor, indices: torch.Tensor) -> ModalityScores:
        """The text and image parts of the scores of items ``indices``."""
        ...

    def score_fns(self, query: torch.Tensor, target: int) -> tuple[ScoreFn, ScoreFn]:
        """Item ``target``'s full score as functions of its pooled text / pooled image vectors (for Captum)."""
        ...

    def upload_image_score_fn(self, target: int, text_part: float) -> ScoreFn | None:
        """Item ``target``'s score as a function of an upload's pooled image vector, to map which regions of
        the upload matched; None when the score is not symmetric in the two items."""
        ...

    def region_split_fns(self, query: torch.Tensor, target: int) -> tuple[RegionFn | None, RegionFn | None]:
        """Exact splits of the image part over the regions of item ``target``'s image and of an upload's
        image (for the upload heatmap); None where the model has none (the explainer then uses Grad-CAM)."""
        ...

    def sequence_score_fn(self, query: torch.Tensor, target: int, name: str,
                          upload_steps: "TimeSteps | None" = None) -> "tuple[ScoreFn, TimeSteps] | None":
        """Item ``target``'s full score as a function of a mask [B, S] over the segments (``name`` "audio") or
        keyframes ("video") of the item itself, or of an upload (``upload_steps``); None where there are none."""
        ...

    def history_contributions(self, liked: list[int], item: int) -> torch.Tensor:
        """How much each liked item contributes to ``item``'s score [len(liked)]."""
        ...

    def collaborative_contributions(self, liked: list[int], item: int) -> torch.Tensor:
        """The part of each liked item's contribution through item-item weights [len(liked)] (zeros without one)."""
        ...

    def item_weights(self, liked: list[int], item: int) -> torch.Tensor:
        """The item-item weights behind :meth:`collaborative_contributions` [len(liked)] (zeros without one)."""
        ...

    @property
    def dislike_weight(self) -> float:
        """A disliked item's profile is subtracted from the query at this weight."""
        ...

    @property
    def mix(self) -> dict[str, float]:
        """How the model weighs its parts, e.g. {"content": 0.6, "collaborative": 0.4} (empty: not a mix)."""
        ...
