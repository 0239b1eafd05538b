"""Inputs of the fusion model's item tower, built from the frozen encoders (cached on disk).

The item tower reads, per item: the text encoder's token states over a short text (title, genres,
start of the description), the CNN's final feature map pooled to ``grid x grid`` regions, and the
whole-item summaries (mean-pooled sentence vector, pooled CNN vector) that the feature cache holds.
Training, serving a checkpoint and embedding an upload all build these the same way, here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from recsys_core.catalog import Catalog
from recsys_core.model import FusionConfig, ItemContent

TOKEN_BATCH = 64


def token_text(item) -> str:
    """Genres before the plot, so a short token budget keeps them."""
    genres = ", ".join(item.genres)
    return f"{item.title}. Genres: {genres}. {item.description}" if genres else f"{item.title}. {item.description}"


@torch.inference_mode()
def token_states(text_encoder, texts: Sequence[str], max_tokens: int, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states [N, max_tokens, D] (float16, CPU) and masks [N, max_tokens] for ``texts``."""
    from tqdm.auto import tqdm

    chunks, masks = [], []
    tok = text_encoder.tokenizer
    starts = range(0, len(texts), TOKEN_BATCH)
    for start in tqdm(starts, desc="token states", unit="batch", disable=not progress):
        batch = tok(list(texts[start : start + TOKEN_BATCH]), padding="max_length", truncation=True,
                    max_length=max_tokens, return_tensors="pt")
        states, _ = text_encoder(batch["input_ids"].to(text_encoder.device), batch["attention_mask"].to(text_encoder.device))
        chunks.append(states.half().cpu())
        masks.append(batch["attention_mask"].bool())
    return torch.cat(chunks), torch.cat(masks)


def pool_regions(regions: torch.Tensor, grid: int) -> torch.Tensor:
    """[N, C, H, W] feature maps -> [N, grid*grid, C] region vectors (float16)."""
    return F.adaptive_avg_pool2d(regions.float(), grid).flatten(2).transpose(1, 2).half()


def build_content(catalog: Catalog, text_encoder, regions: torch.Tensor | None, has_image: torch.Tensor,
                  config: FusionConfig, cache_dir: Path | None, text_pooled: torch.Tensor | None = None,
                  image_pooled: torch.Tensor | None = None, progress: bool = True) -> ItemContent:
    """Frozen inputs of the item tower, with the token states cached on disk (fp16)."""
    texts = [token_text(item) for item in catalog.items]
    key = hashlib.sha256(("|".join(texts) + f"|{text_encoder.cache_key}|{config.max_text_tokens}").encode()).hexdigest()[:16]
    path = cache_dir / f"tokens-{key}.pt" if cache_dir else None
    if path is not None and path.is_file():
        tokens, mask = torch.load(path, weights_only=True)
    else:
        tokens, mask = token_states(text_encoder, texts, config.max_text_tokens, progress=progress)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            torch.save((tokens, mask), tmp)
            os.replace(tmp, path)  # atomic: a crash never leaves a half-written cache file
    grid = config.image_grid
    if regions is None:
        pooled = torch.zeros(len(catalog), grid * grid, config.image_dim, dtype=torch.float16)
    else:
        pooled = pool_regions(regions, grid)
    return ItemContent(text_tokens=tokens, text_mask=mask, regions=pooled, has_image=has_image.clone(),
                       text_pooled=text_pooled, image_pooled=image_pooled)
