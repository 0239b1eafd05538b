"""The Gradio Blocks layout and its wiring to :class:`ui.handlers.Handlers`."""

from __future__ import annotations

import gradio as gr

from ui import examples, render, startup
from ui.components import upload_image
from ui.handlers import Handlers
from ui.header import model_line
from ui.panels import results_panel

ALL_GENRES = "All genres"

CSS = """
#results-gallery .caption-label, #catalog-gallery .caption-label { white-space: normal; }
footer { visibility: hidden; }
"""


def build_demo(handlers: Handlers, *, title: str = "Multimodal Recommendation Studio", labelling=None,
               admin=None) -> gr.Blocks:
    """The app. ``labelling`` / ``admin``: :class:`ui.labelling.LabellingHandlers` / :class:`ui.admin.AdminHandlers`
    (their tabs and API endpoints are added when given)."""
    service = handlers.service
    catalog = service.catalog
    limits = service.config.limits
    choices = [(item.title, item.item_id) for item in sorted(catalog.items, key=lambda i: i.title.lower())]
    first_page = catalog.items[: 120]

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
                        gr.Markdown("**1. Pick items you like.** Click a tile to add or remove it.")
                        with gr.Row():
                            query = gr.Textbox(label="Search", placeholder="e.g. chess, space, puzzle", scale=3)
                            genre = gr.Dropdown([ALL_GENRES, *service.genres()], value=ALL_GENRES, label="Genre", scale=2)
                        match_note = gr.Markdown(f"{len(catalog)} item(s)")
                        catalog_gallery = gr.Gallery(
                            value=render.catalog_gallery(first_page), label="Catalog", columns=6, height=520,
                            allow_preview=False, object_fit="contain", elem_id="catalog-gallery",
                        )
                        shown_ids = gr.State([i.item_id for i in first_page])
                    with gr.Column(scale=4):
                        liked = gr.Dropdown(choices=choices, value=[], multiselect=True, label="Items you like",
                                            info="Add by clicking tiles or typing here; remove with ×.")
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
                gr.Markdown("Give an image and/or a text for an item that is not in the catalog; "
                            "the studio finds the catalog items most like it.")
                with gr.Row():
                    with gr.Column(scale=2):
                        # Its file reaches the handler unopened: the service says what is wrong with a bad one.
                        up_image = upload_image(label="Image (optional)", sources=["upload", "clipboard"], height=240)
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
        for trigger in (query.submit, genre.change):
            trigger(handlers.search, [query, genre], [catalog_gallery, shown_ids, match_note], api_name="ui_search", **ui)
        catalog_gallery.select(handlers.pick, [shown_ids, liked], [liked], api_name="ui_pick", **ui)
        go.click(handlers.recommend, [liked, k, diversity], [*rec_panel.shown, status],
                 concurrency_limit=8, concurrency_id="recommend", api_name="ui_recommend", **ui)
        rec_panel.wire(handlers, **ui)  # select, explain, explain again with another method, like, dislike
        up_go.click(handlers.recommend_upload, [up_image, up_title, up_description, up_k], [*up_panel.shown, up_status],
                    concurrency_limit=4, concurrency_id="upload", api_name="ui_upload", **ui)
        up_panel.wire(handlers, **ui)  # select, explain, explain again
        # One-click examples run what the tab's button runs, on what the example filled in.
        if profile_examples is not None:
            profile_examples.load_input_event.then(
                handlers.recommend, [liked, k, diversity], [*rec_panel.shown, status],
                concurrency_limit=8, concurrency_id="recommend", api_name="ui_example_recommend", **ui)
        if upload_examples is not None:
            upload_examples.load_input_event.then(
                handlers.recommend_upload, [up_image, up_title, up_description, up_k], [*up_panel.shown, up_status],
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
