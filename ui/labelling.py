"""The "Label" tab: annotators judge (profile, item) pairs of a campaign, blind to others' answers.

Keyboard first, as in Label Studio or Prodigy: 0-3 (graded) or 1/2 (like/dislike) pick the answer,
Enter submits, S skips, U undoes the last answer (:data:`KEYS_JS`). A skip gives the task back and an
undo re-opens the latest answer so that the next one supersedes it; :mod:`storage.tasks` says why.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import gradio as gr

from recsys_core.errors import InvalidInputError
from storage import InvalidTaskError, Repository, TaskOut
from studio.campaigns import campaign_guidelines, campaign_scale
from ui import media, render
from ui.access import Access, AccessDenied
from ui.errors import ui_event, user_errors
from ui.rate_limit import LabelRateLimit

log = logging.getLogger(__name__)

GRADES = [("3 · highly relevant", 3), ("2 · relevant", 2), ("1 · somewhat", 1), ("0 · not relevant", 0)]
BINARY = [("1 · 👍 like", "like"), ("2 · 👎 dislike", "dislike")]
#: How much of an item's description the task card shows; the rest is cut at a word, never mid-word.
DESCRIPTION_CHARS = 600

NO_CAMPAIGN = ("### No campaign yet: an admin creates one in the **Admin** tab\n"
               "(New labelling campaign); it then appears in the list above.")
ALL_DONE = "### All tasks in this campaign are done — thank you!"
SHORTCUTS = ("**Keys:** `0`-`3` grade (or `1` like, `2` dislike) · `Enter` submit · `S` skip · "
             "`U` undo your last answer · not while typing in a text box")

# One document-level listener, installed the first time the Label tab is opened. It acts only while
# the tab is shown (its submit button is laid out) and never while the focus is in a text field; it
# clicks the same buttons and radio inputs a mouse would, so every path goes through the same handlers.
KEYS_JS = """
() => {
  if (window.__studioLabelKeys) return;
  window.__studioLabelKeys = true;
  document.addEventListener("keydown", (event) => {
    const submit = document.getElementById("label-submit");
    if (!submit || submit.offsetParent === null) return;
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    const target = event.target;
    const tag = target && target.tagName;
    if (target && (target.isContentEditable || tag === "TEXTAREA" || tag === "SELECT" ||
        (tag === "INPUT" && !["radio", "checkbox"].includes(target.type)))) return;
    const key = event.key.toLowerCase();
    // Enter on a focused button already clicks it: handling it too would answer twice.
    if (key === "enter" && tag === "BUTTON") return;
    const click = (id) => {
      const button = document.getElementById(id);
      if (button && !button.disabled) { event.preventDefault(); button.click(); }
    };
    if (key === "enter") return click("label-submit");
    if (key === "s") return click("label-skip");
    if (key === "u") return click("label-undo");
    if (/^[0-3]$/.test(key)) {
      const inputs = Array.from(document.querySelectorAll("#label-answer input[type=radio]"));
      const binary = {"1": "like", "2": "dislike"};
      const pick = inputs.find((i) => i.value === key) || inputs.find((i) => i.value === binary[key]);
      if (pick) { event.preventDefault(); pick.click(); }
    }
  });
}
"""


def cut_at_word(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    """``text`` up to ``limit`` characters, cut at the last whole word and marked with "…" when shortened."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[:limit + 1]  # one more: a space right after the limit means the last word is whole
    space = max(head.rfind(" "), head.rfind("\n"))
    # A single word longer than most of the limit (a URL) is cut inside it rather than dropped.
    cut = head[:space] if space > limit // 2 else text[:limit]
    return cut.rstrip(" \n,;:.-–—") + "…"


def progress_bar(username: str, campaign: str, progress: dict[str, int]) -> str:
    """An HTML bar of ``username``'s answers out of the tasks they can have in ``campaign``."""
    answered = progress["answered"]
    total = answered + progress["open"] + progress["remaining"]
    share = 100.0 * answered / total if total else 0.0
    skipped = f" · {progress['skipped']} skipped" if progress.get("skipped") else ""
    return (
        f'<div class="label-progress" role="progressbar" aria-valuemin="0" aria-valuemax="{total}" '
        f'aria-valuenow="{answered}" aria-label="your answers in this campaign">'
        f'<div style="height:10px;border-radius:5px;background:#e5e7eb;overflow:hidden">'
        f'<div style="width:{share:.1f}%;height:100%;background:#16a34a"></div></div>'
        f'<div style="font-size:0.9em;margin-top:4px"><b>{render.esc(username)}</b> · '
        f'campaign <code>{render.esc(campaign)}</code>: {answered} of {total} answered{skipped}</div></div>'
    )


class LabellingHandlers:
    def __init__(self, service, repository: Repository, access: Access, rate_limit: LabelRateLimit | None = None) -> None:
        self.service = service
        self.repository = repository
        self.access = access
        self.rate_limit = rate_limit or LabelRateLimit(0)
        self._scales: dict[str, str] = {}  # a campaign's scale never changes once it exists

    def _scale(self, campaign: str) -> str:
        if campaign not in self._scales:  # one DB read per campaign, not one per task
            scale = campaign_scale(self.repository, campaign)
            if scale is None:  # an unknown name: say so, and remember nothing
                raise InvalidInputError(f"there is no campaign {campaign!r}; choose one an admin has created")
            self._scales[campaign] = scale
        return self._scales[campaign]

    def _guidelines(self, campaign: str | None) -> str:
        if not campaign:
            return NO_CAMPAIGN
        text = campaign_guidelines(self.repository, campaign)
        return f"**Guidelines for `{render.esc(campaign)}`**\n\n{text}" if text else \
            "*No guidelines for this campaign: judge by the question below the item.*"

    @ui_event(outputs=3)
    def campaigns(self, request: gr.Request = None) -> tuple:
        """The campaign list, the first campaign's guidelines (or the empty state) and the caller's progress."""
        names = self.repository.list_campaigns()
        first = names[0] if names else None
        return gr.update(choices=names, value=first), self._guidelines(first), self._progress_or_blank(first, request)

    @ui_event(outputs=2)
    def choose(self, campaign: str | None, request: gr.Request = None) -> tuple:
        """Guidelines and progress of the chosen campaign (shown to visitors who are not logged in too)."""
        return self._guidelines(campaign), self._progress_or_blank(campaign, request)

    def _progress_or_blank(self, campaign: str | None, request) -> str:
        if not campaign:
            return ""
        try:
            username = self.access.caller(request).username
        except AccessDenied:
            return "Log in to label."
        return self._progress(campaign, username)

    def _progress(self, campaign: str, username: str) -> str:
        return progress_bar(username, campaign, self.repository.annotator_progress(campaign, username))

    def _show(self, campaign: str, username: str, task: TaskOut | None) -> tuple:
        """The task's view: profile, item image, card, answer radio, state, progress."""
        scale = self._scale(campaign)
        choices = GRADES if scale == "graded" else BINARY
        if task is None:
            return ([], None, f"{ALL_DONE}\nPress **U** to change your last answer.",
                    gr.update(choices=choices, value=None), {}, self._progress(campaign, username))
        items = [self.service.item(i) for i in task.context_ids if self.service.has_item(i)]
        target = self.service.item(task.item_id)
        # (image, title): the titles are the tiles' captions, marked for the items that can be played.
        profile = [(image, render.media_marks(item.audio_source is not None, item.video is not None) + title)
                   for (image, title), item in zip(render.catalog_gallery(items), items)]
        card = (f"### {render.esc(target.title)}\n{render.esc(cut_at_word(target.description))}\n\n"
                f"*Genres:* {render.esc(render.genres_text(target.genres) or '—')}")
        previous = None
        if task.previous is not None:  # re-opened by an undo: start from the annotator's own earlier answer
            label, grade = task.previous
            previous = grade if scale == "graded" else label
            card = ("> You re-opened this answer: choose again and submit, and your new answer replaces it "
                    "(the earlier one stays in the history). **S** keeps it as it was.\n\n" + card)
        state = {"task_id": task.task_id, "campaign": campaign, "scale": scale, "request_id": uuid.uuid4().hex,
                 "item_id": task.item_id, "profile": [i.item_id for i in items]}  # the tiles' order
        image = str(target.image) if target.image is not None else str(render.NO_IMAGE)
        return (profile, image, card, gr.update(choices=choices, value=previous), state,
                self._progress(campaign, username))

    @ui_event(outputs=6, note=2)  # a mistake is shown where the task would be
    def next_task(self, campaign: str | None, request: gr.Request = None) -> tuple:
        return self._next_task(campaign, request)

    def _next_task(self, campaign: str | None, request: gr.Request | None) -> tuple:
        caller = self.access.caller(request)
        if not campaign:
            raise InvalidInputError("choose a campaign first (an admin creates them in the Admin tab)")
        self._scale(campaign)  # an unknown campaign is refused before anything is assigned
        return self._show(campaign, caller.username, self.repository.next_task(campaign, caller.username))

    @ui_event(outputs=7, note=6)  # the task and the answer stay as they are; the note says what to do
    def answer(self, state: dict, answer: Any, request: gr.Request = None) -> tuple:
        caller = self.access.caller(request)
        if not state or "task_id" not in state:
            raise InvalidInputError("get a task first")
        if answer is None or answer == "":
            raise InvalidInputError("choose an answer before submitting (keys 0-3, or 1/2 for like/dislike)")
        self.rate_limit.check(caller.username)
        if state["scale"] == "graded":
            label, grade = "graded", int(answer)
        else:
            label, grade = str(answer), None
        result = self.repository.answer_task(caller.username, int(state["task_id"]), label, grade,
                                             state["request_id"], session_key=getattr(request, "session_hash", None))
        note = "Saved." if result.stored else "Already saved (resent)."
        return self._next_task(state["campaign"], request) + (note,)

    @ui_event(outputs=7, note=6)
    def skip(self, state: dict, request: gr.Request = None) -> tuple:
        caller = self.access.caller(request)
        if not state or "task_id" not in state:
            raise InvalidInputError("get a task first")
        outcome = _task_error(self.repository.skip_task, int(state["task_id"]), caller.username)
        note = ("Skipped: it goes to someone else, and you will not get it again." if outcome == "skipped"
                else "Kept your earlier answer.")
        return self._next_task(state["campaign"], request) + (note,)

    @ui_event(outputs=7, note=6)
    def undo(self, campaign: str | None, request: gr.Request = None) -> tuple:
        caller = self.access.caller(request)
        if not campaign:
            raise InvalidInputError("choose a campaign first (an admin creates them in the Admin tab)")
        self._scale(campaign)
        task = _task_error(self.repository.undo_last_answer, campaign, caller.username)
        if task is None:
            return self._next_task(campaign, request) + ("Nothing to undo: you have not answered a task here yet.",)
        return self._show(campaign, caller.username, task) + ("Undone: your last answer is open again.",)

    # -- players -----------------------------------------------------------------------------------
    @ui_event(outputs=5)
    def task_media(self, state: dict | None) -> tuple:
        """A new task on screen (its state changed): the item's players, the profile's players emptied, and a hint
        when profile items can be played. Everything hidden that has nothing to play."""
        state = state or {}
        target = self._item(state.get("item_id"))
        playable = [i for i in map(self._item, state.get("profile") or ()) if i is not None and _has_media(i)]
        hint = (f"{render.AUDIO_MARK}/{render.VIDEO_MARK} {len(playable)} profile item(s) can be played: click one "
                "to hear or watch it before you judge." if playable else "")
        return (*media.players(target), *media.players(None), hint)

    @ui_event(outputs=3, note=2)
    def play_profile_item(self, state: dict | None, evt: gr.SelectData) -> tuple:
        """A click on a profile tile: its players (hidden when it has no media) and which item they play."""
        ids = (state or {}).get("profile") or []
        index = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if index is None or not 0 <= int(index) < len(ids):
            return (*media.players(None), "")
        item = self._item(ids[int(index)])
        if item is None:
            return (*media.players(None), "")
        if not _has_media(item):
            return (*media.players(None), f"*{render.esc(item.title)}* has no audio or video.")
        return (*media.players(item), f"Playing profile item **{render.esc(item.title)}**.")

    def _item(self, item_id: str | None):
        return self.service.item(item_id) if item_id and self.service.has_item(item_id) else None

    # -- API (any logged-in user) ------------------------------------------------------------------
    @user_errors
    def api_next(self, campaign: str, request: gr.Request = None) -> dict:
        """Your next task in ``campaign``: {"task_id", "context_ids", "item_id", "scale"}; {} when none is left."""
        caller = self.access.caller(request)
        task = self.repository.next_task(str(campaign), caller.username)
        if task is None:
            return {}
        return _task_dict(task, self._scale(str(campaign)))

    @user_errors
    def api_answer(self, task_id: int, answer: str, request_id: str, request: gr.Request = None) -> dict:
        """Answer your task: a grade "0".."3" (graded campaigns) or "like"/"dislike"; idempotent per request_id."""
        caller = self.access.caller(request)
        self.rate_limit.check(caller.username)
        answer = str(answer).strip()
        if answer in ("0", "1", "2", "3"):
            label, grade = "graded", int(answer)
        else:
            label, grade = answer, None
        result = self.repository.answer_task(caller.username, int(task_id), label, grade, str(request_id),
                                             session_key=getattr(request, "session_hash", None), client="api")
        return {"stored": result.stored, "feedback_id": result.feedback_id}

    @user_errors
    def api_skip(self, task_id: int, request: gr.Request = None) -> dict:
        """Give your open task back unanswered: {"outcome": "skipped"} (or "kept" for a re-opened answer)."""
        caller = self.access.caller(request)
        return {"outcome": _task_error(self.repository.skip_task, int(task_id), caller.username)}

    @user_errors
    def api_undo(self, campaign: str, request: gr.Request = None) -> dict:
        """Re-open your last answer in ``campaign``: the task as /label_next gives it, plus "previous"; {} if none."""
        caller = self.access.caller(request)
        task = _task_error(self.repository.undo_last_answer, str(campaign), caller.username)
        if task is None:
            return {}
        label, grade = task.previous or (None, None)
        return {**_task_dict(task, self._scale(str(campaign))), "previous": label if grade is None else str(grade)}

    @ui_event()
    def my_labels(self, request: gr.Request = None) -> list[list[Any]]:
        caller = self.access.caller(request)
        rows = []
        for f in self.repository.my_feedback(caller.username, limit=200):
            title = self.service.item(f.item_id).title if self.service.has_item(f.item_id) else f.item_id
            rows.append([f.created_at.strftime("%Y-%m-%d %H:%M"), title, f.label if f.grade is None else f.grade,
                         ", ".join(f.context_ids)])
        return rows


def _has_media(item) -> bool:
    return item.audio is not None or item.video is not None


def _task_dict(task: TaskOut, scale: str) -> dict:
    return {"task_id": task.task_id, "context_ids": list(task.context_ids), "item_id": task.item_id, "scale": scale}


def _task_error(fn, *args: Any) -> Any:
    """Run a storage call whose :class:`InvalidTaskError` is written for the person (e.g. a task not theirs)."""
    try:
        return fn(*args)
    except InvalidTaskError as exc:
        raise InvalidInputError(str(exc)) from None


def build_labelling_tab(handlers: LabellingHandlers) -> None:
    """Inside an open ``gr.Blocks``: the Label tab and its wiring."""
    ui = {"api_visibility": "private"}
    with gr.Tab("Label", elem_id="label-tab") as tab:
        gr.Markdown("Judge whether the **item** suits someone who likes the **profile** items. "
                    "You see tasks in a random order and never other people's answers.")
        with gr.Row():
            campaign = gr.Dropdown(label="Campaign", choices=[], scale=3)
            start = gr.Button("Get a task", variant="primary", scale=1)
        guidelines = gr.Markdown(NO_CAMPAIGN, elem_id="label-guidelines")
        progress = gr.HTML(elem_id="label-progress")
        with gr.Row():
            with gr.Column(scale=3):
                profile = gr.Gallery(label="Profile: this person likes", columns=4, height=260, allow_preview=False,
                                     object_fit="contain", show_label=True, elem_id="label-profile")
                # One pair of players for the profile: a click on a tile loads that item into them.
                profile_hint = gr.Markdown(elem_id="label-profile-hint")
                with gr.Row():
                    profile_audio = gr.Audio(label="Profile item: listen", type="filepath", interactive=False,
                                             visible=False, elem_id="label-profile-audio")
                    profile_video = gr.Video(label="Profile item: watch", interactive=False, visible=False,
                                             height=200, elem_id="label-profile-video")
            with gr.Column(scale=2):
                target_image = gr.Image(label="Item to judge", height=260, interactive=False)
                target_audio = gr.Audio(label="Item to judge: listen", type="filepath", interactive=False,
                                        visible=False, elem_id="label-item-audio")
                target_video = gr.Video(label="Item to judge: watch", interactive=False, visible=False, height=200,
                                        elem_id="label-item-video")
        target_card = gr.Markdown(elem_id="label-card")
        answer = gr.Radio(GRADES, label="How relevant is the item to this profile?", elem_id="label-answer")
        with gr.Row():
            submit = gr.Button("Submit and next (Enter)", variant="primary", elem_id="label-submit", scale=2)
            skip = gr.Button("Skip (S)", elem_id="label-skip", scale=1)
            undo = gr.Button("Undo last answer (U)", elem_id="label-undo", scale=1)
        gr.Markdown(SHORTCUTS, elem_id="label-shortcuts")
        note = gr.Markdown(elem_id="label-note")
        state = gr.State({})
        with gr.Accordion("My labels", open=False):
            refresh_mine = gr.Button("Show my labels", size="sm")
            mine = gr.Dataframe(headers=["when", "item", "answer", "profile"], interactive=False, wrap=True)
    outputs = [profile, target_image, target_card, answer, state, progress]
    tab.select(None, None, None, js=KEYS_JS, api_visibility="private", api_name="ui_label_keys")
    tab.select(handlers.campaigns, None, [campaign, guidelines, progress], api_name="ui_label_campaigns", **ui)
    campaign.change(handlers.choose, [campaign], [guidelines, progress], api_name="ui_label_choose", **ui)
    label_queue = {"concurrency_limit": 16, "concurrency_id": "label"}
    start.click(handlers.next_task, [campaign], outputs, api_name="ui_label_next", **label_queue, **ui)
    submit.click(handlers.answer, [state, answer], outputs + [note], api_name="ui_label_answer", **label_queue, **ui)
    skip.click(handlers.skip, [state], outputs + [note], api_name="ui_label_skip", **label_queue, **ui)
    undo.click(handlers.undo, [campaign], outputs + [note], api_name="ui_label_undo", **label_queue, **ui)
    refresh_mine.click(handlers.my_labels, None, [mine], api_name="ui_label_mine", **ui)
    # Every way to a new task (get, submit, skip, undo) sets the state: the players follow it.
    players = [target_audio, target_video, profile_audio, profile_video, profile_hint]
    state.change(handlers.task_media, [state], players, api_name="ui_label_players", show_progress="hidden", **ui)
    profile.select(handlers.play_profile_item, [state], [profile_audio, profile_video, profile_hint],
                   api_name="ui_label_play_profile", show_progress="hidden", **ui)


def register_labelling_api(handlers: LabellingHandlers) -> None:
    """The labelling API endpoints; call outside ``gr.Tabs`` (an endpoint there is drawn as a tab button)."""
    gr.api(handlers.api_next, api_name="label_next", concurrency_limit=16, concurrency_id="label")
    gr.api(handlers.api_answer, api_name="label_answer", concurrency_limit=16, concurrency_id="label")
    gr.api(handlers.api_skip, api_name="label_skip", concurrency_limit=16, concurrency_id="label")
    gr.api(handlers.api_undo, api_name="label_undo", concurrency_limit=16, concurrency_id="label")
