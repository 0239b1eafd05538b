"""``ServingModel``: what the service asks of the model it serves, zero-shot or fine-tuned.

Both :class:`recsys_core.serving.zeroshot.ZeroShotModel` and
:class:`recsys_core.serving.finetuned.FusionServing` satisfy it, so ``service.py`` never asks which
one it holds. Scores are dot products: ``item_vectors[i] @ query`` is item ``i``'s score for a query
from :meth:`ServingModel.profile` or :meth:`ServingModel.upload_query`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Protocol

import torch

if TYPE_CHECKING:
    from PIL import Image

    from recsys_core.data.catalog import Item
    from recsys_core.encoders.image import ImageEncoder
    from recsys_core.encoders.text import TextEncoder

ScoreFn = Callable[..., torch.Tensor]  # pooled vectors [B, D] -> full score of one item [B]
RegionFn = Callable[[torch.Tensor], torch.Tensor]  # final feature map [C, h, w] -> image part per region [h, w]


@dataclass(frozen=True)
class ModalityScores:
    text: torch.Tensor  # [N] weighted text contribution to the score
    image: torch.Tensor  # [N] weighted image contribution


class ServingModel(Protocol):
    kind: str  # "zeroshot" or "multimodal" (a fine-tuned checkpoint)
    version: str  # changes whenever the scores would
    item_vectors: torch.Tensor  # [N, d] index rows
    diversity_vectors: torch.Tensor  # [N, d'] item similarity for MMR re-ranking

    @property
    def dim(self) -> int: ...

    def profile(self, indices: list[int]) -> torch.Tensor:
        """The query [d] for someone who liked catalog items ``indices`` (oldest first)."""
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

    def history_contributions(self, liked: list[int], item: int) -> torch.Tensor:
        """How much each liked item contributes to ``item``'s score [len(liked)]."""
        ...
