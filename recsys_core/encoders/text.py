"""Text encoder: a BERT-family model with attention-masked mean pooling (sentence-transformers style)."""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import torch
from torch import nn

from recsys_core.config import TextEncoderConfig


class TextEncoder(nn.Module):
    """Wraps a Hugging Face encoder and its tokenizer.

    ``forward`` returns the token states (for attention fusion and token attributions) and the
    mean-pooled sentence vector; ``encode`` is the batched, gradient-free path for feature extraction.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, config: TextEncoderConfig, weights_id: str) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.weights_id = weights_id
        self.model.eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def cache_key(self) -> str:
        """Changes whenever the vectors would: weights, tokenizer length or pooling."""
        raw = f"text|{self.weights_id}|{self.config.max_length}|mean"
        return "text-" + hashlib.sha256(raw.encode()).hexdigest()[:16]

    def embedding_layer(self) -> nn.Module:
        """The token embedding layer (target of LayerIntegratedGradients)."""
        return self.model.get_input_embeddings()

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        return {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        states = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        # Mean over real tokens only; clamp guards an all-padding row.
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return states, pooled

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Pooled vectors for ``texts`` (float32, on CPU), one tokenizer call per batch."""
        from recsys_core.device import extraction_autocast

        out = []
        autocast = extraction_autocast(self.device)  # built once, entered per batch (it is re-enterable)
        for start in range(0, len(texts), self.config.batch_size):
            batch = self.tokenize(texts[start : start + self.config.batch_size])
            with autocast:
                out.append(self(**batch)[1].float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)
