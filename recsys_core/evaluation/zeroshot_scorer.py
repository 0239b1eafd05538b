"""The app's zero-shot model behind the evaluation's ``Recommender`` interface (beside the classical baselines)."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from recsys_core.evaluation.baselines import InteractionData, _Base

log = logging.getLogger(__name__)


class ZeroShotScorer(_Base):
    """The app's zero-shot model (pretrained text + image vectors) used as a recommender.

    A user is scored exactly as the app scores a set of liked items: ``model.profile(train items)``
    dotted with every item vector. Features come from the on-disk cache under ``cache_dir`` (extracted
    once by :func:`recsys_core.encoders.features.encode_catalog`, as the app does), so this is fast after
    the first run.
    ``model`` may be given directly (tests); otherwise it is built from ``catalog_root`` on fit.
    """

    name = "zeroshot"

    def __init__(self, catalog_root: str | Path | None = None, cache_dir: str | Path | None = None, *,
                 model=None, model_item_ids: Sequence[str] | None = None) -> None:
        self.catalog_root = Path(catalog_root) if catalog_root is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.model = model
        self.model_item_ids = tuple(model_item_ids) if model_item_ids is not None else None

    def _build(self) -> None:
        from recsys_core.config import ImageEncoderConfig, TextEncoderConfig, ZeroShotConfig
        from recsys_core.data.adapters import load_movielens_100k
        from recsys_core.encoders.features import encode_catalog
        from recsys_core.serving.zeroshot import ZeroShotModel

        if self.catalog_root is None:
            raise ValueError("ZeroShotScorer needs catalog_root (or a model)")
        catalog = load_movielens_100k(self.catalog_root)
        start = time.perf_counter()
        # The app's default encoders and zero-shot weights: the model the app would serve for this catalog.
        features = encode_catalog(catalog, TextEncoderConfig(), ImageEncoderConfig(), self.cache_dir).features
        log.info("zeroshot: features ready in %.1fs", time.perf_counter() - start)
        self.model = ZeroShotModel(features, ZeroShotConfig())
        self.model_item_ids = tuple(item.item_id for item in catalog.items)

    def fit(self, data: InteractionData) -> "ZeroShotScorer":
        import torch

        self.data = data
        if self.model is None:
            self._build()
        assert self.model is not None and self.model_item_ids is not None
        where = {item: i for i, item in enumerate(self.model_item_ids)}
        # Column j of the evaluation matrix -> row of the model's item vectors (-1: no vector).
        self._rows = np.array([where.get(i, -1) for i in data.item_ids], dtype=np.int64)
        missing = int((self._rows < 0).sum())
        if missing:
            log.warning("zeroshot: %d evaluation item(s) have no vector; they score -inf", missing)
        vectors = self.model.item_vectors
        self._item_vectors = torch.zeros(len(data.item_ids), vectors.shape[1], dtype=vectors.dtype)
        have = self._rows >= 0
        self._item_vectors[torch.from_numpy(np.flatnonzero(have))] = vectors[torch.from_numpy(self._rows[have])]
        return self

    def score(self, user_indices) -> np.ndarray:
        import torch

        data = self._data()
        assert self.model is not None
        out = np.zeros((len(user_indices), data.n_items))
        for row, u in enumerate(np.asarray(user_indices, dtype=np.int64)):
            liked = [int(r) for r in self._rows[data.items_of(int(u))] if r >= 0]
            if not liked:
                continue
            with torch.no_grad():
                out[row] = (self._item_vectors @ self.model.profile(liked)).numpy()
        out[:, self._rows < 0] = -math.inf
        return out
