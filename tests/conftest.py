"""Shared fixtures. Tests are offline, seeded and single-threaded (stable timings on 2 cores)."""

from __future__ import annotations

import os

# Before anything imports transformers/huggingface_hub: never touch the network in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import importlib.util
import itertools
import json
import random
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine, make_url

from recsys_core.data.catalog import load_catalog_folder
from recsys_core.config import AudioEncoderConfig, IndexConfig, ServiceConfig, TextEncoderConfig
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.tiny import tiny_image_backbone, tiny_text_encoder
from recsys_core.config import ImageEncoderConfig
from recsys_core.service import RecommenderService
from storage import Repository, default_database_url, redact_url

torch.set_num_threads(1)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
MOVIELENS = SHARED_DATA / "movielens-100k"


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py imported as the module ``name`` (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


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


def write_media_catalog(folder: Path) -> Path:
    """Six items: four with audio (two low tones, two high: their own "collections"), one with a video that has a
    soundtrack, one with text only, so every modality is present on some items and missing on others."""
    from tests.media_fixtures import write_clip, write_tone

    (folder / "media").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (freq, collection) in enumerate(((220.0, "low"), (247.0, "low"), (1760.0, "high"), (1976.0, "high"))):
        write_tone(folder / "media" / f"t{i}.ogg", 3.0, frequency=freq, sample_rate=22050)
        rows.append({"item_id": f"t{i}", "title": f"Track {i}", "description": f"A {collection} tone",
                     "audio": f"media/t{i}.ogg", "collection": collection})
    write_clip(folder / "media" / "clip.webm", 2.0, fps=8, with_audio=True)
    rows.append({"item_id": "clip", "title": "Clip", "description": "A moving square", "video": "media/clip.webm"})
    rows.append({"item_id": "plain", "title": "Plain", "description": "Text only"})
    (folder / "items.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def tiny_media_catalog_dir(tmp_path: Path) -> Path:
    return write_media_catalog(tmp_path / "media-catalog")


@pytest.fixture
def tiny_catalog_dir(tmp_path: Path) -> Path:
    return write_tiny_catalog(tmp_path / "catalog")


@pytest.fixture
def tiny_catalog(tiny_catalog_dir: Path):
    return load_catalog_folder(tiny_catalog_dir)


def make_tiny_service(catalog, cache_dir: Path | None, index: IndexConfig | None = None) -> RecommenderService:
    """The tiny-random service; ``index`` replaces ServiceConfig's default IndexConfig when given."""
    text_cfg = TextEncoderConfig(model="tiny-random", max_length=64, batch_size=4)
    image_cfg = ImageEncoderConfig(model="tiny-random", image_size=64, batch_size=4)
    extra = {} if index is None else {"index": index}
    config = ServiceConfig(text=text_cfg, image=image_cfg, audio=AudioEncoderConfig(model="tiny-random"), device="cpu",
                           cache_dir=cache_dir, **extra)
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
    from recsys_core.data.adapters import resolve_catalog

    service = RecommenderService(resolve_catalog("demo"), ServiceConfig(device="cpu", cache_dir=real_data_dir / "features"))
    service.prepare()
    return service


# ---------------------------------------------------------------------------- databases

#: Storage tests that take ``db_backend``, ``make_db_url`` or ``db_url`` run once per backend.
DB_BACKENDS = ("sqlite", "postgresql")
#: Set by .ci/run: a PostgreSQL database in which the tests may create and drop schemas.
TEST_DATABASE_URL_ENV = "TEST_DATABASE_URL"


@pytest.fixture(scope="session")
def pg_admin_engine() -> Iterator[Engine]:
    """Autocommit engine on TEST_DATABASE_URL for creating and dropping per-test schemas.

    Without the variable the PostgreSQL cases skip (a developer's plain ``pytest``); with it, a
    server that cannot be reached is an error, so CI cannot pass without testing PostgreSQL.
    """
    url = os.environ.get(TEST_DATABASE_URL_ENV, "").strip()
    if not url:
        pytest.skip(f"{TEST_DATABASE_URL_ENV} is not set (.ci/run starts a PostgreSQL server and sets it)")
    if make_url(url).get_backend_name() != "postgresql":
        raise pytest.UsageError(f"{TEST_DATABASE_URL_ENV} must be a postgresql URL; got {redact_url(url)}")
    # psycopg whatever the URL names: it is the PostgreSQL driver we install (see storage.db).
    engine = create_engine(make_url(url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:
        engine.dispose()
        # The driver's message names host, port and user but never the password.
        raise RuntimeError(f"cannot connect to {TEST_DATABASE_URL_ENV} ({redact_url(url)}): {exc}") from None
    yield engine
    engine.dispose()


@pytest.fixture(params=DB_BACKENDS)
def db_backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_db_url(db_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Factory of URLs of new, empty databases on the backend under test.

    SQLite: a new file under ``tmp_path``. PostgreSQL: a new schema in the TEST_DATABASE_URL
    database, made the connection's only ``search_path`` entry, so tables, sequences (ids
    start at 1) and constraints are the test's own; it is dropped afterwards.
    """
    counter = itertools.count()
    schemas: list[str] = []
    admin: Engine | None = request.getfixturevalue("pg_admin_engine") if db_backend == "postgresql" else None

    def make() -> str:
        if admin is None:
            return default_database_url(tmp_path / f"db-{next(counter)}")
        schema = f"test_{uuid.uuid4().hex[:16]}"  # not seeded: other test runs may share the server
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        schemas.append(schema)
        url = make_url(os.environ[TEST_DATABASE_URL_ENV].strip())
        return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)

    yield make
    if admin is not None:
        with admin.connect() as conn:
            # A connection a test leaked would make DROP wait for its locks forever; fail instead.
            conn.exec_driver_sql("SET lock_timeout = '10s'")
            for schema in schemas:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def db_url(make_db_url: Callable[[], str]) -> str:
    """URL of a new, empty database on the backend under test (see :func:`make_db_url`)."""
    return make_db_url()


@pytest.fixture()
def repo(db_url: str) -> Iterator[Repository]:
    """A repository on an empty database, once on SQLite and once on PostgreSQL (see :func:`make_db_url`).

    tests/studio/test_backup.py and tests/ui/test_handlers.py define their own ``repo`` fixtures, which override
    this one.
    """
    repository = Repository.from_url(db_url)
    yield repository
    repository.engine.dispose()
