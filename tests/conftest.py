"""Shared fixtures. Tests are offline, seeded and single-threaded (stable timings on 2 cores)."""

from __future__ import annotations

import os

# Before anything imports transformers/huggingface_hub: never touch the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from recsys_core.catalog import load_catalog_folder
from recsys_core.config import ServiceConfig, TextEncoderConfig
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.tiny import tiny_image_backbone, tiny_text_encoder
from recsys_core.config import ImageEncoderConfig
from recsys_core.service import RecommenderService

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MOVIELENS = SHARED_DATA / "movielens-100k"


@pytest.fixture(autouse=True)
def _seed() -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


TINY_ROWS = [
    # item_id, title, description, genres, colour
    ("chess", "Chess Master", "board game chess strategy", "BoardGame|StrategyGame", (20, 20, 20)),
    ("checkers", "Checkers", "board game for two", "BoardGame", (40, 40, 40)),
    ("cards", "Card Solitaire", "card game patience", "CardGame", (200, 30, 30)),
    ("space", "Space Shooter", "arcade space shooter", "ArcadeGame|ActionGame", (10, 10, 200)),
    ("racer", "Racer", "arcade racing", "ArcadeGame", (10, 200, 10)),
    ("puzzle", "Logic Puzzle", "logic puzzle", "LogicGame", (220, 220, 0)),
    ("noimage", "Text Only Game", "a strategy game without an image", "StrategyGame", None),
]


def write_tiny_catalog(folder: Path) -> Path:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = ["item_id,title,description,genres,image,license,attribution"]
    for item_id, title, description, genres, colour in TINY_ROWS:
        image = ""
        if colour is not None:
            img = Image.new("RGB", (64, 64), colour)
            # A second colour block gives the CNN something spatial to look at.
            img.paste(tuple(255 - c for c in colour), (0, 0, 32, 32))
            img.save(folder / "images" / f"{item_id}.png")
            image = f"images/{item_id}.png"
        lines.append(f'{item_id},{title},"{description}",{genres},{image},CC0-1.0,test fixture')
    (folder / "items.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def tiny_catalog_dir(tmp_path: Path) -> Path:
    return write_tiny_catalog(tmp_path / "catalog")


@pytest.fixture
def tiny_catalog(tiny_catalog_dir: Path):
    return load_catalog_folder(tiny_catalog_dir)


def make_tiny_service(catalog, cache_dir: Path | None) -> RecommenderService:
    text_cfg = TextEncoderConfig(model="tiny-random", max_length=64, batch_size=4)
    image_cfg = ImageEncoderConfig(model="tiny-random", image_size=64, batch_size=4)
    config = ServiceConfig(text=text_cfg, image=image_cfg, device="cpu", cache_dir=cache_dir)
    return RecommenderService(
        catalog,
        config,
        text_encoder=tiny_text_encoder(text_cfg),
        image_encoder=ImageEncoder(tiny_image_backbone(), image_cfg, "tiny-random"),
    )


@pytest.fixture
def tiny_service(tiny_catalog, tmp_path: Path) -> RecommenderService:
    service = make_tiny_service(tiny_catalog, tmp_path / "features")
    service.prepare()
    return service


@pytest.fixture(scope="session")
def real_data_dir(tmp_path_factory) -> Path:
    """One data dir for every test that uses the real packaged weights: features are extracted once."""
    return tmp_path_factory.mktemp("real-data")


@pytest.fixture(scope="session")
def real_service(real_data_dir: Path) -> RecommenderService:
    from recsys_core.adapters import resolve_catalog

    service = RecommenderService(resolve_catalog("demo"), ServiceConfig(device="cpu", cache_dir=real_data_dir / "features"))
    service.prepare()
    return service
