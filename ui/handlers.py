"""Event handlers and API functions: validate, call the service or repository, shape the output.

Per-user state travels in ``gr.State`` values; the only shared objects are the service (read-mostly,
swapped under its own lock) and the repository (one DB session per call).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
import weakref
from typing import Any, Sequence

import gradio as gr

from recsys_core.errors import InvalidInputError, RecsysError, UnknownItemError
from recsys_core.serving.explain import Explanation
from recsys_core.service import Recommendation, RecommenderService
from storage import FeedbackIn, ImpressionIn, Repository
from ui import media, render
from ui.access import Access
from ui.errors import WARNING_SECONDS, note_text, ui_event, user_errors
from ui.gpu import gpu_task
from ui.panels import cleared_media, shown_count, shown_values
from ui.rate_limit import LabelRateLimit

log = logging.getLogger(__name__)

# Tiles per picker page: 8 rows of 6 at laptop width, few enough to load at once on a phone; the
# prev/next buttons reach the rest (the demo's 189 items are 4 pages).
CATALOG_PAGE = 48
# Values a recommend event returns: the results panel's, then the status line (where a mistake is shown).
RECOMMEND_OUTPUTS = shown_count(rating=True) + 1
# Values a Like/Dislike returns: the liked and disliked items, the catalog tiles (their liked marks), then a
# recommend event's; the feedback note (the last of the panel's values) is where a refusal is said.
RATE_OUTPUTS = 3 + RECOMMEND_OUTPUTS
FEEDBACK_NOTE = -2
UPLOAD_OUTPUTS = shown_count(upload=True) + 1


def _session_key(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None) if request is not None else None


def _as_id_list(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise InvalidInputError(f"{name} must be a list of item ids (strings)")
    return [str(v) for v in value]


def _without(ids: Sequence[str] | None, drop: Sequence[str] | None) -> list[str]:
    """``ids`` in their order, less those in ``drop``."""
    dropped = set(drop or ())
    return [i for i in ids or () if i not in dropped]


def _file_path(value: Any) -> str | None:
    """Gradio hands uploads over as a path string or a FileData-like dict."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value.get("path") or None
    path = getattr(value, "path", value)
    return str(path) if path else None


# -- GPU work (ZeroGPU) ----------------------------------------------------------------------------
# The three service calls that run the encoders (and Captum) on a request; an upload's audio and video are
# encoded inside them too. On a ZeroGPU Space they run under spaces.GPU (see ui/gpu.py); elsewhere gpu_task
# is a no-op. ZeroGPU reserves the declared seconds and checks them against the visitor's daily GPU quota, so
# they are upper bounds, not estimates: one upload encoding or one explanation should need a small fraction of
# them on a GPU (benchmarks/gpu_check.py measures it); the headroom covers a fresh worker's start (weights moved
# onto the GPU). "thorough" runs Integrated Gradients and Occlusion, hence more time.
UPLOAD_GPU_S = 20
EXPLAIN_GPU_S = {"fast": 20, "thorough": 45}

# ZeroGPU pickles a decorated function's arguments into a forked worker, and the service holds locks,
# so these functions get the service as a key into this table (the fork inherits it) plus plain values.
# Weak values: a service that is gone (a finished test's) drops out by itself.
_SERVICES: "weakref.WeakValueDictionary[int, RecommenderService]" = weakref.WeakValueDictionary()


def _service_key(service: RecommenderService) -> int:
    _SERVICES[id(service)] = service
    return id(service)


def _explain_gpu_seconds(*_args: Any, method: str = "fast", **_kwargs: Any) -> int:
    return EXPLAIN_GPU_S.get(method, max(EXPLAIN_GPU_S.values()))


# user_errors inside gpu_task: in a ZeroGPU worker only a gr.Error keeps its message on the way back.
@gpu_task(UPLOAD_GPU_S)
@user_errors
def gpu_recommend_upload(service_key: int, *, image: str | None, title: str, description: str, k: int,
                         audio: str | None = None, video: str | None = None) -> list[Recommendation]:
    return _SERVICES[service_key].recommend_for_upload(image=image, title=title, description=description, k=k,
                                                       audio=audio, video=video)


@gpu_task(_explain_gpu_seconds)
@user_errors
def gpu_explain(service_key: int, liked_ids: list[str], item_id: str, *, method: str,
                disliked_ids: Sequence[str] = ()) -> Explanation:
    return _SERVICES[service_key].explain(liked_ids, item_id, method, list(disliked_ids))


@gpu_task(_explain_gpu_seconds)
@user_errors
def gpu_explain_upload(service_key: int, *, image: str | None, title: str, description: str, item_id: str,
                       method: str, audio: str | None = None, video: str | None = None) -> Explanation:
    return _SERVICES[service_key].explain_upload(image=image, title=title, description=description,
                                                 item_id=item_id, method=method, audio=audio, video=video)


class Handlers:
    def __init__(self, service: RecommenderService, repository: Repository, access: Access | None = None,
                 rate_limit: LabelRateLimit | None = None) -> None:
        self.service = service
        self.repository = repository
        self.access = access or Access()
        self.rate_limit = rate_limit or LabelRateLimit(0)
        self._gpu_key = _service_key(service)  # how the GPU functions below find the service

    # -- shared ------------------------------------------------------------------------------------
    def _record_impressions(self, recs: Sequence[Recommendation], context: list[str], session_key: str | None,
                            client: str) -> str:
        """Store what was shown. A storage failure is logged, not raised: recommendations keep working."""
        request_id = uuid.uuid4().hex
        try:
            self.repository.add_impressions(
                request_id=request_id,
                impressions=[ImpressionIn(item_id=r.item_id, rank=r.rank, score=r.score) for r in recs],
                context_ids=context,
                model_version=self.service.model_version,
                session_key=session_key,
                client=client,
            )
        except Exception:
            log.exception("could not record %d impressions; the recommendations were still served", len(recs))
        return request_id

    def _annotator(self, request: gr.Request | None) -> str:
        """Who the label belongs to: the caller as ``Access.caller`` names them, as the Label tab does (in open
        mode the one local user, ``local``). Checked before anything the caller sent is read; with accounts
        nobody else may resend that label's id."""
        return self.access.caller(request).username

    def _store_feedback(self, *, annotator: str | None, liked: list[str], item_id: str, label: str, request_id: str,
                        session_key: str | None, client: str) -> dict[str, Any]:
        self.rate_limit.check(annotator or session_key)
        if not self.service.has_item(item_id):
            raise UnknownItemError([item_id])
        self.service.catalog.check_ids(liked)
        result = self.repository.add_feedback(
            FeedbackIn(
                request_id=request_id,
                item_id=item_id,
                label=label,
                context_ids=tuple(liked),
                model_version=self.service.model_version,
                session_key=session_key,
                client=client,
                annotator=annotator,
            )
        )
        return {"stored": result.stored, "feedback_id": result.feedback_id}

    # -- API (gradio_client) -----------------------------------------------------------------------
    @user_errors
    def api_recommend(self, liked_ids: list[str], k: int = 10, request: gr.Request = None,
                      diversity: float = 0.0, disliked_ids: list[str] | None = None) -> list[dict]:
        """Top-k items for a profile of liked item ids (liked items are never returned); ``diversity``
        in [0, 1] re-ranks with maximal marginal relevance (0 = off); ``disliked_ids`` (optional) are never
        returned and push their look-alikes down (an id may not be in both lists)."""
        liked = _as_id_list(liked_ids, "liked_ids")
        disliked = _as_id_list(disliked_ids, "disliked_ids")
        recs = self.service.recommend(liked, int(k), float(diversity), disliked)
        self._record_impressions(recs, liked, _session_key(request), "api")
        return [r.to_api() for r in recs]

    @user_errors
    def api_recommend_upload(self, image: gr.FileData | None = None, title: str = "", description: str = "",
                             k: int = 10, request: gr.Request = None, audio: gr.FileData | None = None,
                             video: gr.FileData | None = None) -> list[dict]:
        """Top-k catalog items similar to a new item given by any of an image, a title/description, an ``audio``
        clip (ogg, oga, opus, mp3, wav, flac) and a ``video`` (webm, ogv, mp4; its soundtrack counts as its
        audio when no clip is given); each optional, at least one. Clips are bounded by the app's
        --max-audio-seconds / --max-video-seconds and the upload size limit. On a catalog without audio or
        video a clip matches nothing: alone it is refused with the reason; beside an image or text it is checked
        and the rest is matched. Each result: {"item_id", "title", "score", "rank"}."""
        recs = gpu_recommend_upload(self._gpu_key, image=_file_path(image), title=title or "",
                                    description=description or "", k=int(k), audio=_file_path(audio),
                                    video=_file_path(video))
        self._record_impressions(recs, [], _session_key(request), "api")
        return [r.to_api() for r in recs]

    @user_errors
    def api_feedback(self, liked_ids: list[str], item_id: str, label: str, request_id: str,
                     request: gr.Request = None) -> dict:
        """Store a like/dislike of ``item_id`` given the profile ``liked_ids``; idempotent per request_id."""
        annotator = self._annotator(request)
        return self._store_feedback(annotator=annotator, liked=_as_id_list(liked_ids, "liked_ids"),
                                    item_id=str(item_id), label=str(label), request_id=str(request_id),
                                    session_key=_session_key(request), client="api")

    @user_errors
    def api_explain(self, liked_ids: list[str], item_id: str, method: str = "fast",
                    disliked_ids: list[str] | None = None) -> dict:
        """Why ``item_id`` is recommended for ``liked_ids`` (and optional ``disliked_ids``): token scores, a
        region heatmap (rows x cols in [0, 1]), signed modality shares, the score's parts ("score_parts": text,
        image, audio, video, collaborative, item; they add up to "score"), the model's mix, per-liked-item
        shares (disliked items too, with what they took away). Where the catalog has audio/video:
        "audio_segments" [{"start_s", "end_s", "attribution"}], the item's ~2.3 s audio segments (they overlap
        by half), whose attributions add up to score_parts["audio"], and "video_frames" [{"t_s",
        "attribution", "heatmap"}], its keyframes, whose attributions add up to score_parts["video"] (the
        keyframe that moved the score most has its regions as "heatmap", rows x cols in [0, 1]; the others
        []); both [] for an item without them. ``method``: "fast" or "thorough" (more Shapley samples)."""
        return gpu_explain(self._gpu_key, _as_id_list(liked_ids, "liked_ids"), str(item_id), method=str(method),
                           disliked_ids=_as_id_list(disliked_ids, "disliked_ids")).to_api()

    @user_errors
    def api_search(self, query: str = "", genre: str = "", limit: int = 20) -> list[dict]:
        """Catalog items whose title, genres, tags or description contain every word of ``query`` ("" = all),
        title matches first; ``genre`` (one of the genre ids /item returns, "" = any) narrows them; at most
        ``limit`` (1 or more). Each: {"item_id", "title", "genres"}."""
        items = self.service.search(str(query or ""), str(genre) if genre else None, int(limit))
        return [{"item_id": i.item_id, "title": i.title, "genres": list(i.genres)} for i in items]

    @user_errors
    def api_item(self, item_id: str) -> dict:
        """One item's metadata: {"item_id", "title", "description", "genres", "tags", "has_image",
        "screenshots" (how many), "license", "attribution", "url", "has_audio" (a track, or a clip's soundtrack),
        "has_video", "collection" (album, game or series; "" for none)}."""
        return self.service.item(str(item_id)).to_api()

    @user_errors
    def api_similar(self, item_id: str, k: int = 10, request: gr.Request = None) -> list[dict]:
        """Top-k items like ``item_id`` (no profile needed; the item itself is never returned), as /recommend."""
        recs = self.service.similar(str(item_id), int(k))
        self._record_impressions(recs, [str(item_id)], _session_key(request), "api")
        return [r.to_api() for r in recs]

    @user_errors
    def api_explain_upload(self, image: gr.FileData | None = None, title: str = "", description: str = "",
                           item_id: str = "", method: str = "fast", audio: gr.FileData | None = None,
                           video: gr.FileData | None = None) -> dict:
        """Why catalog item ``item_id`` matched an upload (any of image, title/description, ``audio``, ``video``,
        as for /recommend_upload): the same fields as /explain, plus "query_heatmap" (the upload's matching
        regions), "upload_audio_segments" (which seconds of the uploaded clip matched: [{"start_s", "end_s",
        "attribution"}], adding up to score_parts["audio"]) and "upload_video_frames" (its keyframes, as
        "video_frames")."""
        return gpu_explain_upload(self._gpu_key, image=_file_path(image), title=title or "",
                                  description=description or "", item_id=str(item_id), method=str(method),
                                  audio=_file_path(audio), video=_file_path(video)).to_api()

    # -- catalog picker ----------------------------------------------------------------------------
    # The picker shows one page of the items that match the search. Two states travel with it: ``view``
    # ({"ids": every matching id, "page": 0-based}) and ``shown_ids`` (the current page's ids, what a
    # tile click's index points into).
    def picker_values(self, ids: list[str], page: int, liked: list[str] | None) -> tuple:
        """(tiles, shown_ids, note, view, has previous page, has next page) for page ``page`` of ``ids``: plain
        values, so that the layout can build the first page with them too."""
        pages = max(1, -(-len(ids) // CATALOG_PAGE))
        page = min(max(0, int(page)), pages - 1)
        shown = ids[page * CATALOG_PAGE:(page + 1) * CATALOG_PAGE]
        items = [self.service.item(i) for i in shown]
        note = f"{len(ids)} item(s)" if len(ids) == len(self.service.catalog) else f"{len(ids)} item(s) match"
        if pages > 1:
            first = page * CATALOG_PAGE + 1
            note += f" · page {page + 1} of {pages} (items {first}–{first + len(shown) - 1})"
        return (render.catalog_gallery(items, liked), shown, note, {"ids": ids, "page": page}, page > 0,
                page < pages - 1)

    def _picker_page(self, ids: list[str], page: int, liked: list[str] | None) -> tuple:
        tiles, shown, note, view, has_prev, has_next = self.picker_values(ids, page, liked)
        return (gr.Gallery(value=tiles, selected_index=None), shown, note, view, gr.Button(interactive=has_prev),
                gr.Button(interactive=has_next))

    @ui_event(outputs=6, note=2)  # a mistake is said in the match note
    def browse(self, query: str, genre: str | None, liked: list[str] | None) -> tuple:
        """Search (Enter, the Search button or a genre change): page 1 of the matching items."""
        genre = genre if genre and genre != "All genres" else None
        items = self.service.search(query or "", genre)
        return self._picker_page([i.item_id for i in items], 0, liked)

    @ui_event(outputs=6, note=2)
    def turn_page(self, view: dict | None, step: int, liked: list[str] | None) -> tuple:
        """Previous (``step`` -1) or next (+1) page of the current matches."""
        view = view or {"ids": self.service.catalog.ids, "page": 0}
        return self._picker_page(list(view["ids"]), int(view.get("page", 0)) + int(step), liked)

    @ui_event(outputs=3)
    def pick_and_mark(self, shown_ids: list[str], liked: list[str] | None, disliked: list[str] | None,
                      evt: gr.SelectData) -> tuple[list[str], list[str], Any]:
        """A tile click: toggle its item (:meth:`pick`) and re-mark the page in the same answer (one round trip,
        so the next click lands on the re-drawn tiles); an item liked this way leaves the disliked items."""
        liked = self.pick(shown_ids, liked, evt)
        return liked, _without(disliked, liked), self.mark_liked(shown_ids, liked)

    @ui_event(outputs=2)
    def liked_edited(self, shown_ids: list[str] | None, liked: list[str] | None, disliked: list[str] | None
                     ) -> tuple[Any, list[str]]:
        """The liked items changed in their box (typing, ×) or by an example profile: re-mark the tiles, and an
        item that is now liked leaves the disliked items (the latest choice wins)."""
        return self.mark_liked(shown_ids, liked), _without(disliked, liked)

    @ui_event(outputs=2)
    def disliked_edited(self, shown_ids: list[str] | None, disliked: list[str] | None, liked: list[str] | None
                        ) -> tuple[list[str], Any]:
        """An item typed into the disliked items leaves the liked ones (and loses its tile's liked mark)."""
        liked = _without(liked, disliked)
        return liked, self.mark_liked(shown_ids, liked)

    @ui_event()
    def mark_liked(self, shown_ids: list[str] | None, liked: list[str] | None) -> Any:
        """The current page's tiles again, with the liked ones marked (after any change of the liked set)."""
        items = [self.service.item(i) for i in shown_ids or [] if self.service.has_item(i)]
        return gr.Gallery(value=render.catalog_gallery(items, liked))

    # -- UI events ---------------------------------------------------------------------------------
    @ui_event()
    def item_images(self, state: dict | None) -> Any:
        """The selected result's images (icon, then screenshots) for the panel's image strip; hidden when
        nothing is selected (a new result list) or the item has no image."""
        selected = (state or {}).get("selected")
        if not selected or not self.service.has_item(selected):
            return gr.Gallery(value=None, visible=False)
        images = render.item_images(self.service.item(selected))
        return gr.Gallery(value=images or None, visible=bool(images), selected_index=None)

    @ui_event(outputs=2)
    def item_media(self, state: dict | None) -> tuple:
        """The selected result's audio and video players; each hidden (and emptied) when nothing is selected (a new
        result list) or the item has no such file."""
        selected = (state or {}).get("selected")
        item = self.service.item(selected) if selected and self.service.has_item(selected) else None
        return media.players(item)

    def pick(self, shown_ids: list[str], liked: list[str] | None, evt: gr.SelectData) -> list[str]:
        """Clicking a catalog tile toggles it in the liked set (the UI event is :meth:`pick_and_mark`)."""
        liked = list(liked or [])
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if index is None or not 0 <= int(index) < len(shown_ids):
            return liked
        item_id = shown_ids[int(index)]
        if item_id in liked:
            liked.remove(item_id)
        else:
            liked.append(item_id)
        return liked

    @ui_event(outputs=RECOMMEND_OUTPUTS, note=-1)
    def recommend(self, liked: list[str] | None, k: float, request: gr.Request, diversity: float = 0.0,
                  disliked: list[str] | None = None) -> tuple:
        """The Recommend button: results for the liked items, without the disliked ones (and their look-alikes
        lower)."""
        return self._recommend_values(liked, disliked, k, diversity, request)

    def _recommend_values(self, liked: list[str] | None, disliked: list[str] | None, k: float, diversity: float,
                          request: gr.Request | None) -> tuple:
        """The values of a recommend event (:data:`RECOMMEND_OUTPUTS`); raises on a refusal."""
        liked = list(liked or [])
        # The boxes keep the two lists apart (liked_edited, disliked_edited); should an item still be in both,
        # the liked one wins rather than the whole request being refused.
        disliked = _without(disliked, liked)
        recs = self.service.recommend(liked, int(k), float(diversity or 0.0), disliked)
        request_id = self._record_impressions(recs, liked, _session_key(request), "ui")
        state = {"request_id": request_id, "liked": liked, "disliked": disliked, "results": [r.item_id for r in recs],
                 "recs": {r.item_id: r for r in recs}, "selected": None}
        kept_out = f", {len(disliked)} disliked item(s) kept out" if disliked else ""
        status = (f"{len(recs)} recommendations for {len(liked)} liked item(s){kept_out} · "
                  f"model `{self.service.model_version}`")
        if render.reordered(recs):
            status += "\n\n" + render.diversity_note(recs)
        return (*shown_values(recs, state, details="Select a recommendation to see why and to rate it.", rating=True),
                status)

    @ui_event(outputs=2, note=1)
    def select_result(self, state: dict | None, evt: gr.SelectData) -> tuple[dict, str]:
        if not state or not state.get("results"):
            return state or {}, ""
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if index is None or not 0 <= int(index) < len(state["results"]):
            return state, ""
        item_id = state["results"][int(index)]
        state = dict(state, selected=item_id)
        return state, render.item_details(self.service.item(item_id), state["recs"].get(item_id))

    def _store_rating(self, label: str, state: dict | None, request: gr.Request | None) -> str:
        """Store the judgement of the selected result (with the profile it was given for) and say so; raises when
        it is refused (not logged in, over the rate limit, nothing selected)."""
        annotator = self._annotator(request)
        if not state or not state.get("selected"):
            raise InvalidInputError("select a recommendation first, then press Like or Dislike")
        item_id = state["selected"]
        session_key = _session_key(request) or "anonymous"
        # Same click twice on the same result list = one label; a changed mind is a new label.
        request_id = hashlib.sha256(f"ui|{session_key}|{state['request_id']}|{item_id}|{label}".encode()).hexdigest()[:40]
        result = self._store_feedback(annotator=annotator, liked=list(state.get("liked") or []), item_id=item_id,
                                      label=label, request_id=request_id, session_key=session_key, client="ui")
        title = render.esc(self.service.item(item_id).title)
        verb = "👍 liked" if label == "like" else "👎 disliked"
        if result["stored"]:
            return f"Saved: you {verb} **{title}** (label #{result['feedback_id']})."
        return f"Already saved: you {verb} **{title}** (label #{result['feedback_id']})."

    @ui_event(outputs=RATE_OUTPUTS, note=FEEDBACK_NOTE)
    def rate(self, label: str, state: dict | None, liked: list[str] | None, disliked: list[str] | None,
             shown_ids: list[str] | None, k: float, diversity: float, request: gr.Request) -> tuple:
        """Like or Dislike of the selected result: the label is stored as it always was (the label source), then
        the item joins this person's liked items (Like) or disliked items (Dislike), leaving the other list, and
        the list is made again for that profile at once. A refused label changes nothing."""
        saved = self._store_rating(label, state, request)
        item_id = state["selected"]
        liked, disliked = _without(liked, [item_id]), _without(disliked, [item_id])
        (liked if label == "like" else disliked).append(item_id)
        try:
            values = list(self._recommend_values(liked, disliked, k, diversity, request))
        except RecsysError as exc:  # the label is stored; only the new list was refused (e.g. too many liked items)
            log.warning("rating stored, list not refreshed: %s", exc)
            refused = f"The list was not made again: {exc}"
            gr.Warning(refused, duration=WARNING_SECONDS)
            skipped = [gr.skip()] * RATE_OUTPUTS
            skipped[FEEDBACK_NOTE] = f"{saved}\n\n{note_text(refused)}"
            return tuple(skipped)
        title = render.esc(self.service.item(item_id).title)
        if label == "like":
            done = f"**{title}** joined *Items you like*; the list below is made again with it."
        else:
            done = (f"**{title}** is in *Items you dislike*: it is kept out and its look-alikes go down (remove it "
                    "there with × to undo).")
        values[FEEDBACK_NOTE] = f"{saved} {done}"  # the same place from the end: the panel's note, then the status
        return (liked, disliked, self.mark_liked(shown_ids, liked), *values)

    def _explained(self, state: dict | None, method: str, progress) -> Explanation:
        """The service's explanation of the selected result (for the profile it was made for, or the upload)."""
        if not state or not state.get("selected"):
            raise InvalidInputError("select a recommendation first")
        item_id = state["selected"]
        progress(0.1, desc=f"Explaining with the {method} method…")
        if "upload" in state:
            up = state["upload"]
            explanation = gpu_explain_upload(self._gpu_key, image=up.get("image"),
                                             title=up.get("title", ""), description=up.get("description", ""),
                                             item_id=item_id, method=method, audio=up.get("audio"),
                                             video=up.get("video"))
        else:
            explanation = gpu_explain(self._gpu_key, list(state.get("liked") or []), item_id, method=method,
                                      disliked_ids=list(state.get("disliked") or []))
        progress(0.95, desc="Drawing")
        return explanation

    @ui_event()  # a toast only: the two tabs' explanations have different outputs
    def explain_panel(self, state: dict | None, method: str, progress: gr.Progress = gr.Progress()) -> tuple:
        """The whole "why" panel for the selected result from one explanation: :meth:`explain`'s values, then the
        audio plot and keyframe strip (``ResultsPanel.explanation`` + ``ResultsPanel.media``)."""
        explanation = self._explained(state, method, progress)
        return self._explanation_values(state, explanation) + self._media_values(state, explanation)

    @ui_event()  # a toast only: the two tabs' explanations have different outputs
    def explain(self, state: dict | None, method: str, progress: gr.Progress = gr.Progress()) -> tuple:
        """Explanation panel for the selected recommendation (catalog profile or upload), in the order of
        ``ResultsPanel.explanation`` (:mod:`ui.panels`): the words, regions, parts, history and summary
        (:meth:`explain_panel` adds the audio and video pictures)."""
        return self._explanation_values(state, self._explained(state, method, progress))

    def _explanation_values(self, state: dict, explanation: Explanation) -> tuple:
        catalog = self.service.catalog
        item = catalog.get(explanation.item_id)
        caption = render.heatmap_caption(explanation)
        heatmap = render.heatmap_on_image(item.image, explanation.image_heatmap, caption.lower())
        outputs = (
            render.highlighted_text(explanation),
            # Hidden where there is nothing to draw (an item without an image): an empty frame says nothing.
            gr.AnnotatedImage(value=heatmap, label=caption, visible=heatmap is not None),
            # Values alone: a changed y_lim with them would redraw the previous item's bars (render.signed_bars).
            render.modality_frame(explanation),
            render.history_frame(explanation, catalog),
            render.history_table(explanation, catalog),
            render.explanation_summary(explanation, catalog),
        )
        if "upload" in state:
            caption = render.heatmap_caption(explanation, upload=True)
            heatmap = render.heatmap_on_image(state["upload"].get("image"), explanation.query_heatmap, caption.lower())
            outputs += (gr.AnnotatedImage(value=heatmap, label=caption, visible=heatmap is not None),)
        return outputs

    def _media_values(self, state: dict, explanation: Explanation) -> tuple:
        """The audio plot and keyframe strip of ``explanation`` (+ the upload's, on the Upload tab), each hidden
        when there is nothing to draw (an item without audio or video, a catalog without them)."""
        service = self.service
        item = service.catalog.get(explanation.item_id)
        limits = service.media_limits
        hidden_plot, hidden_strip = cleared_media(False)
        plot, strip = hidden_plot, hidden_strip
        title = item.title
        audio_part = render.printed_parts(explanation).get("audio", explanation.audio_score)  # as the summary says
        # Only what moved the score: a part that counts for nothing (no liked item has audio) is not drawn.
        if media.moved(explanation.audio_segments) and item.audio_source is not None:
            samples = media.catalog_waveform(item.audio_source, limits=limits,
                                             seconds=media.segments_end(explanation.audio_segments))
            plot = gr.Image(value=media.audio_attribution_image(
                samples, explanation.audio_segments, part=audio_part,
                title=title), visible=True)
        if media.moved(explanation.video_frames) and item.video is not None:
            frames = media.catalog_keyframes(item.video, config=service.config.video, limits=limits)
            strip = gr.Gallery(value=media.keyframe_strip(frames, explanation.video_frames), visible=True,
                               selected_index=None, **media.strip_layout(len(explanation.video_frames)))
        if "upload" not in state:
            return plot, strip
        up = state["upload"]
        up_plot, up_strip = hidden_plot, hidden_strip
        sound = up.get("audio") or up.get("video")
        if media.moved(explanation.upload_audio_segments) and sound:
            samples = media.waveform(sound, limits=limits,
                                     seconds=media.segments_end(explanation.upload_audio_segments))
            up_plot = gr.Image(value=media.audio_attribution_image(
                samples, explanation.upload_audio_segments, part=audio_part,
                title=f"Your clip \u2192 {title}"), visible=True)
        if media.moved(explanation.upload_video_frames) and up.get("video"):
            frames = media.keyframes(up["video"], config=service.config.video, limits=limits)
            up_strip = gr.Gallery(value=media.keyframe_strip(frames, explanation.upload_video_frames), visible=True,
                                  selected_index=None, **media.strip_layout(len(explanation.upload_video_frames)))
        return plot, strip, up_plot, up_strip

    def like(self, state: dict | None, liked: list[str] | None, disliked: list[str] | None,
             shown_ids: list[str] | None, k: float, diversity: float, request: gr.Request) -> tuple:
        return self.rate("like", state, liked, disliked, shown_ids, k, diversity, request)

    def dislike(self, state: dict | None, liked: list[str] | None, disliked: list[str] | None,
                shown_ids: list[str] | None, k: float, diversity: float, request: gr.Request) -> tuple:
        return self.rate("dislike", state, liked, disliked, shown_ids, k, diversity, request)

    @ui_event(outputs=UPLOAD_OUTPUTS, note=-1)
    def recommend_upload(self, image: str | None, title: str, description: str, k: float,
                         request: gr.Request, audio: str | None = None, video: str | None = None) -> tuple:
        """Find similar items: any of image, text, audio clip and video (a refusal is said in the status line)."""
        audio, video = _file_path(audio), _file_path(video)
        recs = gpu_recommend_upload(self._gpu_key, image=_file_path(image), title=title or "",
                                    description=description or "", k=int(k), audio=audio, video=video)
        self._record_impressions(recs, [], _session_key(request), "ui")
        state = {"results": [r.item_id for r in recs], "recs": {r.item_id: r for r in recs}, "selected": None,
                 "upload": {"image": _file_path(image), "title": title or "", "description": description or "",
                            "audio": audio, "video": video}}
        return (*shown_values(recs, state, details="Select an item to see why it is similar.", upload=True),
                f"{len(recs)} catalog items similar to your upload")

