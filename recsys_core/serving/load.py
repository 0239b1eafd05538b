"""Load any checkpoint folder as a :class:`recsys_core.serving.protocol.ServingModel` (hybrid or fusion)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from recsys_core.config import ZeroShotConfig
from recsys_core.errors import CatalogError
from recsys_core.model import checkpoint
from recsys_core.model.hybrid import CollaborativePart
from recsys_core.serving.hybrid import HybridServing
from recsys_core.serving.protocol import ServingModel
from recsys_core.serving.zeroshot import ZeroShotModel

log = logging.getLogger(__name__)


def load_hybrid_serving(folder: Path, catalog, features, zeroshot: ZeroShotModel | None = None) -> HybridServing:
    """A hybrid checkpoint for ``catalog``; on another catalog its collaborative part cannot index the items,
    so it serves its content part only (logged)."""
    try:
        saved = checkpoint.load_hybrid(Path(folder))
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as exc:
        raise CatalogError(f"checkpoint {folder} cannot be loaded by this version ({type(exc).__name__}: "
                           f"{str(exc)[:300]}); retrain it with python -m recsys_core.train") from exc
    zs_config = ZeroShotConfig.from_dict(saved.zeroshot)
    if zeroshot is None or zeroshot.config != zs_config:
        zeroshot = ZeroShotModel(features, zs_config)
    collab = saved.collab
    if list(saved.item_ids) != list(catalog.ids):
        log.warning("checkpoint %s was trained on another catalog: serving its content part only", folder)
        collab = CollaborativePart.empty(len(catalog))
    return HybridServing(zeroshot, collab, saved.config, version=checkpoint.checkpoint_version(Path(folder)))


def load_model(folder: Path, catalog, features, *, zeroshot: ZeroShotModel | None, text_encoder, image_encoder,
               cache_dir: Path | None, max_pixels: int = 40_000_000) -> ServingModel:
    """The served model of checkpoint ``folder``, whichever kind it is."""
    folder = Path(folder)
    missing = checkpoint.missing_files(folder)
    if missing:
        raise CatalogError(f"{folder} is not a model checkpoint: {missing[0]} is missing "
                           "(expected a folder written by python -m recsys_core.train)")
    if checkpoint.checkpoint_kind(folder) == checkpoint.HYBRID:
        return load_hybrid_serving(folder, catalog, features, zeroshot)
    from recsys_core.serving.finetuned import load_serving

    return load_serving(folder, catalog, features, text_encoder, image_encoder, cache_dir, max_pixels)
