"""The page header's model line. The layout fills it on every page load and the Admin tab after every
registry decision and when a job ends, so it always names the model being served."""

from __future__ import annotations

from ui import render, startup


def model_line(service) -> str:
    """Catalog, served model version and device of ``service`` (a :class:`recsys_core.service.RecommenderService`);
    while the catalog is still being prepared after launch, how far that is."""
    if not service.ready:
        return startup.preparing_note(service)
    return render.catalog_summary(service.catalog, service.model_version, str(service.device))
