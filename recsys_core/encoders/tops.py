"""Trainable tops of the pretrained encoders, for the ``top-layers`` and ``lora`` strategies.

Running a whole encoder over the whole catalog at every training step is far too slow on a CPU,
so the encoder is split: everything below the top is run once and cached (like ``frozen``), and
only the top trains.

- text: the top ``n`` Transformer blocks of the BERT-family encoder (copied, so the encoder the app
  uses for features and explanations is untouched), reading the cached hidden states that enter
  block ``L - n``; ``lora`` keeps those blocks frozen and trains LoRA adapters (``peft``) on their
  query/value projections instead.
- image: the CNN's head (EfficientNet's final 1x1 convolution + BatchNorm, which makes the
  1280-channel map the item tower reads), reading the cached map that enters it.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

LORA_TARGETS = ("query", "value")


class TextTop(nn.Module):
    """The top blocks of a BERT-family encoder: cached lower states [N, T, D] -> final token states."""

    def __init__(self, blocks: Sequence[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # Additive mask [N, 1, 1, T]: what BertModel itself passes to its blocks (eager and SDPA both accept it).
        additive = (1.0 - mask[:, None, None, :].to(states.dtype)) * torch.finfo(states.dtype).min
        for block in self.blocks:
            out = block(states, attention_mask=additive)
            states = out[0] if isinstance(out, tuple) else out
        return states


class ImageTop(nn.Module):
    """The CNN head: cached lower map [N, C_low, H, W] -> final map [N, C, H, W]."""

    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.head(maps)

    def train(self, mode: bool = True) -> "ImageTop":
        # BatchNorm keeps its pretrained statistics: a training batch here is a whole catalog slice of
        # very different images, and running statistics from it would drift from what serving sees.
        super().train(mode)
        self.head.eval()
        return self


def text_blocks(text_encoder) -> nn.ModuleList:
    model = text_encoder.model
    encoder = getattr(model, "encoder", None)
    blocks = getattr(encoder, "layer", None)
    if blocks is None:
        raise ValueError(f"cannot find the Transformer blocks of {type(model).__name__} (expected model.encoder.layer)")
    return blocks


def make_text_top(text_encoder, n_layers: int, lora_rank: int = 0, lora_alpha: int = 16,
                  lora_dropout: float = 0.05) -> TextTop:
    """A copy of the top ``n_layers`` blocks; with ``lora_rank`` > 0 they are frozen and get LoRA adapters."""
    blocks = text_blocks(text_encoder)
    if not 1 <= n_layers <= len(blocks):
        raise ValueError(f"cannot unfreeze {n_layers} text layers: the encoder has {len(blocks)}")
    top = TextTop([copy.deepcopy(b) for b in blocks[len(blocks) - n_layers :]])
    for p in top.parameters():
        p.requires_grad_(lora_rank == 0)
    if lora_rank > 0:
        from peft import LoraConfig, inject_adapter_in_model

        config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
                            target_modules=list(LORA_TARGETS), bias="none")
        top = inject_adapter_in_model(config, top)
        for name, p in top.named_parameters():
            p.requires_grad_("lora_" in name)
    return top


def image_split(image_encoder) -> tuple[nn.Module, nn.Module]:
    """(lower, head) of the CNN: ``head(lower(pixels))`` is the final feature map."""
    backbone = image_encoder.backbone
    if hasattr(backbone, "split_head"):
        return backbone.split_head()
    if all(hasattr(backbone, n) for n in ("conv_stem", "bn1", "blocks", "conv_head", "bn2")):  # timm EfficientNet/MobileNet
        lower = nn.Sequential(backbone.conv_stem, backbone.bn1, backbone.blocks)
        return lower, nn.Sequential(backbone.conv_head, backbone.bn2)
    raise ValueError(f"top-layers on images needs an EfficientNet-style CNN; {type(backbone).__name__} has no conv_head")


def make_image_top(image_encoder) -> ImageTop:
    _, head = image_split(image_encoder)
    return ImageTop(copy.deepcopy(head))


@torch.inference_mode()
def lower_text_states(text_encoder, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Hidden states entering the top ``n_layers`` blocks."""
    out = text_encoder.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return out.hidden_states[-n_layers - 1]


@torch.inference_mode()
def lower_image_maps(image_encoder, pixels: torch.Tensor) -> torch.Tensor:
    lower, _ = image_split(image_encoder)
    return lower(pixels)
