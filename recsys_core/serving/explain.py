"""Why was an item recommended? Captum attributions over text tokens and image regions.

Numbers only; drawing happens in the UI. Every attribution targets the recommendation score itself
(the dot product of the query and the item vector, before any squashing):

- text: LayerIntegratedGradients on the text encoder's token-embedding layer, baseline
  ``[CLS] [PAD] ... [SEP]`` (special tokens kept, every other token replaced by PAD), sub-word
  scores summed into words, special tokens hidden, convergence delta kept;
- image regions (fast): the model's exact split of the image part over the CNN's final 7x7 regions
  where it has one (zero-shot: see :meth:`recsys_core.serving.zeroshot.ZeroShotModel.region_split`),
  else signed LayerGradCam on that map; (thorough) Occlusion of square patches; upsampled to the
  centre crop the CNN sees;
- audio segments and video keyframes: Shapley values over which steps are kept, adding up to the
  modality's part (:mod:`recsys_core.serving.explain_media`);
- modality share and history: exact decompositions of the zero-shot score (see
  :meth:`recsys_core.serving.zeroshot.ZeroShotModel.history_contributions`).

Captum registers hooks on the modules it explains, which would corrupt any other forward pass
running on the same modules at that moment; the :class:`Explainer` therefore works on its own copy
of the encoders and explains one request at a time.
"""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.text import TextEncoder
from recsys_core.serving.explain_media import FrameAttribution, SegmentAttribution

Method = Literal["fast", "thorough"]
METHODS: tuple[str, ...] = ("fast", "thorough")
ScoreFn = Callable[[torch.Tensor], torch.Tensor]
RegionFn = Callable[[torch.Tensor], torch.Tensor]  # final feature map [C, h, w] -> image part per region [h, w]


@dataclass(frozen=True)
class ExplainConfig:
    fast_steps: int = 16  # IG steps for "fast"; deltas stay small because the path is short (PAD -> token)
    thorough_steps: int = 64
    internal_batch_size: int = 16  # bounds memory: at most this many interpolated copies per forward
    occlusion_window: int = 32  # pixels; 224 / 32 = a 7x7 grid, the same regions GradCAM sees
    heatmap_size: int = 56  # side of the heatmap returned (upsampled from the 7x7 map)
    cache_size: int = 256

    def __post_init__(self) -> None:
        if min(self.fast_steps, self.thorough_steps, self.internal_batch_size, self.occlusion_window) < 1:
            raise ValueError("explanation steps, batch size and window must be >= 1")


@dataclass(frozen=True)
class WordAttribution:
    word: str
    score: float  # in score units: the words' scores sum to (score - baseline score) up to the delta
    start: int  # character span in ``Explanation.text``
    end: int


@dataclass(frozen=True)
class TextAttribution:
    text: str
    words: tuple[WordAttribution, ...]
    delta: float  # IG convergence delta: sum of attributions minus (f(x) - f(baseline))
    score: float  # the text part of the score, recomputed with gradients enabled
    baseline_score: float
    truncated: bool
    token_scores: tuple[float, ...] = ()  # per input token (special tokens included), for deletion tests


@dataclass(frozen=True)
class TextInputs:
    input_ids: torch.Tensor  # [1, T]
    attention_mask: torch.Tensor  # [1, T]
    special: torch.Tensor  # [T] bool: CLS/SEP/PAD, never attributed or deleted
    word_ids: list[int | None]
    offsets: list[tuple[int, int]]
    truncated: bool


@dataclass(frozen=True)
class HistoryShare:
    item_id: str
    contribution: float  # score units; the contributions sum to the score (less the hybrid's item prior)
    share: float  # contribution / sum of |contributions|
    collaborative: float = 0.0  # the hybrid: the part of ``contribution`` through the item-item weight
    item_weight: float = 0.0  # the hybrid: that item-item weight B[liked, item] itself (before the mix weight)
    disliked: bool = False  # a disliked item: its contribution is what it took away


@dataclass(frozen=True)
class Explanation:
    item_id: str
    method: str
    model_version: str
    score: float
    text_score: float
    image_score: float
    text: TextAttribution | None
    image_heatmap: np.ndarray | None  # [H, W] in [0, 1] over the CNN's centre crop
    image_method: str | None
    query_heatmap: np.ndarray | None  # uploads: which regions of the uploaded image matched
    modality_share: dict[str, float]  # signed, see modality_share()
    history: tuple[HistoryShare, ...]
    seconds: float
    extra: dict[str, float] = field(default_factory=dict)
    # Which way the heatmaps' regions moved the score: the image part's own direction ("raised" for a
    # positive or zero image part, "lowered" for a negative one).
    image_direction: str = "raised"
    model_kind: str = "zeroshot"  # the serving model's kind: "zeroshot" (weighted cosines) or "multimodal"
    # The hybrid's collaborative part (item-item weights from the likes + the item's prior); 0 otherwise.
    collaborative_score: float = 0.0
    # The model's mix, e.g. {"content": 0.6, "collaborative": 0.4} (the hybrid's weights after scaling).
    mix: dict[str, float] = field(default_factory=dict)
    # Audio and video parts of the score (0 where the catalog or the item has none) and their attributions
    # over the item's time segments / keyframes (recsys_core.serving.explain_media), adding up to the part.
    audio_score: float = 0.0
    video_score: float = 0.0
    audio_segments: tuple[SegmentAttribution, ...] = ()
    video_frames: tuple[FrameAttribution, ...] = ()
    # Uploads: which seconds / keyframes of the uploaded clip matched the item.
    upload_audio_segments: tuple[SegmentAttribution, ...] = ()
    upload_video_frames: tuple[FrameAttribution, ...] = ()
    # Sampling noise of the step attributions: their sum minus the part they split (0 = exact).
    steps_delta: float = 0.0

    @property
    def other_score(self) -> float:
        """What neither text, image, audio, video nor the collaborative part explains: the fusion model's item
        ID and bias part (the score of the item with no content); ~0 for the zero-shot and hybrid models,
        whose scores are exactly the sum of their modality parts (+ collaborative)."""
        return (self.score - self.text_score - self.image_score - self.audio_score - self.video_score
                - self.collaborative_score)

    @property
    def delta(self) -> float:
        return self.text.delta if self.text is not None else 0.0

    def to_api(self) -> dict[str, object]:
        heat = self.image_heatmap
        return {
            "item_id": self.item_id,
            "tokens": [[w.word, round(w.score, 6)] for w in self.text.words] if self.text else [],
            "image_heatmap": np.round(heat, 4).tolist() if heat is not None else [],
            "image_method": self.image_method,
            "query_heatmap": np.round(self.query_heatmap, 4).tolist() if self.query_heatmap is not None else [],
            "image_heatmap_direction": self.image_direction,
            "modality_share": {k: round(v, 6) for k, v in self.modality_share.items()},
            "modality_scores": {"text": round(self.text_score, 6), "image": round(self.image_score, 6),
                                "audio": round(self.audio_score, 6), "video": round(self.video_score, 6)},
            # Adds up to "score": "collaborative" is the hybrid's item-item part, "item" the fusion model's
            # ID and bias part (each 0 where the model has none).
            "score_parts": {"text": round(self.text_score, 6), "image": round(self.image_score, 6),
                            "audio": round(self.audio_score, 6), "video": round(self.video_score, 6),
                            "collaborative": round(self.collaborative_score, 6), "item": round(self.other_score, 6)},
            "audio_segments": [a.to_api() for a in self.audio_segments],
            "video_frames": [f.to_api() for f in self.video_frames],
            "upload_audio_segments": [a.to_api() for a in self.upload_audio_segments],
            "upload_video_frames": [f.to_api() for f in self.upload_video_frames],
            "model_kind": self.model_kind,
            "mix": {k: round(v, 6) for k, v in self.mix.items()},
            "history": [{"item_id": h.item_id, "share": round(h.share, 6), "contribution": round(h.contribution, 6),
                         "collaborative": round(h.collaborative, 6), "item_weight": round(h.item_weight, 6),
                         "disliked": h.disliked}
                        for h in self.history],
            "score": round(self.score, 6),
            "method": self.method,
            "delta": round(self.delta, 6),
            "model_version": self.model_version,
            "seconds": round(self.seconds, 3),
        }


def modality_share(parts: dict[str, float]) -> dict[str, float]:
    """Signed shares: ``part / sum(|parts|)``.

    Each share has its part's sign and the shares' absolute values sum to 1, so with parts of one
    sign they are the usual shares summing to 1. With mixed signs a negative share is the fraction
    of the total movement that pushed the score *down*: text 0.230 and image -0.029 give text 0.89
    and image -0.11 (the shares then sum to 0.78, not 1). Dividing by ``sum(|parts|)`` rather than by
    the score keeps every share within [-1, 1] when the parts nearly cancel. All parts zero: even split.
    """
    total = sum(abs(v) for v in parts.values())
    if total == 0:
        return {k: 1.0 / len(parts) for k in parts}
    return {k: v / total for k, v in parts.items()}


# -- text ------------------------------------------------------------------------------------------
def text_inputs(encoder: TextEncoder, text: str) -> TextInputs:
    tok = encoder.tokenizer
    enc = tok([text], truncation=True, max_length=encoder.config.max_length, return_offsets_mapping=True,
              return_tensors="pt")
    full_length = len(tok(text, truncation=False)["input_ids"])
    ids = enc["input_ids"].to(encoder.device)
    special = torch.tensor(tok.get_special_tokens_mask(ids[0].tolist(), already_has_special_tokens=True),
                           dtype=torch.bool)
    return TextInputs(
        input_ids=ids,
        attention_mask=enc["attention_mask"].to(encoder.device),
        special=special,
        word_ids=enc.word_ids(0),
        offsets=[tuple(o) for o in enc["offset_mapping"][0].tolist()],
        truncated=full_length > ids.shape[1],
    )


def pad_tokens(inputs: TextInputs, positions: torch.Tensor | list[int], pad_id: int) -> torch.Tensor:
    """Input ids with ``positions`` replaced by PAD (the attention mask is left as is, like the IG baseline)."""
    ids = inputs.input_ids.clone()
    if len(positions):
        ids[0, torch.as_tensor(positions, dtype=torch.long)] = pad_id
    return ids


def text_forward(encoder: TextEncoder, score_fn: ScoreFn) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        _, pooled = encoder(input_ids, attention_mask)
        return score_fn(pooled)

    return forward


def explain_text(encoder: TextEncoder, text: str, score_fn: ScoreFn, *, n_steps: int,
                 internal_batch_size: int) -> TextAttribution:
    from captum.attr import LayerIntegratedGradients

    inputs = text_inputs(encoder, text)
    pad_id = encoder.tokenizer.pad_token_id
    baseline = pad_tokens(inputs, torch.nonzero(~inputs.special).flatten(), pad_id)
    forward = text_forward(encoder, score_fn)
    lig = LayerIntegratedGradients(forward, encoder.embedding_layer())
    attributions, delta = lig.attribute(
        inputs.input_ids,
        baselines=baseline,
        additional_forward_args=(inputs.attention_mask,),
        n_steps=n_steps,
        internal_batch_size=internal_batch_size,
        return_convergence_delta=True,
    )
    token_scores = attributions.sum(-1)[0].detach().float().cpu()
    with torch.no_grad():
        score = float(forward(inputs.input_ids, inputs.attention_mask)[0])
        base = float(forward(baseline, inputs.attention_mask)[0])
    return TextAttribution(
        text=text,
        words=tuple(merge_words(text, inputs, token_scores)),
        delta=float(delta.abs().max()),
        score=score,
        baseline_score=base,
        truncated=inputs.truncated,
        token_scores=tuple(token_scores.tolist()),
    )


def merge_words(text: str, inputs: TextInputs, token_scores: torch.Tensor) -> list[WordAttribution]:
    """Sum sub-word scores per word (tokenizer word ids) and map each word to its span of ``text``."""
    words: dict[int, list] = {}
    for pos, word_id in enumerate(inputs.word_ids):
        if word_id is None or bool(inputs.special[pos]):
            continue  # special tokens soak up attribution and mean nothing to a reader
        start, end = inputs.offsets[pos]
        if word_id not in words:
            words[word_id] = [start, end, 0.0]
        entry = words[word_id]
        entry[0], entry[1] = min(entry[0], start), max(entry[1], end)
        entry[2] += float(token_scores[pos])
    return [WordAttribution(text[s:e], score, s, e) for s, e, score in (words[k] for k in sorted(words))]


# -- image -----------------------------------------------------------------------------------------
def image_forward(encoder: ImageEncoder, score_fn: ScoreFn) -> Callable[[torch.Tensor], torch.Tensor]:
    def forward(pixels: torch.Tensor) -> torch.Tensor:
        _, pooled = encoder(pixels)
        return score_fn(pooled)

    return forward


def _normalise_heatmap(heat: torch.Tensor, size: int, sign: float = 1.0) -> np.ndarray:
    """[h, w] signed evidence -> [size, size] in [0, 1] (bilinear; all-zero stays zero).

    ``sign`` +1 keeps the regions that raised the score, -1 the regions that lowered it.
    """
    heat = (heat.detach().float() * sign).clamp(min=0)
    up = F.interpolate(heat[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    peak = float(up.max())
    return (up / peak).cpu().numpy() if peak > 0 else up.cpu().numpy()


def gradcam_map(encoder: ImageEncoder, pixels: torch.Tensor, score_fn: ScoreFn) -> torch.Tensor:
    """Grad-CAM on the final feature map, signed: sum_c mean-grad_c * A_c, [h, w] (7x7 at 224 px).

    With mean pooling after that map the score is linear in the regions' mean, so this is the
    first-order contribution of each region to the score.
    """
    from captum.attr import LayerGradCam

    cam = LayerGradCam(image_forward(encoder, score_fn), encoder.cam_layer())
    # No ReLU: a region that lowers the score must stay negative (the caller picks the direction).
    return cam.attribute(pixels, relu_attributions=False)[0, 0]


def occlusion_map(encoder: ImageEncoder, pixels: torch.Tensor, score_fn: ScoreFn, window: int) -> torch.Tensor:
    """Score drop when each ``window``x``window`` patch is replaced by the baseline (0 = mid-grey), [h, w]."""
    from captum.attr import Occlusion

    occlusion = Occlusion(image_forward(encoder, score_fn))
    attr = occlusion.attribute(pixels, sliding_window_shapes=(3, window, window), strides=(3, window, window),
                               baselines=0.0, perturbations_per_eval=8)
    per_pixel = attr[0].sum(0)  # [H, W]
    side = pixels.shape[-1] // window
    return F.adaptive_avg_pool2d(per_pixel[None, None], side)[0, 0]


def explain_image(encoder: ImageEncoder, image: Image.Image, score_fn: ScoreFn, *, method: Method,
                  config: ExplainConfig, sign: float = 1.0, region_fn: RegionFn | None = None) -> tuple[np.ndarray, str]:
    """Heatmap in [0, 1] of the regions that moved the score in ``sign``'s direction (+1 raised, -1 lowered).

    ``region_fn`` (fast only): the model's exact split of the image part over the final map's regions,
    used instead of Grad-CAM (for a linear part it *is* Grad-CAM against the part's own baseline).
    """
    pixels = encoder.preprocess([image])
    if method == "fast":
        if region_fn is not None:
            with torch.no_grad():
                regions, _ = encoder(pixels)
            grid = region_fn(regions[0])
        else:
            grid = gradcam_map(encoder, pixels, score_fn)
        return _normalise_heatmap(grid, config.heatmap_size, sign), "gradcam"
    grid = occlusion_map(encoder, pixels, score_fn, config.occlusion_window)
    return _normalise_heatmap(grid, config.heatmap_size, sign), "occlusion"


def mask_regions(pixels: torch.Tensor, cells: list[int], grid: int) -> torch.Tensor:
    """Replace the given cells of a ``grid`` x ``grid`` partition of the image by the baseline (0)."""
    out = pixels.clone()
    side = pixels.shape[-1] // grid
    for cell in cells:
        r, c = divmod(int(cell), grid)
        out[..., r * side : (r + 1) * side, c * side : (c + 1) * side] = 0.0
    return out


def heatmap_cells(heatmap: np.ndarray, grid: int) -> np.ndarray:
    """Mean heat per cell of a ``grid`` x ``grid`` partition, flattened row-major."""
    t = torch.as_tensor(heatmap, dtype=torch.float32)[None, None]
    return F.adaptive_avg_pool2d(t, grid)[0, 0].flatten().numpy()


# -- the explainer ---------------------------------------------------------------------------------
class Explainer:
    """Owns private copies of the encoders and explains one request at a time (see module doc)."""

    def __init__(self, text_encoder: TextEncoder, image_encoder: ImageEncoder, config: ExplainConfig | None = None):
        self.config = config or ExplainConfig()
        self.text_encoder = copy.deepcopy(text_encoder)
        self.image_encoder = copy.deepcopy(image_encoder)
        self.lock = threading.Lock()
        self._cache: dict[tuple, Explanation] = {}
        self._cache_lock = threading.Lock()

    def cached(self, key: tuple) -> Explanation | None:
        with self._cache_lock:
            hit = self._cache.pop(key, None)
            if hit is not None:
                self._cache[key] = hit  # move to the end: least recently used goes first
            return hit

    def remember(self, key: tuple, value: Explanation) -> None:
        with self._cache_lock:
            self._cache[key] = value
            while len(self._cache) > self.config.cache_size:
                self._cache.pop(next(iter(self._cache)))

    def steps(self, method: Method) -> int:
        return self.config.fast_steps if method == "fast" else self.config.thorough_steps

    def explain_frame(self, frame: Image.Image, region_fn: RegionFn, sign: float) -> tuple[np.ndarray, str]:
        """Region heatmap inside one video keyframe: the exact split of the video part over its 7x7 map."""
        with self.lock:
            return explain_image(self.image_encoder, frame, lambda pooled: pooled.sum(-1), method="fast",
                                 config=self.config, sign=sign, region_fn=region_fn)

    def explain_parts(
        self,
        *,
        text: str | None,
        image: Image.Image | None,
        text_score_fn: ScoreFn,
        image_score_fn: ScoreFn,
        method: Method,
        image_sign: float = 1.0,
        region_fn: RegionFn | None = None,
    ) -> tuple[TextAttribution | None, np.ndarray | None, str | None, float]:
        """Token attributions and a region heatmap for one item; returns (text, heatmap, image method, seconds).

        ``image_sign``: the heatmap shows the regions that raised (+1) or lowered (-1) the score.
        """
        start = time.perf_counter()
        with self.lock:
            text_attr = None
            if text:
                text_attr = explain_text(self.text_encoder, text, text_score_fn, n_steps=self.steps(method),
                                         internal_batch_size=self.config.internal_batch_size)
            heatmap, image_method = None, None
            if image is not None:
                heatmap, image_method = explain_image(self.image_encoder, image, image_score_fn, method=method,
                                                      config=self.config, sign=image_sign, region_fn=region_fn)
        return text_attr, heatmap, image_method, time.perf_counter() - start
