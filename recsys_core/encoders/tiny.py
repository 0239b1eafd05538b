"""Tiny, seeded, randomly initialised encoders for unit tests and quick demos (``tiny-random``).

They have the same interfaces as the real ones (token states + pooled vector; a 7x7 feature map)
but a few thousand parameters, so the whole pipeline runs in milliseconds without any weights.
"""

from __future__ import annotations

import string

import torch
from torch import nn

from recsys_core.config import TextEncoderConfig
from recsys_core.encoders.text import TextEncoder

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["board", "card", "chess", "game", "puzzle", "logic", "arcade", "space", "shooter", "strategy", "racing"]


def _vocab() -> dict[str, int]:
    chars = list(string.ascii_lowercase + string.digits)
    tokens = SPECIAL + chars + ["##" + c for c in chars] + list(string.punctuation) + WORDS
    return {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}


def tiny_text_encoder(config: TextEncoderConfig | None = None, *, hidden: int = 32, seed: int = 0) -> TextEncoder:
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = _vocab()
    torch.manual_seed(seed)
    bert = BertModel(
        BertConfig(
            vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=2 * hidden, max_position_embeddings=512,
        ),
        add_pooling_layer=False,
    )
    config = config or TextEncoderConfig(model="tiny-random", max_length=64)
    return TextEncoder(bert, BertTokenizer(vocab=vocab), config, weights_id=f"tiny-random-{hidden}-{seed}")


class TinyCNN(nn.Module):
    """Two strided convolutions and a 7x7 pool: the shape contract of a timm backbone, nothing more."""

    def __init__(self, channels: int = 16) -> None:
        super().__init__()
        self.num_features = channels
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU(),
            nn.Conv2d(8, channels, 3, stride=4, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(7),
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def cam_layer(self) -> nn.Module:
        return self.features[-1]

    def split_head(self) -> tuple[nn.Module, nn.Module]:
        """(lower, head) for the ``top-layers`` strategy: head(lower(x)) == forward_features(x)."""
        return self.features[:2], self.features[2:]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x).mean(dim=(2, 3))


def tiny_image_backbone(channels: int = 16, seed: int = 0) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(channels)


class TinyAudioNet(nn.Module):
    """Spectrogram blocks [B, 100, 96] -> [B, 16]: the shape contract of the aisfx CNN, seeded and random."""

    def __init__(self, dim: int = 16, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Sequential(nn.Conv2d(1, 8, 5, stride=4, padding=2), nn.ReLU(),
                                  nn.Conv2d(8, dim, 3, stride=2, padding=1), nn.ReLU())

    def forward(self, blocks: torch.Tensor) -> torch.Tensor:
        return self.conv(blocks.unsqueeze(1)).amax(dim=(2, 3))
