"""Time-ordered features of one item (audio segments, video keyframes) and how they pool into one vector.

Both modalities are a bag of vectors over time: the pooled vector is a weighted mean, and an
explanation asks what the score would be with some segments or frames left out. ``masked_pool`` is
that one formula, shared by the encoders (the pooled vector they cache), the zero-shot scorer (the
score as a function of which segments are kept) and the tests, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TimeSteps:
    """One item's sequence: ``vectors`` [S, D] with their place in the clip (``starts_s``/``ends_s`` [S],
    equal for keyframes) and pooling ``weights`` [S] (uniform for audio, attention for video)."""

    vectors: torch.Tensor
    starts_s: torch.Tensor
    ends_s: torch.Tensor
    weights: torch.Tensor

    def __post_init__(self) -> None:
        count = self.vectors.shape[0]
        if count < 1 or not (self.starts_s.shape[0] == self.ends_s.shape[0] == self.weights.shape[0] == count):
            raise ValueError(f"a sequence needs >= 1 step and one time and weight per step; got {count} vectors, "
                             f"{self.starts_s.shape[0]} starts, {self.ends_s.shape[0]} ends, {self.weights.shape[0]} weights")

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def pooled(self) -> torch.Tensor:
        return masked_pool(self.vectors, self.weights, torch.ones(1, len(self)))[0]


def masked_pool(vectors: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Weighted mean of the kept steps: ``sum_s m_s w_s v_s / sum_s m_s w_s`` for each row of ``mask`` [B, S]
    (1 = kept, 0 = left out, values in between for path methods) -> [B, D]. All steps left out gives the
    zero vector (no information), never a division by zero."""
    kept = mask.to(vectors.dtype) * weights.to(vectors.dtype)[None, :]
    total = kept.sum(1, keepdim=True)
    return (kept @ vectors) / total.clamp_min(1e-12) * (total > 0)


def attention_weights(vectors: torch.Tensor, temperature: float) -> torch.Tensor:
    """Parameter-free attention over time: softmax of each step's cosine to the clip's mean over
    ``temperature``. Frames unlike the rest of the clip (black frames, fades, title cards) weigh less;
    nothing is learned, so it holds on a catalog without interactions."""
    mean = vectors.mean(0, keepdim=True)
    cos = F.cosine_similarity(vectors, mean, dim=1)
    return torch.softmax(cos / temperature, dim=0)
