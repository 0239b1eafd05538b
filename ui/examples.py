"""One-click examples, as Hugging Face demos have: example profiles on the Recommend tab and an example
upload on the Upload tab. Clicking one fills the inputs and runs the tab's main action with them.

Profiles are found by searching the catalog being served (title matches first), not hard-coded ids: a
profile shows only when the catalog has enough items for it, so another catalog (MovieLens, your own
folder) shows those that apply, or none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import gradio as gr

if TYPE_CHECKING:
    from recsys_core.data.catalog import Catalog

ASSETS = Path(__file__).resolve().parents[1] / "assets"


@dataclass(frozen=True)
class ExampleProfile:
    label: str  # what the button says
    searches: tuple[tuple[str, str | None], ...]  # (query, genre or None) tried in order until ``size`` ids
    size: int = 3
    min_items: int = 2  # fewer matches: the profile does not apply to this catalog and is not shown


EXAMPLE_PROFILES: tuple[ExampleProfile, ...] = (
    ExampleProfile("chess fan", (("chess", None),)),
    # "space shooter" alone matches two items in the bundled catalog; galaga clones and space duels are the genre too.
    ExampleProfile("space shooter fan", (("space shooter", None), ("galaga", None), ("spaceship", None))),
    ExampleProfile("puzzle fan", (("puzzle", "LogicGame"), ("puzzle", None))),
)


@dataclass(frozen=True)
class UploadExample:
    label: str
    image: Path
    title: str
    description: str


# One bundled icon with a new title: the upload is not a catalog item, so the results show what it resembles.
UPLOAD_EXAMPLE = UploadExample(
    label="a chess app's icon + title",
    image=ASSETS / "catalog" / "images" / "icons" / "pychess.png",
    title="Chess trainer",
    description="Learn the openings and play chess against the computer.",
)


def profiles_for(catalog: "Catalog", profiles: Sequence[ExampleProfile] = EXAMPLE_PROFILES) -> list[tuple[str, list[str]]]:
    """(label, item ids) of the profiles that apply to ``catalog``, ids as its search finds them."""
    genres = set(catalog.genres())
    found = []
    for profile in profiles:
        ids: list[str] = []
        for query, genre in profile.searches:
            if genre is not None and genre not in genres:
                continue
            for item in catalog.search(query, genre):
                if item.item_id not in ids:
                    ids.append(item.item_id)
            if len(ids) >= profile.size:
                break
        if len(ids) >= profile.min_items:
            found.append((profile.label, ids[: profile.size]))
    return found


def profile_examples(catalog: "Catalog", liked: gr.Dropdown) -> gr.Examples | None:
    """Example profiles that fill ``liked`` (the caller chains Recommend to ``load_input_event``); None when
    no profile applies to this catalog."""
    profiles = profiles_for(catalog)
    if not profiles:
        return None
    return gr.Examples(examples=[[ids] for _, ids in profiles], inputs=[liked],
                       example_labels=[label for label, _ in profiles], label="Or try an example profile",
                       cache_examples=False, api_name="ui_example_profile", api_visibility="private")


def upload_examples(image: gr.Image, title: gr.Textbox, description: gr.Textbox,
                    example: UploadExample = UPLOAD_EXAMPLE) -> gr.Examples | None:
    """The example upload (the caller chains the search to ``load_input_event``); None if its icon is missing."""
    if not example.image.is_file():
        return None
    return gr.Examples(examples=[[str(example.image), example.title, example.description]],
                       inputs=[image, title, description], example_labels=[example.label], label="Or try an example",
                       cache_examples=False, api_name="ui_example_upload", api_visibility="private")
