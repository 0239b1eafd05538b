"""Labelling campaigns: which (profile, item) pairs annotators judge.

A campaign is a set of tasks. Each profile (a few liked items) yields:

- ``recommendation`` tasks: the active model's top items for it (what we want judged);
- ``random`` tasks: items drawn uniformly from the rest of the catalog (an unbiased sample, so the
  labels also say how good items the model did *not* pick are);
- ``control`` tasks: one of the profile's own items, with the expected answer "highly relevant"
  (grade 3 / like): someone who likes X surely finds X relevant. This attention check does not
  depend on any model being right (an earlier design used the model's lowest-ranked item as a
  "not relevant" control, and a weak model turned attentive annotators into failures). Controls
  look like any other task; an annotator who fails many is not reading the tasks, and the label
  aggregation drops their labels. Controls never become training examples.

Profiles are drawn from the catalog: a few items that share a genre (or given explicitly).

A campaign's answer scale and its guidelines (Markdown the admin writes, shown on the Label tab)
are settings keyed by the campaign's name (``campaign-scale:<name>``, ``guidelines:<name>``):
a campaign has no table of its own, and two small values did not justify one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from recsys_core.errors import InvalidInputError
from storage import TaskIn

SCALES = ("graded", "binary")
#: Guidelines are read on every task, so they are meant to be short; the bound keeps one setting row small.
MAX_GUIDELINES_CHARS = 20_000


@dataclass(frozen=True)
class CampaignSpec:
    name: str
    profiles: int = 10
    profile_size: int = 3
    per_profile: int = 5  # recommendation tasks per profile
    random_per_profile: int = 2
    controls_per_profile: int = 1
    overlap: int = 3  # distinct annotators per task
    scale: str = "graded"  # graded = 0..3 relevance; binary = like/dislike
    seed: int = 0
    guidelines: str = ""  # Markdown for annotators; empty keeps an existing campaign's guidelines

    def __post_init__(self) -> None:
        if not self.name.strip() or len(self.name) > 100:
            raise InvalidInputError("campaign name: 1 to 100 characters")
        for field, low, high in (("profiles", 1, 1000), ("profile_size", 1, 20), ("per_profile", 0, 50),
                                 ("random_per_profile", 0, 50), ("controls_per_profile", 0, 10), ("overlap", 1, 50)):
            value = getattr(self, field)
            if not isinstance(value, int) or not low <= value <= high:
                raise InvalidInputError(f"{field} is {value!r}; allowed {low}..{high}")
        if self.scale not in SCALES:
            raise InvalidInputError(f"scale {self.scale!r}: use graded or binary")
        if self.per_profile + self.random_per_profile + self.controls_per_profile == 0:
            raise InvalidInputError("a campaign needs at least one task per profile")
        if not isinstance(self.guidelines, str) or len(self.guidelines) > MAX_GUIDELINES_CHARS:
            raise InvalidInputError(f"guidelines are {len(str(self.guidelines))} characters; "
                                    f"the limit is {MAX_GUIDELINES_CHARS}")


def draw_profiles(catalog, count: int, size: int, seed: int) -> list[tuple[str, ...]]:
    """``count`` profiles of ``size`` items sharing a genre (any items when the catalog has no genres)."""
    rng = random.Random(seed)
    by_genre: dict[str, list[str]] = {}
    for item in catalog.items:
        for genre in item.genres:
            by_genre.setdefault(genre, []).append(item.item_id)
    pools = [ids for ids in by_genre.values() if len(ids) >= size] or [list(catalog.ids)]
    profiles = []
    for _ in range(count):
        pool = rng.choice(pools)
        profiles.append(tuple(rng.sample(pool, min(size, len(pool)))))
    return profiles


def build_tasks(service, spec: CampaignSpec, profiles: Sequence[Sequence[str]] | None = None) -> list[TaskIn]:
    """Tasks for every profile, from the model the service is serving now."""
    catalog = service.catalog
    rng = random.Random(spec.seed)
    profiles = [tuple(p) for p in (profiles or draw_profiles(catalog, spec.profiles, spec.profile_size, spec.seed))]
    version = service.model_version
    positive = 3 if spec.scale == "graded" else 1  # grade 3, or like (1) on the binary scale
    tasks: list[TaskIn] = []
    for profile in profiles:
        liked = service.clean_liked(list(profile))
        top = [r.item_id for r in service.recommend(liked, k=min(spec.per_profile, len(catalog) - len(liked)))] \
            if spec.per_profile else []
        rest = [i for i in catalog.ids if i not in set(liked) | set(top)]
        randoms = rng.sample(rest, min(spec.random_per_profile, len(rest)))
        controls = rng.sample(liked, min(spec.controls_per_profile, len(liked)))
        for item_id, kind in [(i, "recommendation") for i in top] + [(i, "random") for i in randoms] + \
                [(i, "control") for i in controls]:
            tasks.append(TaskIn(item_id=item_id, context_ids=tuple(liked), model_version=version, kind=kind,
                                expected_grade=positive if kind == "control" else None, overlap=spec.overlap))
    rng.shuffle(tasks)  # annotators meet kinds in a random order
    return tasks


def create_campaign(service, repository, spec: CampaignSpec, profiles: Sequence[Sequence[str]] | None = None) -> int:
    """Build the tasks and store them (and the campaign's answer scale and guidelines); returns how many were added.

    Creating a campaign that exists adds tasks to it; non-empty ``spec.guidelines`` replace its guidelines.
    """
    tasks = build_tasks(service, spec, profiles)
    stored = repository.get_or_create_setting(f"campaign-scale:{spec.name}", lambda: spec.scale)
    if stored != spec.scale:
        raise InvalidInputError(f"campaign {spec.name!r} already exists with the {stored} scale; "
                                "use another name or the same scale")
    added = repository.add_tasks(spec.name, tasks)
    if spec.guidelines.strip():
        repository.set_setting(f"guidelines:{spec.name}", spec.guidelines.strip())
    return added


def campaign_scale(repository, name: str) -> str | None:
    """The answer scale of campaign ``name``; None when no such campaign was created (nothing is written)."""
    return repository.get_setting(f"campaign-scale:{name}")


def campaign_guidelines(repository, name: str) -> str:
    """The admin's guidelines (Markdown) for campaign ``name``; "" when none were written."""
    return repository.get_setting(f"guidelines:{name}") or ""
