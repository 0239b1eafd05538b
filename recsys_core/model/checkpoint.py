"""The checkpoint folder: the only code that knows its layout (file names, formats, version naming).

Two kinds share the layout, told apart by ``config.json``'s ``"kind"``: ``hybrid`` (the product's
``multimodal`` model: the hybrid config, the zero-shot config of its content part, and the
collaborative part's arrays in ``model.safetensors``) and ``fusion`` (the two-tower model; older
checkpoints have no ``"kind"`` and are fusion).

A fusion checkpoint folder holds ``config.json`` (fusion and training configs, encoder names),
``model.safetensors``, ``items.json`` (which catalog its ID table indexes and which items had
training interactions), ``metrics.json``, ``fingerprint.json`` (the data it saw),
``interactions.csv.gz`` (its training interactions, replayed by later fine-tunes) and
``val_ndcg.png``. It is written to ``<folder>.tmp`` and renamed, so a crash never leaves half a
checkpoint. The trainer writes through :func:`save_checkpoint`; serving, the fine-tune, the app's
``--model`` check and the job's clean-up read through the functions below.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

# torch only where a model is read or written: the app's --model check and the job's clean-up stay light.
if TYPE_CHECKING:
    import torch

    from recsys_core.data.catalog import Catalog
    from recsys_core.model.fusion import FusionConfig, FusionRecommender
    from recsys_core.model.hybrid import CollaborativePart, HybridConfig

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
ITEMS = "items.json"
METRICS = "metrics.json"
FINGERPRINT = "fingerprint.json"
INTERACTIONS = "interactions.csv.gz"
PLOT = "val_ndcg.png"
REQUIRED = (CONFIG, WEIGHTS)  # what loading needs; the rest describes the model
TMP_SUFFIX = ".tmp"  # an unfinished checkpoint: never registered, never served


class Trained(Protocol):
    """What :func:`save_checkpoint` reads of a trained model (``recsys_core.training.loop.TrainedModel``)."""

    model: FusionRecommender
    fusion: FusionConfig
    train: Any  # a TrainConfig dataclass, saved with asdict
    history: list[dict[str, float]]
    seconds: float
    frame: object | None
    interactions: Any  # .item_ids (catalog order of the ID table), .known_items ([N] bool)


@dataclass(frozen=True)
class CheckpointItems:
    """``items.json``: the catalog order the ID table indexes, and which items had training interactions."""

    item_ids: tuple[str, ...]
    known: tuple[bool, ...]

    def known_for(self, item_ids: Sequence[str]) -> torch.Tensor | None:
        """The known-items mask for a catalog in ``item_ids`` order, or None when it is another catalog."""
        import torch

        if list(self.item_ids) != list(item_ids):
            return None
        return torch.tensor(self.known, dtype=torch.bool)


def missing_files(folder: Path) -> list[str]:
    """The files loading needs that ``folder`` lacks (empty: it is a checkpoint)."""
    return [name for name in REQUIRED if not (Path(folder) / name).is_file()]


def is_checkpoint(folder: Path) -> bool:
    return not missing_files(folder)


def checkpoint_version(folder: Path) -> str:
    weights = Path(folder) / WEIGHTS
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    return f"multimodal-{digest}"


def unfinished(parent: Path) -> list[Path]:
    """Checkpoints under ``parent`` left half-written by a process that died before the rename."""
    return sorted(Path(parent).glob("*" + TMP_SUFFIX))


def drop_weights(folder: Path) -> int:
    """Delete a checkpoint folder's weights and interactions, keeping the files that describe it (config, metrics,
    items, fingerprint), so it is no longer loadable; returns the bytes freed. For a candidate that is never
    registered because it is the model it was trained from (the hybrid fine-tune's "unchanged")."""
    freed = 0
    for name in (WEIGHTS, INTERACTIONS):
        path = Path(folder) / name
        if path.is_file():
            freed += path.stat().st_size
            path.unlink()
    return freed


def read_items(folder: Path) -> CheckpointItems | None:
    path = Path(folder) / ITEMS
    if not path.is_file():
        return None
    saved = json.loads(path.read_text())
    return CheckpointItems(tuple(saved["item_ids"]), tuple(bool(k) for k in saved["known"]))


def read_interactions(folder: Path):
    """The training interactions saved with the model (user_id, item_id, timestamp), or None."""
    path = Path(folder) / INTERACTIONS
    if not path.is_file():
        return None
    import pandas as pd

    return pd.read_csv(path, dtype={"user_id": str, "item_id": str})


def read_metrics(folder: Path) -> dict:
    return json.loads((Path(folder) / METRICS).read_text())


def fingerprint(frame, catalog: Catalog) -> dict[str, object]:
    rows = frame[["user_id", "item_id"]].astype(str).agg("|".join, axis=1).sort_values()
    return {
        "interactions": int(len(frame)),
        "interactions_sha256": hashlib.sha256("\n".join(rows).encode()).hexdigest(),
        "catalog": catalog.name,
        "items": len(catalog),
        "items_sha256": hashlib.sha256("\n".join(catalog.ids).encode()).hexdigest(),
    }


def save_checkpoint(trained: Trained, out: Path, *, metrics: dict, fingerprint_info: dict,
                    encoders: dict[str, str]) -> None:
    """Everything written to a temporary folder first, then renamed: a crash never leaves half a checkpoint."""
    from safetensors.torch import save_file

    tmp = out.with_name(out.name + TMP_SUFFIX)
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in trained.model.state_dict().items()}, str(tmp / WEIGHTS))
    (tmp / CONFIG).write_text(json.dumps({"fusion": asdict(trained.fusion), "train": asdict(trained.train),
                                                 "encoders": encoders}, indent=2))
    (tmp / METRICS).write_text(json.dumps({**metrics, "history": trained.history,
                                                  "train_seconds": trained.seconds}, indent=2))
    (tmp / FINGERPRINT).write_text(json.dumps(fingerprint_info, indent=2))
    frame = trained.frame
    if frame is not None and len(frame):  # type: ignore[arg-type]
        # The training interactions travel with the model: a later fine-tune on labels replays them so the
        # model does not forget what it learned (label-only fine-tuning did: offline NDCG@20 0.262 -> 0.030).
        cols = [c for c in ("user_id", "item_id", "timestamp") if c in frame.columns]  # type: ignore[union-attr]
        frame[cols].to_csv(tmp / INTERACTIONS, index=False)  # type: ignore[index]
    # Which catalog the ID table indexes, and which items had training interactions (they get an ID part).
    (tmp / ITEMS).write_text(json.dumps({"item_ids": list(trained.interactions.item_ids),
                                                "known": trained.interactions.known_items.tolist()}))
    plot_history(trained.history, tmp / PLOT)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)


HYBRID = "hybrid"
FUSION = "fusion"


def checkpoint_kind(folder: Path) -> str:
    """``hybrid`` or ``fusion`` (a config without a kind is an older fusion checkpoint)."""
    return json.loads((Path(folder) / CONFIG).read_text()).get("kind", FUSION)


def read_config(folder: Path) -> dict:
    return json.loads((Path(folder) / CONFIG).read_text())


@dataclass(frozen=True)
class HybridCheckpoint:
    config: HybridConfig
    zeroshot: dict  # the ZeroShotConfig of the content part (recsys_core.config.ZeroShotConfig.from_dict)
    collab: CollaborativePart
    item_ids: tuple[str, ...]  # the catalog order of the arrays
    encoders: dict


def save_hybrid(out: Path, *, config: HybridConfig, zeroshot: dict, collab: CollaborativePart,
                item_ids: Sequence[str], frame, metrics: dict, fingerprint_info: dict, encoders: dict[str, str]) -> None:
    """Write a hybrid checkpoint (to ``<out>.tmp``, then renamed, like :func:`save_checkpoint`)."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    tmp = out.with_name(out.name + TMP_SUFFIX)
    tmp.mkdir(parents=True, exist_ok=True)
    tensors = {"right": torch.from_numpy(np.ascontiguousarray(collab.right, dtype=np.float32)),
               "prior": torch.from_numpy(np.ascontiguousarray(collab.prior, dtype=np.float32)),
               "known": torch.from_numpy(collab.known.astype(np.uint8))}
    if collab.left is not None:
        tensors["left"] = torch.from_numpy(np.ascontiguousarray(collab.left, dtype=np.float32))
    save_file(tensors, str(tmp / WEIGHTS))
    (tmp / CONFIG).write_text(json.dumps({"kind": HYBRID, "hybrid": config.to_dict(), "zeroshot": zeroshot,
                                          "encoders": encoders}, indent=2))
    (tmp / METRICS).write_text(json.dumps(metrics, indent=2, default=str))
    (tmp / FINGERPRINT).write_text(json.dumps(fingerprint_info, indent=2))
    if frame is not None and len(frame):
        cols = [c for c in ("user_id", "item_id", "timestamp") if c in frame.columns]
        frame[cols].to_csv(tmp / INTERACTIONS, index=False)
    (tmp / ITEMS).write_text(json.dumps({"item_ids": list(item_ids), "known": collab.known.tolist()}))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    os.replace(tmp, out)


def load_hybrid(folder: Path) -> HybridCheckpoint:
    from safetensors.numpy import load_file

    from recsys_core.model.hybrid import CollaborativePart, HybridConfig

    config = read_config(folder)
    arrays = load_file(str(Path(folder) / WEIGHTS))
    collab = CollaborativePart(right=arrays["right"], left=arrays.get("left"), prior=arrays["prior"],
                               known=arrays["known"].astype(bool))
    items = read_items(folder)
    item_ids = items.item_ids if items is not None else tuple()
    if len(item_ids) != collab.right.shape[0]:
        raise ValueError(f"{folder}: items.json lists {len(item_ids)} items, the arrays {collab.right.shape[0]}")
    return HybridCheckpoint(HybridConfig.from_dict(config["hybrid"]), dict(config.get("zeroshot", {})), collab,
                            tuple(item_ids), dict(config.get("encoders", {})))


def load_checkpoint(folder: Path, text_encoder=None, image_encoder=None) -> tuple[FusionRecommender, dict]:
    """Rebuild the model from ``config.json`` and load ``model.safetensors``; returns (model, config dict).

    Models trained with ``top-layers``/``lora`` carry their encoder tops; the encoders they were cut
    from are needed to rebuild their structure before the weights are loaded.
    """
    from safetensors.torch import load_file

    from recsys_core.model.fusion import FusionConfig, FusionRecommender, make_tops

    config = json.loads((Path(folder) / CONFIG).read_text())
    if config.get("kind", FUSION) != FUSION:
        raise ValueError(f"{folder} holds a {config['kind']} model, not a fusion model")
    fusion = FusionConfig(**config["fusion"])
    model = FusionRecommender(fusion, *make_tops(fusion, text_encoder, image_encoder))
    model.load_state_dict(load_file(str(Path(folder) / WEIGHTS)))
    model.eval()
    return model, config


def plot_history(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["epoch"] for h in history], [h["val_ndcg@20"] for h in history], marker="o", ms=3)
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation NDCG@20")
    ax.set_title("Fine-tuning: validation NDCG@20 per epoch")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
