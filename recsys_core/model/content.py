"""Inputs of the fusion model's item tower, built from the frozen encoders (cached on disk).

The item tower reads, per item: the text encoder's token states over a short text (title, genres,
start of the description), the CNN's final feature map pooled to ``grid x grid`` regions, the
whole-item summaries (mean-pooled sentence vector, pooled CNN vector) that the feature cache holds,
and, for a catalog with audio or video, the cached segment / keyframe vectors pooled over time.
Training, serving a checkpoint and embedding an upload all build these the same way, here.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from recsys_core.data.catalog import Catalog
from recsys_core.model.fusion import FusionConfig, ItemContent

TOKEN_BATCH = 64


def token_text(item) -> str:
    """Genres before the plot, so a short token budget keeps them."""
    genres = ", ".join(item.genres)
    return f"{item.title}. Genres: {genres}. {item.description}" if genres else f"{item.title}. {item.description}"


@torch.inference_mode()
def token_states(text_encoder, texts: Sequence[str], max_tokens: int, progress: bool = False,
                 below_top: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Token states [N, max_tokens, D] (float16, CPU) and masks [N, max_tokens] for ``texts``.

    ``below_top`` > 0: the hidden states entering the top ``below_top`` blocks instead of the final ones.
    """
    from tqdm.auto import tqdm

    from recsys_core.encoders.tops import lower_text_states

    chunks, masks = [], []
    tok = text_encoder.tokenizer
    starts = range(0, len(texts), TOKEN_BATCH)
    for start in tqdm(starts, desc="token states", unit="batch", disable=not progress):
        batch = tok(list(texts[start : start + TOKEN_BATCH]), padding="max_length", truncation=True,
                    max_length=max_tokens, return_tensors="pt")
        ids, mask = batch["input_ids"].to(text_encoder.device), batch["attention_mask"].to(text_encoder.device)
        if below_top:
            states = lower_text_states(text_encoder, ids, mask, below_top)
        else:
            states, _ = text_encoder(ids, mask)
        chunks.append(states.half().cpu())
        masks.append(batch["attention_mask"].bool())
    return torch.cat(chunks), torch.cat(masks)


def pool_regions(regions: torch.Tensor, grid: int) -> torch.Tensor:
    """[N, C, H, W] feature maps -> [N, grid*grid, C] region vectors (float16)."""
    return F.adaptive_avg_pool2d(regions.float(), grid).flatten(2).transpose(1, 2).half()


def _cached(path: Path | None, compute):
    """``torch.load(path)`` if present, else ``compute()`` saved atomically (a crash never leaves half a file)."""
    if path is not None and path.is_file():
        try:
            return torch.load(path, weights_only=True)
        except Exception:  # a corrupt cache file is recomputed, never trusted
            path.unlink(missing_ok=True)
    value = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(value, tmp)
        os.replace(tmp, path)
    return value


@torch.inference_mode()
def lower_image_maps(catalog: Catalog, image_encoder, has_image: torch.Tensor, max_pixels: int,
                     progress: bool = False) -> torch.Tensor:
    """The CNN maps entering its head, [N, C_low, H, W] float16 (zeros for items without an image)."""
    from tqdm.auto import tqdm

    from recsys_core.encoders.tops import lower_image_maps as lower
    from recsys_core.errors import InvalidInputError
    from recsys_core.data.images import load_image

    rows = [i for i in range(len(catalog)) if bool(has_image[i])]
    out: torch.Tensor | None = None
    batch = image_encoder.config.batch_size
    for start in tqdm(range(0, len(rows), batch), desc="image maps below the head", unit="batch", disable=not progress):
        chunk, images = [], []
        for i in rows[start : start + batch]:
            try:
                images.append(load_image(catalog.items[i].image, max_pixels=max_pixels, max_bytes=1 << 30))
                chunk.append(i)
            except InvalidInputError:
                continue  # the feature extraction already reported it; the item keeps has_image for the mask only
        if not images:
            continue
        maps = lower(image_encoder, image_encoder.preprocess(images)).half().cpu()
        if out is None:
            out = torch.zeros(len(catalog), *maps.shape[1:], dtype=torch.float16)
        out[chunk] = maps
    if out is None:  # no image at all: shape from a blank image
        from PIL import Image

        blank = lower(image_encoder, image_encoder.preprocess([Image.new("RGB", (32, 32))])).half().cpu()
        out = torch.zeros(len(catalog), *blank.shape[1:], dtype=torch.float16)
    return out


def media_dims(features) -> dict[str, int]:
    """``FusionConfig`` widths of the audio / video tokens of a catalog's features (0 where it has none)."""
    return {"audio_dim": features.audio.dim if getattr(features, "audio", None) is not None else 0,
            "video_dim": features.video.dim if getattr(features, "video", None) is not None else 0}


def media_tokens(sequences, count: int) -> tuple[torch.Tensor, torch.Tensor] | tuple[None, None]:
    """Each item's segments / keyframes average-pooled over time to at most ``count`` tokens: [N, count, D] float16
    and a mask [N, count] (False past an item's own steps, all False for an item without the modality)."""
    if sequences is None:
        return None, None
    n, dim = sequences.pooled.shape
    tokens = torch.zeros(n, count, dim, dtype=torch.float16)
    mask = torch.zeros(n, count, dtype=torch.bool)
    for i, steps in enumerate(sequences.steps):
        if steps is None:
            continue
        vectors = steps.vectors.float()
        m = min(count, vectors.shape[0])
        tokens[i, :m] = F.adaptive_avg_pool1d(vectors.T[None], m)[0].T.half()
        mask[i, :m] = True
    return tokens, mask


def build_content(catalog: Catalog, text_encoder, regions: torch.Tensor | None, has_image: torch.Tensor,
                  config: FusionConfig, cache_dir: Path | None, text_pooled: torch.Tensor | None = None,
                  image_pooled: torch.Tensor | None = None, progress: bool = True, image_encoder=None,
                  max_pixels: int = 40_000_000, audio=None, video=None) -> ItemContent:
    """Inputs of the item tower from the frozen encoders, cached on disk (fp16).

    With ``config.text_top_layers`` the token states are those entering the trainable top blocks;
    with ``config.image_top`` the regions are the CNN maps entering its head (needs ``image_encoder``).
    ``audio`` / ``video``: the catalog's ``SequenceFeatures`` (read when ``config.audio_dim`` / ``video_dim`` > 0).
    """
    texts = [token_text(item) for item in catalog.items]
    below = config.text_top_layers
    raw = "|".join(texts) + f"|{text_encoder.cache_key}|{config.max_text_tokens}" + (f"|below{below}" if below else "")
    key = hashlib.sha256(raw.encode()).hexdigest()[:16]
    tokens, mask = _cached(cache_dir / f"tokens-{key}.pt" if cache_dir else None,
                           lambda: token_states(text_encoder, texts, config.max_text_tokens, progress=progress,
                                                below_top=below))
    grid = config.image_grid
    if config.image_top:
        if image_encoder is None:
            raise ValueError("image_top needs the image encoder to compute the maps below its head")
        paths = "|".join(f"{item.image}" for item in catalog.items)
        ikey = hashlib.sha256(f"{paths}|{image_encoder.cache_key}|lower".encode()).hexdigest()[:16]
        pooled = _cached(cache_dir / f"image-lower-{ikey}.pt" if cache_dir else None,
                         lambda: lower_image_maps(catalog, image_encoder, has_image, max_pixels, progress))
    elif regions is None:
        pooled = torch.zeros(len(catalog), grid * grid, config.image_dim, dtype=torch.float16)
    else:
        pooled = pool_regions(regions, grid)
    audio_tokens, audio_mask = media_tokens(audio if config.audio_dim else None, config.max_media_tokens)
    video_tokens, video_mask = media_tokens(video if config.video_dim else None, config.max_media_tokens)
    return ItemContent(text_tokens=tokens, text_mask=mask, regions=pooled, has_image=has_image.clone(),
                       text_pooled=text_pooled,
                       # With a trainable head the summary is the mean of its output (computed in the tower).
                       image_pooled=None if config.image_top else image_pooled,
                       audio_tokens=audio_tokens, audio_mask=audio_mask, video_tokens=video_tokens,
                       video_mask=video_mask)
