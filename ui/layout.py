"""The Gradio Blocks layout and its wiring to :class:`ui.handlers.Handlers`."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from ui import examples, render, startup
from ui.components import upload_image
from ui.handlers import Handlers
from ui.header import model_line
from ui.panels import results_panel

ALL_GENRES = "All genres"

# Captions sit on the tiles: results get one line (rank and score first, so only the title is cut; the full
# title is in the details), catalog titles at most two lines, so most of each icon stays visible.
# Gradio's gallery grid gives each column at least 100 px, so on a narrow screen the last columns are cut off
# (the "fifth column clipped"): columns shrink to fit instead, and a phone gets 3 of them.
CSS = """
#catalog-gallery .grid-container, .results-gallery .grid-container {
  grid-template-columns: repeat(var(--grid-cols), minmax(0, 1fr)) !important; }
@media (max-width: 640px) {
  #catalog-gallery .grid-container, .results-gallery .grid-container {
    grid-template-columns: repeat(3, minmax(0, 1fr)) !important; } }
.results-gallery .caption-label { white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
  max-width: calc(100% - 8px); }
.keyframe-strip .caption-label { max-width: calc(100% - 8px); }
#catalog-gallery .caption-label { white-space: normal; display: -webkit-box; -webkit-line-clamp: 2;
  -webkit-box-orient: vertical; overflow: hidden; max-width: calc(100% - 8px); }
footer { visibility: hidden; }
"""


@dataclass
class CatalogPicker:
    """The Recommend tab's catalog: search, genre, one page of tiles and the paging buttons."""

    query: gr.Textbox
    search: gr.Button
    genre: gr.Dropdown
    note: gr.Markdown
    gallery: gr.Gallery
    prev: gr.Button
    next: gr.Button
    shown_ids: gr.State  # the ids of the tiles on screen, in order: what a click's index points into
    view: gr.State  # every matching id and the page shown (ui.handlers.Handlers.turn_page)

    @property
    def page_outputs(self) -> list:
        """What ``Handlers.browse`` / ``turn_page`` return, in that order."""
        return [self.gallery, self.shown_ids, self.note, self.view, self.prev, self.next]


def _catalog_picker(handlers: Handlers) -> CatalogPicker:
    # Catalog order until the first search (search results come title hits first, then A-Z).
    tiles, shown, note, view, has_prev, has_next = handlers.picker_values(handlers.service.catalog.ids, 0, [])
    with gr.Row():
        query = gr.Textbox(label="Search", placeholder="e.g. chess, space, puzzle", scale=3, min_width=160)
        genre = gr.Dropdown(render.genre_choices(handlers.service.genres(), ALL_GENRES), value=ALL_GENRES,
                            label="Genre", scale=2, min_width=140)
        search = gr.Button("Search", scale=0, min_width=90)
    match_note = gr.Markdown(note)
    # fit_columns=False: a one-item result is one tile of the usual size, not a cropped tile as wide as the gallery.
    gallery = gr.Gallery(value=tiles, label="Catalog", columns=6, height=520, allow_preview=False,
                         object_fit="contain", fit_columns=False, elem_id="catalog-gallery")
    with gr.Row():
        prev = gr.Button("\u2190 Previous page", size="sm", interactive=has_prev, min_width=120)
        next_ = gr.Button("Next page \u2192", size="sm", interactive=has_next, min_width=120)
    return CatalogPicker(query, search, genre, match_note, gallery, prev, next_, gr.State(shown), gr.State(view))


def _wire_catalog_picker(handlers: Handlers, picker: CatalogPicker, liked: gr.Dropdown, disliked: gr.Dropdown,
                         examples=None, **ui) -> None:
    """Search by Enter, the button or the genre; page back and forth; a tile click toggles its item in
    ``liked``, and every change of ``liked`` (tiles, the dropdown, an example profile) re-marks the page's tiles.
    An item is never liked and disliked at once: whichever list it joined last keeps it."""
    for trigger in (picker.query.submit, picker.search.click, picker.genre.change):
        trigger(handlers.browse, [picker.query, picker.genre, liked], picker.page_outputs, api_name="ui_search", **ui)
    picker.prev.click(lambda view, now: handlers.turn_page(view, -1, now), [picker.view, liked], picker.page_outputs,
                      api_name="ui_page_prev", **ui)
    picker.next.click(lambda view, now: handlers.turn_page(view, +1, now), [picker.view, liked], picker.page_outputs,
                      api_name="ui_page_next", **ui)
    picker.gallery.select(handlers.pick_and_mark, [picker.shown_ids, liked, disliked], [liked, disliked, picker.gallery],
                          api_name="ui_pick", **ui)
    # The dropdowns' own edits (typing, ×); tile clicks re-mark in their own answer, examples via .then below.
    liked.input(handlers.liked_edited, [picker.shown_ids, liked, disliked], [picker.gallery, disliked],
                api_name="ui_mark_liked", show_progress="hidden", **ui)
    disliked.input(handlers.disliked_edited, [picker.shown_ids, disliked, liked], [liked, picker.gallery],
                   api_name="ui_disliked_edited", show_progress="hidden", **ui)
    if examples is not None:
        examples.load_input_event.then(handlers.liked_edited, [picker.shown_ids, liked, disliked],
                                       [picker.gallery, disliked], api_name="ui_example_mark_liked",
                                       show_progress="hidden", **ui)


def _wire_rating(handlers: Handlers, panel, picker: CatalogPicker, profile: list, status: gr.Markdown, **ui) -> None:
    """Like/Dislike store the judgement, then move the item into the liked or disliked items and make the list
    again (``Handlers.rate``). ``profile``: the liked and disliked boxes, then the two sliders."""
    liked, disliked, k, diversity = profile
    inputs = [panel.state, liked, disliked, picker.shown_ids, k, diversity]
    outputs = [liked, disliked, picker.gallery, *panel.shown, status]
    # The feedback group: every click is a label write first (the list that follows is one dot product per item).
    rating = {"concurrency_limit": 16, "concurrency_id": "feedback", **ui}
    panel.like.click(handlers.like, inputs, outputs, api_name=f"{panel.events}_like", **rating)
    panel.dislike.click(handlers.dislike, inputs, outputs, api_name=f"{panel.events}_dislike", **rating)


def catalog_media(catalog) -> tuple[bool, bool]:
    """(has audio, has video): whether any item has a track (or a clip's soundtrack) / a clip."""
    return (any(i.audio_source is not None for i in catalog.items), any(i.video is not None for i in catalog.items))


def upload_intro(has_audio: bool, has_video: bool) -> str:
    """The Upload tab's first line: the kinds of upload this catalog can match (a video's soundtrack matches its
    audio, so a video upload is offered wherever there is audio or video)."""
    if not (has_audio or has_video):
        return ("Give an image and/or a text for an item that is not in the catalog; "
                "the studio finds the catalog items most like it.")
    clips = "an audio clip, a video" if has_audio else "a video"
    return (f"Give any of an image, a text, {clips} for an item that is not in the catalog (each optional: a clip "
            "with or without a title and text); the studio finds the catalog items most like it.")


def media_limits_note(limits) -> str:
    from recsys_core.data.media import AUDIO_SUFFIXES, VIDEO_SUFFIXES

    def formats(suffixes):
        return ", ".join(s.lstrip(".") for s in suffixes)

    return (f"<small>Audio: {formats(AUDIO_SUFFIXES)}, at most {limits.max_audio_seconds:g} s. "
            f"Video: {formats(VIDEO_SUFFIXES)}, at most {limits.max_video_seconds:g} s (its soundtrack counts as "
            f"its audio). Each file at most {limits.max_upload_bytes / 2**20:g} MiB.</small>")


def build_demo(handlers: Handlers, *, title: str = "Multimodal Recommendation Studio", labelling=None,
               admin=None) -> gr.Blocks:
    """The app. ``labelling`` / ``admin``: :class:`ui.labelling.LabellingHandlers` / :class:`ui.admin.AdminHandlers`
    (their tabs and API endpoints are added when given)."""
    service = handlers.service
    catalog = service.catalog
    limits = service.config.limits
    choices = [(item.title, item.item_id) for item in sorted(catalog.items, key=lambda i: i.title.lower())]

    # Uploaded files live in GRADIO_TEMP_DIR (<data dir>/uploads): delete them after a day, checked hourly.
    with gr.Blocks(title=title, delete_cache=(3600, 86400)) as demo:
        gr.Markdown(f"# {render.esc(title)}")
        # Re-read on every page load (another admin may have promoted a model); the Admin tab refreshes it too.
        header = gr.Markdown(model_line(service))
        if handlers.access.mode == "oauth":  # Hugging Face sign-in on Spaces (hf_oauth: true in README front matter)
            gr.LoginButton()

        with gr.Tabs():  # one tab bar, whichever tabs this user may see
            with gr.Tab("Recommend"):
                with gr.Row():
                    with gr.Column(scale=5):
                        gr.Markdown(f"**1. Pick items you like.** Click a tile to add or remove it "
                                    f"({render.LIKED_MARK.strip()} marks the ones you like).")
                        picker = _catalog_picker(handlers)
                    with gr.Column(scale=4):
                        liked = gr.Dropdown(choices=choices, value=[], multiselect=True, label="Items you like",
                                            info="Add by clicking tiles, typing here or Like on a result; "
                                                 "remove with ×.")
                        # This visitor's own (a component value is per session); passed as disliked_ids.
                        disliked = gr.Dropdown(choices=choices, value=[], multiselect=True, label="Items you dislike",
                                               info="Dislike on a result puts it here: it is kept out and its "
                                                    "look-alikes go down. Remove with ×.")
                        with gr.Row():
                            k = gr.Slider(1, min(50, limits.max_k), value=10, step=1, label="How many recommendations")
                            diversity = gr.Slider(0.0, 1.0, value=0.0, step=0.1, label="Diversity (MMR)",
                                                  info="0 = by score only; higher = fewer look-alikes")
                        go = gr.Button("2. Recommend", variant="primary")
                        profile_examples = examples.profile_examples(catalog, liked)  # fill + Recommend, one click
                        status = gr.Markdown()
                        rec_panel = results_panel(label="Recommendations", elem_id="results-gallery", rating=True,
                                                  details="Select a recommendation to see details and rate it.")

            with gr.Tab("Upload a new item"):
                has_audio, has_video = catalog_media(catalog)
                gr.Markdown(upload_intro(has_audio, has_video))
                with gr.Row():
                    with gr.Column(scale=2):
                        # Its file reaches the handler unopened: the service says what is wrong with a bad one.
                        up_image = upload_image(label="Image (optional)", sources=["upload", "clipboard"], height=240)
                        # Shown where the catalog has something for them to match (a video's soundtrack
                        # matches the catalog's audio); the handler gets the paths, the service checks the files.
                        with gr.Row():
                            up_audio = gr.Audio(label="Audio clip (optional)", sources=["upload"], type="filepath",
                                                visible=has_audio, elem_id="upload-audio")
                            up_video = gr.Video(label="Video clip (optional)", sources=["upload"], include_audio=True,
                                                visible=has_audio or has_video, height=200, elem_id="upload-video")
                        if has_audio or has_video:
                            gr.Markdown(media_limits_note(limits), elem_id="upload-media-limits")
                        # No max_length: the browser would cut longer text silently; the service refuses it
                        # with both numbers, and the fields say the limit.
                        text_limit = f"Title and description together: at most {limits.max_text_chars:,} characters."
                        up_title = gr.Textbox(label="Title", info=text_limit)
                        up_description = gr.Textbox(label="Description", lines=4, info=text_limit)
                        up_k = gr.Slider(1, min(50, limits.max_k), value=10, step=1, label="How many")
                        up_go = gr.Button("Find similar items", variant="primary")
                        upload_examples = examples.upload_examples(up_image, up_title, up_description)
                    with gr.Column(scale=3):
                        up_status = gr.Markdown()
                        up_panel = results_panel(label="Similar catalog items", upload=True)

            if labelling is not None:
                from ui.labelling import build_labelling_tab

                build_labelling_tab(labelling)
            if admin is not None:
                from ui.admin import build_admin_tab

                admin_outputs = build_admin_tab(admin, header)  # body, notice, job poller
                demo.load(admin.tab_visibility, None, list(admin_outputs), api_name="ui_admin_visible",
                          api_visibility="private")

            with gr.Tab("About & credits"):
                def about_text() -> str:
                    model = render.model_note(service) if service.ready else startup.preparing_note(service)
                    return f"### {render.esc(catalog.name)}\n{render.esc(catalog.description)}\n\n" + model

                about = gr.Markdown(about_text())
                if catalog.problems:
                    gr.Markdown(f"**{len(catalog.problems)} catalog row problem(s)** were found when loading:")
                    gr.Dataframe(value=render.problems_table(catalog), headers=["row", "item id", "problem", "action"],
                                 interactive=False, wrap=True)
                gr.Markdown("**Per-item licences and attribution** (licence files ship next to the images):")
                gr.Dataframe(value=render.attribution_table(catalog),
                             headers=["item id", "title", "licence", "licence file", "attribution"],
                             interactive=False, wrap=True, max_height=500)

        # -- wiring (UI events are private: the public API is the gr.api endpoints below) ------------
        ui = {"api_visibility": "private"}
        demo.load(lambda: (model_line(service), about_text()), None, [header, about], api_name="ui_header", **ui)
        _wire_catalog_picker(handlers, picker, liked, disliked, profile_examples, **ui)
        go.click(handlers.recommend, [liked, k, diversity, disliked], [*rec_panel.shown, status],
                 concurrency_limit=8, concurrency_id="recommend", api_name="ui_recommend", **ui)
        rec_panel.wire(handlers, **ui)  # select, explain, explain again with another method
        _wire_rating(handlers, rec_panel, picker, [liked, disliked, k, diversity], status, **ui)
        upload_inputs = [up_image, up_title, up_description, up_k, up_audio, up_video]
        up_go.click(handlers.recommend_upload, upload_inputs, [*up_panel.shown, up_status],
                    concurrency_limit=4, concurrency_id="upload", api_name="ui_upload", **ui)
        up_panel.wire(handlers, **ui)  # select, explain, explain again
        # One-click examples run what the tab's button runs, on what the example filled in.
        if profile_examples is not None:
            profile_examples.load_input_event.then(
                handlers.recommend, [liked, k, diversity, disliked], [*rec_panel.shown, status],
                concurrency_limit=8, concurrency_id="recommend", api_name="ui_example_recommend", **ui)
        if upload_examples is not None:
            # What is on screen is what is searched: a clip already there goes with the example's image and text.
            upload_examples.load_input_event.then(
                handlers.recommend_upload, upload_inputs, [*up_panel.shown, up_status],
                concurrency_limit=4, concurrency_id="upload", api_name="ui_example_upload_run", **ui)
        # While the catalog is prepared after launch, the header shows how far; the timer stops once ready.
        startup_timer, startup_tick = startup.poller(service, lambda: model_line(service), about_text)
        startup_timer.tick(startup_tick, None, [header, about, startup_timer], queue=False, show_progress="hidden",
                           api_name="ui_startup", **ui)

        gr.api(handlers.api_recommend, api_name="recommend", concurrency_limit=8, concurrency_id="recommend")
        gr.api(handlers.api_recommend_upload, api_name="recommend_upload", concurrency_limit=4,
               concurrency_id="upload")
        gr.api(handlers.api_feedback, api_name="feedback", concurrency_limit=16, concurrency_id="feedback")
        gr.api(handlers.api_search, api_name="search")
        gr.api(handlers.api_item, api_name="item")
        gr.api(handlers.api_similar, api_name="similar", concurrency_limit=8, concurrency_id="recommend")
        gr.api(handlers.api_explain, api_name="explain", concurrency_limit=1, concurrency_id="explain")
        gr.api(handlers.api_explain_upload, api_name="explain_upload", concurrency_limit=1, concurrency_id="explain")
        if labelling is not None:
            from ui.labelling import register_labelling_api

            register_labelling_api(labelling)
        if admin is not None:
            from ui.admin import register_admin_api

            register_admin_api(admin)
    return demo
