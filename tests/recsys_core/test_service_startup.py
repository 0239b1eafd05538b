"""``RecommenderService`` while it prepares: requests get the progress instead of a failure or a second prepare."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from recsys_core.errors import CatalogError, NotReadyError
from tests.conftest import make_tiny_service


def test_requests_inside_starting_are_refused_with_the_progress_and_the_catalog_stays_available(
        tiny_catalog, tmp_path: Path) -> None:
    service = make_tiny_service(tiny_catalog, tmp_path / "f")
    with service.starting():
        with pytest.raises(NotReadyError, match=r"still preparing the catalog \(waiting; 7 items\); try again"):
            service.recommend(["chess"], k=2)
        assert [i.item_id for i in service.search("chess")] == ["chess"]  # the catalog needs no features
        service.prepare()
        assert not service.ready and service.status.stage == "finishing start-up"
        assert service.model_version.startswith("zeroshot-")  # what the app's own start-up steps need
        with pytest.raises(NotReadyError, match="finishing start-up"):
            service.recommend_for_upload(image=None, title="chess", k=2)
    assert service.ready and service.status.ready
    assert len(service.recommend(["chess"], k=2)) == 2


def test_another_thread_is_told_to_wait_instead_of_preparing_twice(tiny_catalog, tmp_path: Path) -> None:
    service = make_tiny_service(tiny_catalog, tmp_path / "f")
    seen: list[str] = []

    def progress(fraction: float, stage: str) -> None:
        if seen:
            return

        def request() -> None:
            try:
                service.recommend(["chess"], k=2)
                seen.append("served")
            except NotReadyError as exc:
                seen.append(str(exc))

        other = threading.Thread(target=request)
        other.start()
        other.join(timeout=30)

    service.prepare(progress=progress)  # no starting(): lazy use keeps working, a parallel one is told to wait
    assert len(seen) == 1 and "still preparing the catalog (text features 0%; 7 items" in seen[0]
    assert service.ready


def test_a_failed_preparation_keeps_the_service_closed_with_the_reason(tiny_catalog, tmp_path: Path,
                                                                       monkeypatch) -> None:
    service = make_tiny_service(tiny_catalog, tmp_path / "f")

    def broken(*_args, **_kwargs):
        raise CatalogError("items.csv has no readable rows")

    monkeypatch.setattr("recsys_core.service.extract_catalog_features", broken)
    with pytest.raises(CatalogError):
        with service.starting():
            service.prepare()
    assert service.status.stage == "failed" and not service.ready
    with pytest.raises(NotReadyError, match=r"could not prepare the catalog \(items.csv has no readable rows\)"):
        service.recommend(["chess"], k=2)
