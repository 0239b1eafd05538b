"""The product's models behind the evaluation's ``Recommender`` interface.

:class:`HybridScorer` is ``multimodal``: the hybrid of content and collaborative parts
(:mod:`recsys_core.model.hybrid`), its weights chosen on the protocol's validation split (never
test), then fitted on the training split. :class:`FusionScorer` is the two-tower fusion model
(``fusion*`` in ``--models``), kept as an ablation: its ``fit`` trains on the protocol's training split (with timestamps, for history order) exactly as
``python -m recsys_core.train`` does and keeps the checkpoint under ``<data dir>/checkpoints/``;
``score`` maps the model's catalog order onto the evaluation's item index.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recsys_core.evaluation.baselines import InteractionData
from recsys_core.model.checkpoint import fingerprint, save_checkpoint
from recsys_core.training.config import TrainConfig
from recsys_core.training.loop import default_val_mode, fit_for_split

log = logging.getLogger(__name__)


class FusionScorer:
    def __init__(self, split, data_root: Path, data_dir: Path, *, seed: int = 0, modalities: str = "both",
                 use_ids: bool = True, fusion: str = "transformer", name: str = "fusion",
                 strategy: str = "frozen") -> None:
        self.name = name
        self.split = split
        self.data_root = Path(data_root)
        self.data_dir = Path(data_dir)
        self.seed = seed
        self.modalities = modalities
        self.use_ids = use_ids
        self.fusion = fusion
        self.strategy = strategy
        self.data: InteractionData | None = None

    def fit(self, data: InteractionData) -> "FusionScorer":
        self.data = data
        self.trained, catalog = fit_for_split(self.split, self.data_root, self.data_dir, modalities=self.modalities,
                                              fusion_kind=self.fusion, use_ids=self.use_ids,
                                              train=TrainConfig(seed=self.seed, val_mode=default_val_mode(self.split.protocol),
                                                                strategy=self.strategy,
                                                                text_layers=2 if self.strategy == "lora" else 1))
        self.columns = np.array([data.item_index[i] for i in catalog.ids])
        self.histories = dict(zip(self.trained.interactions.users, self.trained.interactions.histories))
        out = self.data_dir / "checkpoints" / f"{self.split.protocol}-{self.name}"
        save_checkpoint(self.trained, out,
                        metrics={"best_val_ndcg@20": max(h["val_ndcg@20"] for h in self.trained.history),
                                 "protocol": self.split.protocol},
                        fingerprint_info=fingerprint(self.split.train, catalog),
                        encoders={"text": "minilm", "image": "efficientnet-lite0"})
        log.info("%s: checkpoint in %s", self.name, out)
        return self

    def score(self, user_indices) -> np.ndarray:
        assert self.data is not None, "fit first"
        users = [self.data.user_ids[int(u)] for u in user_indices]
        hists = [self.histories.get(u, []) for u in users]
        out = np.zeros((len(users), self.data.n_items), dtype=np.float32)
        rows = [r for r, h in enumerate(hists) if h]  # a user without history has no profile: all zeros
        if rows:
            scores = self.trained.score_users([hists[r] for r in rows]).numpy()
            out[np.ix_(rows, self.columns)] = scores
        return out


class HybridScorer:
    """``multimodal``: settings chosen on the validation split of ``split.protocol``, then fitted on ``split.train``.

    ``fixed`` holds settings out of the selection (ablations: ``content_share=1.0`` is content only,
    ``0.0`` collaborative only, ``side_content=0, side_genre=0`` plain EASE inside the hybrid);
    ``zeroshot`` (text/image weights) builds the content part (``text_weight=1, image_weight=0``: text only).
    """

    def __init__(self, split, data_root: Path, data_dir: Path, *, seed: int = 0, name: str = "multimodal",
                 fixed: dict | None = None, zeroshot: dict | None = None) -> None:
        self.name = name
        self.split = split
        self.data_root = Path(data_root)
        self.data_dir = Path(data_dir)
        self.seed = seed
        self.fixed = dict(fixed or {})
        self.zeroshot_options = dict(zeroshot or {})
        self.data: InteractionData | None = None

    def fit(self, data: InteractionData) -> "HybridScorer":
        import time

        from recsys_core.config import ImageEncoderConfig, TextEncoderConfig, ZeroShotConfig
        from recsys_core.data.adapters import load_movielens_100k
        from recsys_core.encoders.features import encode_catalog
        from recsys_core.serving.zeroshot import ZeroShotModel
        from recsys_core.training.hybrid import fit_hybrid, select_on_validation

        started = time.perf_counter()
        self.data = data
        catalog = load_movielens_100k(self.data_root)
        features = encode_catalog(catalog, TextEncoderConfig(), ImageEncoderConfig(), self.data_dir / "features").features
        # A one-modality ablation (e.g. multimodal-audio) on a catalog without that modality is refused here
        # (ZeroShotModel: every present modality would have weight 0).
        zeroshot = ZeroShotModel(features, ZeroShotConfig(**self.zeroshot_options))
        selection = select_on_validation(self.data_root, self.split.protocol, catalog, zeroshot, fixed=self.fixed,
                                         seed=self.seed)
        self.selection = selection
        self.fitted = fit_hybrid(self.split.train, catalog, zeroshot, selection.config, selection=selection,
                                 seed=self.seed, started=started)
        self.columns = np.array([data.item_index[i] for i in catalog.ids])
        self._matrix = self.fitted.matrix
        self._rows = {u: r for r, u in enumerate(self.fitted.users)}
        log.info("%s: %s (validation NDCG@20 %.4f)", self.name, selection.config.to_json(), selection.ndcg)
        return self

    def score(self, user_indices) -> np.ndarray:
        import torch

        assert self.data is not None, "fit first"
        serving = self.fitted.serving
        out = np.zeros((len(user_indices), self.data.n_items), dtype=np.float64)
        for row, u in enumerate(user_indices):
            r = self._rows.get(self.data.user_ids[int(u)])
            if r is None:
                continue  # no training history: no profile
            liked = self._matrix.indices[self._matrix.indptr[r]:self._matrix.indptr[r + 1]].tolist()
            with torch.no_grad():
                out[row, self.columns] = (serving.item_vectors @ serving.profile(liked)).numpy()
        return out
