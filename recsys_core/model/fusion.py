"""The multimodal fusion recommender: item tower over text tokens + image regions, user tower over history.

Item tower: text token states and image region features are projected to a common width, tagged
with a modality embedding, and fused by a small Transformer layer reading a learned ``[ITEM]``
token (self-attention lets text and regions attend to each other and the item token pick what
matters). An optional item-ID embedding is added; during training it is dropped (zeroed) with
probability ``id_dropout`` so the content path alone must produce a good vector, which is what
items never seen in training get. User tower: attention pooling (a learned query) over the user's
history of item vectors with recency-position embeddings. Score = dot product.

No I/O here: ``recsys_core.training`` owns data and loops, :mod:`recsys_core.model.checkpoint` the files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

Modalities = Literal["both", "text", "image"]


@dataclass(frozen=True)
class FusionConfig:
    text_dim: int = 384
    image_dim: int = 1280
    width: int = 128
    heads: int = 4
    layers: int = 1
    dropout: float = 0.1
    # The item tower runs over the whole catalog every training step, so its sequence is kept short:
    # title + genres + the start of the plot, and the 7x7 map average-pooled to grid x grid regions.
    max_text_tokens: int = 32
    image_grid: int = 3
    n_items: int = 0  # size of the ID table (0 = no ID embedding)
    id_dropout: float = 0.5
    history_len: int = 50
    modalities: Modalities = "both"
    fusion: Literal["transformer", "mean"] = "transformer"  # "mean" = ablation without attention
    # A per-item popularity bias added to every score: predicted from content (so cold items get
    # one too) plus an ID residual (dropped like the ID vector). Cosine scores alone cannot say
    # "this item is liked by many people", which is most of what ranks well on MovieLens.
    item_bias: bool = True
    # Trainable encoder tops (recsys_core.encoders.tops): the item tower then reads the cached states
    # below them. 0 / False = frozen encoders (the tower reads final token states and regions).
    text_top_layers: int = 0
    lora_rank: int = 0  # > 0: the text top is frozen and trains LoRA adapters of this rank
    image_top: bool = False
    # Audio segments and video keyframes as tokens (0 = the catalog has none: no such tokens, and checkpoints
    # written before audio and video existed load unchanged). Each item's steps are average-pooled over time
    # to at most max_media_tokens tokens, so a long track costs the tower no more than a short one.
    audio_dim: int = 0
    video_dim: int = 0
    max_media_tokens: int = 8

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be divisible by heads {self.heads}")
        if not 0 <= self.id_dropout <= 1 or not 0 <= self.dropout < 1:
            raise ValueError("dropouts must be in [0, 1)")
        if self.modalities not in ("both", "text", "image"):
            raise ValueError(f"modalities {self.modalities!r}: use both, text or image")
        if self.text_top_layers < 0 or self.lora_rank < 0:
            raise ValueError("text_top_layers and lora_rank must be >= 0")
        if self.lora_rank and not self.text_top_layers:
            raise ValueError("LoRA needs text_top_layers >= 1 (the blocks that get adapters)")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class ItemContent:
    """Frozen encoder outputs for a set of items (rows aligned with item indices)."""

    text_tokens: torch.Tensor  # [N, T, text_dim] (zeros past each item's length); states below the text top if any
    text_mask: torch.Tensor  # [N, T] bool, True = real token
    regions: torch.Tensor  # [N, R, image_dim]; with an image top: the lower maps [N, C_low, H, W]
    has_image: torch.Tensor  # [N] bool
    # Whole-item summaries from the frozen encoders (mean-pooled sentence vector over the full text,
    # pooled CNN vector): the token budget above is short, these carry the rest.
    text_pooled: torch.Tensor | None = None  # [N, text_dim]
    image_pooled: torch.Tensor | None = None  # [N, image_dim]
    # Audio segments / video keyframes pooled over time to [N, M, dim], and which of them are real ([N, M] bool;
    # all False for an item without that modality: masked out of the attention, never zero tokens).
    audio_tokens: torch.Tensor | None = None
    audio_mask: torch.Tensor | None = None
    video_tokens: torch.Tensor | None = None
    video_mask: torch.Tensor | None = None

    def _map(self, fn) -> "ItemContent":
        from dataclasses import fields

        return ItemContent(**{f.name: (None if getattr(self, f.name) is None else fn(getattr(self, f.name)))
                              for f in fields(self)})

    def to(self, device: torch.device | str) -> "ItemContent":
        return self._map(lambda t: t.to(device))

    def take(self, index: torch.Tensor) -> "ItemContent":
        """The rows ``index`` (a 1-d tensor of item indices), in that order."""
        return self._map(lambda t: t[index.to(t.device)])

    def slice(self, sl: slice) -> "ItemContent":
        return self._map(lambda t: t[sl])

    def expand(self, b: int) -> "ItemContent":
        """A one-item content repeated ``b`` times (views, no copy)."""
        return self._map(lambda t: t.expand(b, *t.shape[1:]))


class ItemVectors(NamedTuple):
    """Item tower output: ``vectors`` [N, d] and the additive popularity ``bias`` [N]."""

    vectors: torch.Tensor
    bias: torch.Tensor

    def take(self, index) -> "ItemVectors":
        return ItemVectors(self.vectors[index], self.bias[index])


class ItemTower(nn.Module):
    def __init__(self, config: FusionConfig, text_top: nn.Module | None = None, image_top: nn.Module | None = None) -> None:
        super().__init__()
        if bool(config.text_top_layers) != (text_top is not None) or config.image_top != (image_top is not None):
            raise ValueError("the encoder tops given do not match the config (text_top_layers / image_top)")
        self.config = config
        self.text_top = text_top
        self.image_top = image_top
        d = config.width
        self.text_proj = nn.Sequential(nn.LayerNorm(config.text_dim), nn.Linear(config.text_dim, d))
        self.image_proj = nn.Sequential(nn.LayerNorm(config.image_dim), nn.Linear(config.image_dim, d))
        self.modality = nn.Parameter(torch.zeros(4, d))  # text token, image region, text summary, image summary
        # Audio and video tokens only where the catalog has them (a text + image checkpoint keeps its state dict).
        self.audio_proj = nn.Sequential(nn.LayerNorm(config.audio_dim), nn.Linear(config.audio_dim, d)) \
            if config.audio_dim else None
        self.video_proj = nn.Sequential(nn.LayerNorm(config.video_dim), nn.Linear(config.video_dim, d)) \
            if config.video_dim else None
        self.media_modality = nn.Parameter(torch.zeros(2, d)) if (config.audio_dim or config.video_dim) else None
        if self.media_modality is not None:
            nn.init.normal_(self.media_modality, std=0.02)
        self.item_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.modality, std=0.02)
        nn.init.normal_(self.item_token, std=0.02)
        layer = nn.TransformerEncoderLayer(d, config.heads, 2 * d, config.dropout, batch_first=True, norm_first=True)
        self.fuse = nn.TransformerEncoder(layer, config.layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(d)
        self.ids = nn.Embedding(config.n_items, d) if config.n_items > 0 else None
        if self.ids is not None:
            nn.init.zeros_(self.ids.weight)  # start from content only; IDs learn the residual
        self.bias_head = nn.Linear(d, 1) if config.item_bias else None
        self.id_bias = nn.Embedding(config.n_items, 1) if config.item_bias and config.n_items > 0 else None
        if self.id_bias is not None:
            nn.init.zeros_(self.id_bias.weight)

    def _apply_tops(self, content: ItemContent) -> ItemContent:
        """Run the trainable encoder tops (if any) on the cached lower states."""
        from dataclasses import replace

        if self.text_top is not None and self.config.modalities != "image":
            content = replace(content, text_tokens=self.text_top(content.text_tokens.float(), content.text_mask))
        if self.image_top is not None and self.config.modalities != "text":
            maps = self.image_top(content.regions.float())
            grid = self.config.image_grid
            # A given pooled vector wins over the head's: explanations vary it to attribute the summary path.
            pooled = content.image_pooled if content.image_pooled is not None else maps.mean(dim=(2, 3))
            content = replace(content, regions=F.adaptive_avg_pool2d(maps, grid).flatten(2).transpose(1, 2),
                              image_pooled=pooled)
        return content

    def forward(self, content: ItemContent, item_index: torch.Tensor | None = None,
                known: torch.Tensor | None = None) -> ItemVectors:
        """Item vectors [N, d] and biases [N]. ``known``: [N] bool, items seen in training (others get no ID part)."""
        cfg = self.config
        n = content.text_tokens.shape[0]
        device = self.item_token.device
        content = self._apply_tops(content)
        parts, masks = [self.item_token.expand(n, 1, -1)], [torch.ones(n, 1, dtype=torch.bool, device=device)]
        if cfg.modalities in ("both", "text"):
            parts.append(self.text_proj(content.text_tokens.float()) + self.modality[0])
            masks.append(content.text_mask)
            if content.text_pooled is not None:
                parts.append(self.text_proj(content.text_pooled.float())[:, None] + self.modality[2])
                masks.append(torch.ones(n, 1, dtype=torch.bool, device=device))
        if cfg.modalities in ("both", "image"):
            parts.append(self.image_proj(content.regions.float()) + self.modality[1])
            masks.append(content.has_image[:, None].expand(n, content.regions.shape[1]))
            if content.image_pooled is not None:
                parts.append(self.image_proj(content.image_pooled.float())[:, None] + self.modality[3])
                masks.append(content.has_image[:, None])
        if cfg.modalities == "both" and self.media_modality is not None:
            for slot, proj, tokens, present in ((0, self.audio_proj, content.audio_tokens, content.audio_mask),
                                                (1, self.video_proj, content.video_tokens, content.video_mask)):
                if proj is not None and tokens is not None:
                    parts.append(proj(tokens.float()) + self.media_modality[slot])
                    masks.append(present)
        tokens = torch.cat(parts, dim=1)
        mask = torch.cat(masks, dim=1).to(tokens.device)
        if cfg.fusion == "transformer":
            fused = self.fuse(tokens, src_key_padding_mask=~mask)[:, 0]
        else:  # ablation: masked mean of the projected tokens, no attention
            weights = mask[:, 1:, None].float()
            fused = (tokens[:, 1:] * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        vectors = self.out_norm(fused)
        bias = self.bias_head(vectors)[:, 0] if self.bias_head is not None else vectors.new_zeros(n)
        if self.ids is not None and item_index is not None:
            keep = torch.ones(n, 1, device=vectors.device)
            if known is not None:
                keep = keep * known[:, None].float()
            if self.training and cfg.id_dropout > 0:
                keep = keep * (torch.rand(n, 1, device=vectors.device) >= cfg.id_dropout).float()
            vectors = vectors + keep * self.ids(item_index)
            if self.id_bias is not None:
                bias = bias + keep[:, 0] * self.id_bias(item_index)[:, 0]
        return ItemVectors(vectors, bias)


class UserTower(nn.Module):
    def __init__(self, config: FusionConfig) -> None:
        super().__init__()
        d = config.width
        self.position = nn.Embedding(config.history_len, d)  # 0 = most recent
        nn.init.normal_(self.position.weight, std=0.02)
        self.query = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.query, std=0.02)
        self.attend = nn.MultiheadAttention(d, config.heads, dropout=config.dropout, batch_first=True)
        self.norm = nn.LayerNorm(d)

    def forward(self, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """``history`` [B, L, d] item vectors, most recent first; ``history_mask`` [B, L] True = real."""
        b, length, _ = history.shape
        keys = history + self.position(torch.arange(length, device=history.device))[None]
        pooled, _ = self.attend(self.query.expand(b, 1, -1), keys, history, key_padding_mask=~history_mask)
        mean = (history * history_mask[..., None]).sum(1) / history_mask.sum(1, keepdim=True).clamp(min=1)
        # Attention picks what matters; the mean is a stable residual that keeps gradients flowing early.
        return self.norm(pooled[:, 0] + mean)


class FusionRecommender(nn.Module):
    def __init__(self, config: FusionConfig, text_top: nn.Module | None = None, image_top: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.items = ItemTower(config, text_top, image_top)
        self.users = UserTower(config)
        self.log_scale = nn.Parameter(torch.tensor(2.0))  # learned temperature of the softmax

    def item_vectors(self, content: ItemContent, item_index: torch.Tensor | None = None,
                     known: torch.Tensor | None = None, batch_size: int = 512) -> ItemVectors:
        out = []
        for start in range(0, content.text_tokens.shape[0], batch_size):
            sl = slice(start, start + batch_size)
            part = content.slice(sl)
            out.append(self.items(part, None if item_index is None else item_index[sl],
                                  None if known is None else known[sl]))
        return ItemVectors(torch.cat([o.vectors for o in out]), torch.cat([o.bias for o in out]))

    def user_vectors(self, items: ItemVectors, history: torch.Tensor, history_mask: torch.Tensor) -> torch.Tensor:
        """``history`` [B, L] item indices into ``items`` (most recent first)."""
        return self.users(items.vectors[history], history_mask)

    def logits(self, users: torch.Tensor, items: ItemVectors) -> torch.Tensor:
        """Scores [B, N]: scaled cosine of user and item vectors plus the item bias."""
        return self.log_scale.exp() * F.normalize(users, dim=-1) @ F.normalize(items.vectors, dim=-1).T + items.bias

    def pair_logits(self, users: torch.Tensor, items: ItemVectors) -> torch.Tensor:
        """Scores [B] of row-aligned (user, item) pairs."""
        cos = (F.normalize(users, dim=-1) * F.normalize(items.vectors, dim=-1)).sum(-1)
        return self.log_scale.exp() * cos + items.bias

    def bce_loss(self, users: torch.Tensor, items: ItemVectors, labels: torch.Tensor) -> torch.Tensor:
        """Explicit like (1) / dislike (0) labels: binary cross-entropy on the paired scores."""
        return F.binary_cross_entropy_with_logits(self.pair_logits(users, items), labels.float())


def make_tops(fusion: FusionConfig, text_encoder=None, image_encoder=None):
    """Fresh copies of the encoder tops a config needs (None where it needs none)."""
    from recsys_core.encoders.tops import make_image_top, make_text_top

    text_top = image_top = None
    if fusion.text_top_layers:
        if text_encoder is None:
            raise ValueError("this model fine-tunes the text encoder's top blocks: pass the text encoder")
        text_top = make_text_top(text_encoder, fusion.text_top_layers, lora_rank=fusion.lora_rank)
    if fusion.image_top:
        if image_encoder is None:
            raise ValueError("this model fine-tunes the CNN head: pass the image encoder")
        image_top = make_image_top(image_encoder)
    return text_top, image_top
