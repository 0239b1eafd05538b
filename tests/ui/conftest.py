"""Fixtures of the UI tests on the tiny catalog with audio and video (tests/ui/media_catalog.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recsys_core.service import RecommenderService
from tests.ui.media_catalog import make_media_service, write_media_catalog


@pytest.fixture(scope="module")
def media_catalog_dir(tmp_path_factory) -> Path:
    return write_media_catalog(tmp_path_factory.mktemp("media") / "catalog")


@pytest.fixture(scope="module")
def media_service(media_catalog_dir: Path) -> RecommenderService:
    """Prepared once per module (about 2 s: the tiny audio encoder's first call); requests only read it."""
    return make_media_service(media_catalog_dir, media_catalog_dir.parent / "features")
