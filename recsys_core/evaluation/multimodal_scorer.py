"""The fine-tuned multimodal model behind the evaluation's ``Recommender`` interface.

``fit`` trains on the protocol's training split (with timestamps, for history order) exactly as
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


class MultimodalScorer:
    def __init__(self, split, data_root: Path, data_dir: Path, *, seed: int = 0, modalities: str = "both",
                 use_ids: bool = True, fusion: str = "transformer", name: str = "multimodal",
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

    def fit(self, data: InteractionData) -> "MultimodalScorer":
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
