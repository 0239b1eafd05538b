"""Which seconds of a sound, which keyframes of a clip: Captum attributions over time steps.

An item's audio part is a function of which of its segments are kept (the pooled vector is the
weighted mean of the kept segments: :func:`recsys_core.encoders.sequence.masked_pool`), and the same
for a video's keyframes. Captum's ``ShapleyValueSampling`` over that keep-mask gives each step its
Shapley value: the values add up to ``f(all kept) - f(none kept)``, and with none kept the modality
is masked out of the score, so **the steps' attributions add up to the modality's part** of the score
(up to sampling noise, which the ``delta`` reports). "thorough" samples more permutations.

Steps are the encoder's own inputs (2.32 s audio blocks; keyframes), read from the
feature cache, so no encoder runs again: a 30 s clip is explained in milliseconds. Inside the
keyframe with the largest attribution, the regions are shown as for images (the exact split of the
part over the CNN's 7x7 map, see ``ZeroShotModel.region_split``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

StepScoreFn = Callable[[torch.Tensor], torch.Tensor]  # keep-mask [B, S] -> full score [B]


@dataclass(frozen=True)
class SegmentAttribution:
    start_s: float
    end_s: float
    attribution: float  # score units; the segments' attributions add up to the audio part

    def to_api(self) -> dict[str, float]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3), "attribution": round(self.attribution, 6)}


@dataclass(frozen=True)
class FrameAttribution:
    t_s: float
    attribution: float  # score units; the keyframes' attributions add up to the video part
    heatmap: np.ndarray | None = None  # [H, W] in [0, 1]: regions inside this frame (the top frame only)

    def to_api(self) -> dict[str, object]:
        heat = self.heatmap
        return {"t_s": round(self.t_s, 3), "attribution": round(self.attribution, 6),
                "heatmap": np.round(heat, 4).tolist() if heat is not None else []}


@dataclass(frozen=True)
class StepAttribution:
    values: np.ndarray  # [S] per step
    part: float  # f(all) - f(none): the modality's part of the score
    delta: float  # sum(values) - part (sampling noise; 0 for an exact method)


def attribute_steps(score_fn: StepScoreFn, count: int, *, samples: int, seed: int = 0) -> StepAttribution:
    """Shapley values of the ``count`` steps of ``score_fn`` (keep-mask -> score), by Captum's permutation sampling.

    A single step is its whole part (nothing to share); otherwise ``samples`` random orderings, every
    step's marginal gain averaged over them. Seeded, so an explanation is reproducible.
    """
    from captum.attr import ShapleyValueSampling

    ones = torch.ones(1, count)
    with torch.no_grad():
        full = float(score_fn(ones)[0])
        none = float(score_fn(torch.zeros(1, count))[0])
    if count == 1:
        return StepAttribution(values=np.array([full - none]), part=full - none, delta=0.0)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # Captum draws its permutations from torch's global generator
    try:
        with torch.no_grad():
            values = ShapleyValueSampling(score_fn).attribute(ones, baselines=0.0, n_samples=samples,
                                                               perturbations_per_eval=min(64, count))
    finally:
        torch.random.set_rng_state(generator_state)
    out = values[0].double().numpy()
    return StepAttribution(values=out, part=full - none, delta=float(out.sum() - (full - none)))


def delete_steps(score_fn: StepScoreFn, count: int, steps: list[int]) -> float:
    """The score with ``steps`` left out (the deletion test of benchmarks/faithfulness.py)."""
    mask = torch.ones(1, count)
    if steps:
        mask[0, torch.as_tensor(steps, dtype=torch.long)] = 0.0
    with torch.no_grad():
        return float(score_fn(mask)[0])
