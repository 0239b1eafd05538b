"""The results block the Recommend and Upload tabs share: a gallery of results, the selected item's
details, the "why" panel and the score breakdown, with the events that select and explain a result.

One place holds the block's components, the order of the values a recommend handler returns for
them (:func:`shown_values` fills :attr:`ResultsPanel.shown`) and the order of the explanation
outputs (``Handlers.explain_panel``: :attr:`ResultsPanel.explanation`, then :attr:`ResultsPanel.media`),
so the two tabs cannot drift apart. A new query owns the whole block: it fills the results and clears
everything that belonged to the previous list (details, explanation, audio plot and keyframe strip,
history chart and table, feedback note, selection), so nothing of an old query stays on screen; the
selected item's images and players follow the selection (none after a new query). The tabs differ
only where the arguments say: the Upload tab also shows the matching regions and seconds of the upload
(``upload=True``) and has no like/dislike buttons (``rating=False``). What a rating does
besides storing the label (the rated item joins the liked or disliked items and the list is made
again) needs the tab's profile, so the layout wires those two buttons (``ui.layout``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import gradio as gr

from ui import media as media_display
from ui import render

if TYPE_CHECKING:
    from recsys_core.service import Recommendation

PART_COLORS = {"text": "#2563eb", "image": "#f97316", "audio": "#9333ea", "video": "#db2777",
               render.COLLAB_PART: "#16a34a", render.OTHER_PART: "#6b7280"}


@dataclass
class ResultsPanel:
    events: str  # prefix of the events' API names: "ui" (Recommend tab) or "ui_upload"
    gallery: gr.Gallery
    details: gr.Markdown
    method: gr.Radio
    explanation: list[gr.components.Component]  # in the order Handlers.explain returns their values
    parts: gr.BarPlot
    table: gr.Dataframe
    state: gr.State  # this visitor's results: request id, liked items, Recommendation per id, the selected one
    like: gr.Button | None = None  # rating=True only
    dislike: gr.Button | None = None
    feedback_note: gr.Markdown | None = None
    images: gr.Gallery | None = None  # the selected item's icon and screenshots (follows state["selected"])
    # The selected item's players (follow state["selected"]; hidden when it has no such media).
    audio: gr.Audio | None = None
    video: gr.Video | None = None
    # The audio plot and keyframe strip of the explanation (+ the upload's), in the order Handlers.explain_panel
    # returns them; hidden when the explained item (or upload) has no audio / video.
    media: list[gr.components.Component] = field(default_factory=list)

    @property
    def shown(self) -> list[gr.components.Component]:
        """Outputs a recommend handler fills with :func:`shown_values`, in that order: the new results, then
        everything of the previous list that must not stay on screen."""
        note = [self.feedback_note] if self.feedback_note is not None else []
        return [self.gallery, self.table, self.parts, self.state, self.details, *self.explanation, *self.media,
                *note]

    def wire(self, handlers: Any, **ui: Any) -> None:
        """Selecting a result shows its details, then explains it; another method explains it again. (The
        like/dislike buttons are wired by the layout: they change the tab's profile too.)

        ``handlers``: a :class:`ui.handlers.Handlers` (not imported: ``ui.handlers`` imports this module).
        ``ui``: options for every event (the app makes them private: its public API is the gr.api endpoints).
        """
        explain = {"concurrency_limit": 1, "concurrency_id": "explain", **ui}  # heavy: one at a time
        outputs = self.explanation + self.media
        self.gallery.select(handlers.select_result, [self.state], [self.state, self.details],
                            api_name=f"{self.events}_select", **ui).then(
            handlers.explain_panel, [self.state, self.method], outputs, api_name=f"{self.events}_explain", **explain)
        self.method.change(handlers.explain_panel, [self.state, self.method], outputs,
                           api_name=f"{self.events}_explain_method", **explain)
        # Whatever sets the state (select, a new list) decides what the images and players show.
        if self.images is not None:
            self.state.change(handlers.item_images, [self.state], [self.images], api_name=f"{self.events}_images",
                              show_progress="hidden", **ui)
        if self.audio is not None and self.video is not None:
            self.state.change(handlers.item_media, [self.state], [self.audio, self.video],
                              api_name=f"{self.events}_players", show_progress="hidden", **ui)


def shown_values(recs: Sequence["Recommendation"], state: dict, *, details: str, upload: bool = False,
                 rating: bool = False) -> tuple:
    """The values of :attr:`ResultsPanel.shown` for a new result list: the gallery starts unselected, ``details``
    replaces the previous item's details, and the explanation (and, with ``rating``, the feedback note) is
    cleared. ``upload``/``rating``: as the panel was built (:func:`results_panel`)."""
    return (gr.Gallery(value=render.results_gallery(recs), selected_index=None), render.results_frame(recs),
            render.score_parts_frame(recs), state, details, *_cleared_explanation(upload), *cleared_media(upload),
            *(("",) if rating else ()))


def shown_count(*, upload: bool = False, rating: bool = False) -> int:
    """How many values :func:`shown_values` returns for a panel built with these arguments."""
    return len(shown_values([], {}, details="", upload=upload, rating=rating))


def _cleared_explanation(upload: bool) -> tuple:
    """Empty values for the explanation outputs, in the order of :func:`_explanation`."""
    # tokens, region heatmap, modality share, history chart, history table, summary (+ the upload's heatmap)
    return (None, None, None, None, None, "") + ((None,) if upload else ())


def cleared_media(upload: bool) -> tuple:
    """Values that empty and hide the media outputs (:func:`_media_explanation`): audio plot, keyframe strip
    (+ the upload's two)."""
    cleared = (gr.Image(value=None, visible=False), gr.Gallery(value=None, visible=False))
    return cleared * (2 if upload else 1)


def results_panel(*, label: str, elem_id: str | None = None, details: str | None = None, upload: bool = False,
                  rating: bool = False) -> ResultsPanel:
    """Build the block inside the open layout context. ``label``/``elem_id``: the gallery's; ``details``: the
    text before anything is selected; ``upload``: results for an uploaded item; ``rating``: 👍/👎 buttons."""
    # 4 columns and no fit_columns: tiles stay large enough for their one-line caption (rank · score · title).
    gallery = gr.Gallery(label=label, columns=4, height=340, allow_preview=False, object_fit="contain",
                         fit_columns=False, elem_id=elem_id, elem_classes=["results-gallery"])
    details_md = gr.Markdown(details)
    images = gr.Gallery(label="Images of this item", columns=3, height=200, object_fit="contain", fit_columns=False,
                        allow_preview=True, visible=False, elem_classes=["item-images"])
    # The catalog's own files (app.py allows the catalog folder); shown only for an item that has them.
    with gr.Row():
        audio = gr.Audio(label="Listen to this item", type="filepath", interactive=False, visible=False,
                         buttons=["download"], elem_classes=["item-audio"])
        video = gr.Video(label="Watch this item's clip", interactive=False, visible=False, height=240,
                         elem_classes=["item-video"])
    like = dislike = feedback_note = None
    if rating:
        with gr.Row():
            # Plain symbols DejaVu has: an emoji thumb shows as an empty box without an emoji font.
            like = gr.Button("\u2713 Like", size="sm")
            dislike = gr.Button("\u2717 Dislike", size="sm")
        feedback_note = gr.Markdown()
    method, explanation, media = _explanation(upload)
    with gr.Accordion("Where each score comes from", open=False):
        parts = gr.BarPlot(x="item", y="score", color="part",
                           title="Score = text + image (+ audio, video, collaborative, or item ID & bias)",
                           color_map=PART_COLORS, x_label_angle=-30, height=300, sort=None, label="Score parts")
        table = gr.Dataframe(headers=render.RESULTS_HEADERS, interactive=False, wrap=True)
    state = gr.State({})
    return ResultsPanel("ui_upload" if upload else "ui", gallery, details_md, method, explanation, parts, table, state,
                        like, dislike, feedback_note, images, audio, video, media)


def _explanation(upload: bool) -> tuple[gr.Radio, list[gr.components.Component], list[gr.components.Component]]:
    """The "why" panel: the method choice, the outputs in the order ``Handlers.explain`` returns them, and the
    media outputs in the order ``Handlers.explain_panel`` returns them after those."""
    with gr.Accordion("Why this recommendation?", open=True):
        method = gr.Radio([("fast (Grad-CAM regions)", "fast"), ("thorough (occlusion regions, more IG steps)", "thorough")],
                          value="fast", label="Explanation method")
        summary = gr.Markdown()
        media = _media_explanation(upload)  # hidden unless the item has audio or video: first where it has
        tokens = gr.HighlightedText(label="Words: red raised the score, blue lowered it", combine_adjacent=False,
                                    show_legend=False)
        with gr.Row():
            heat = gr.AnnotatedImage(label="Image regions that raised the score", height=260)
            query_heat = gr.AnnotatedImage(label="Matching regions of your upload", height=260, visible=upload)
        with gr.Row():
            share = gr.BarPlot(x="part", y="score part", color="effect", title="Parts of the score", height=220,
                               color_map=render.EFFECT_COLORS, sort=render.PART_ORDER)
            history = gr.BarPlot(x="liked item", y="contribution", color="effect", title="Contribution of each liked item",
                                 color_map=render.EFFECT_COLORS, sort=None, height=220, visible=not upload,
                                 x_label_angle=-20)
        # Its columns follow the model (render.history_table): the hybrid's content/collaborative split and
        # item-item weights; the other models' contributions only.
        history_table = gr.Dataframe(label="Your liked and disliked items behind this score", interactive=False,
                                     wrap=True, visible=not upload, elem_classes=["history-table"])
    outputs = [tokens, heat, share, history, history_table, summary] + ([query_heat] if upload else [])
    return method, outputs, media


def _media_explanation(upload: bool) -> list[gr.components.Component]:
    """The audio plot and the keyframe strip (+ those of the upload), hidden until an explanation has them."""
    def plot(label: str) -> gr.Image:
        # A height of its own: without one the block collapses to 2 px when it is shown after the page loaded.
        return gr.Image(label=label, type="pil", interactive=False, visible=False, buttons=["download"], height=310,
                        elem_classes=["audio-attribution"])

    def strip(label: str) -> gr.Gallery:
        return gr.Gallery(label=label, **media_display.strip_layout(1), object_fit="contain", fit_columns=False,
                          allow_preview=True, visible=False, elem_classes=["keyframe-strip"])

    top = f"{media_display.TOP_FRAME_MARK} moved it most"  # its regions are drawn: the summary says so
    media = [plot("Which seconds of the item's audio moved the score"),
             strip(f"Keyframes of the item's clip and how much each moved the score ({top})")]
    if upload:
        media += [plot("Which seconds of your clip matched"), strip(f"Keyframes of your clip that matched ({top})")]
    return media
