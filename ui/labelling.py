"""The "Label" tab: annotators judge (profile, item) pairs of a campaign, blind to others' answers."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import gradio as gr

from recsys_core.errors import InvalidInputError
from storage import Repository
from studio.campaigns import campaign_scale
from ui import render
from ui.access import Access
from ui.errors import ui_event, user_errors
from ui.rate_limit import LabelRateLimit

log = logging.getLogger(__name__)

GRADES = [("3 · highly relevant", 3), ("2 · relevant", 2), ("1 · somewhat", 1), ("0 · not relevant", 0)]
BINARY = [("👍 like", "like"), ("👎 dislike", "dislike")]


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

    @ui_event()
    def campaigns(self) -> Any:
        names = self.repository.list_campaigns()
        return gr.update(choices=names, value=names[0] if names else None)

    def _progress(self, campaign: str, username: str) -> str:
        p = self.repository.annotator_progress(campaign, username)
        return (f"**{render.esc(username)}** · campaign `{render.esc(campaign)}`: {p['answered']} answered, "
                f"{p['remaining']} more available to you.")

    @ui_event(outputs=6, note=2)  # a mistake is shown where the task would be
    def next_task(self, campaign: str | None, request: gr.Request = None) -> tuple:
        return self._next_task(campaign, request)

    def _next_task(self, campaign: str | None, request: gr.Request | None) -> tuple:
        caller = self.access.caller(request)
        if not campaign:
            raise InvalidInputError("choose a campaign first (an admin creates them in the Admin tab)")
        task = self.repository.next_task(campaign, caller.username)
        scale = self._scale(campaign)
        choices = GRADES if scale == "graded" else BINARY
        if task is None:
            return ([], None, "### Nothing left for you in this campaign: thank you!", gr.update(choices=choices, value=None),
                    {}, self._progress(campaign, caller.username))
        items = [self.service.item(i) for i in task.context_ids if self.service.has_item(i)]
        target = self.service.item(task.item_id)
        profile = render.catalog_gallery(items)
        card = (f"### {render.esc(target.title)}\n{render.esc(target.description[:600])}\n\n"
                f"*Genres:* {render.esc(', '.join(target.genres) or '—')}")
        state = {"task_id": task.task_id, "campaign": campaign, "scale": scale, "request_id": uuid.uuid4().hex}
        image = str(target.image) if target.image is not None else str(render.NO_IMAGE)
        return (profile, image, card, gr.update(choices=choices, value=None), state,
                self._progress(campaign, caller.username))

    @ui_event(outputs=7, note=6)  # the task and the answer stay as they are; the note says what to do
    def answer(self, state: dict, answer: Any, request: gr.Request = None) -> tuple:
        caller = self.access.caller(request)
        if not state or "task_id" not in state:
            raise InvalidInputError("get a task first")
        if answer is None or answer == "":
            raise InvalidInputError("choose an answer before submitting")
        self.rate_limit.check(caller.username)
        if state["scale"] == "graded":
            label, grade = "graded", int(answer)
        else:
            label, grade = str(answer), None
        result = self.repository.answer_task(caller.username, int(state["task_id"]), label, grade,
                                             state["request_id"], session_key=getattr(request, "session_hash", None))
        note = "Saved." if result.stored else "Already saved (resent)."
        return self._next_task(state["campaign"], request) + (note,)

    # -- API (any logged-in user) ------------------------------------------------------------------
    @user_errors
    def api_next(self, campaign: str, request: gr.Request = None) -> dict:
        """Your next task in ``campaign``: {"task_id", "context_ids", "item_id", "scale"}; {} when none is left."""
        caller = self.access.caller(request)
        task = self.repository.next_task(str(campaign), caller.username)
        if task is None:
            return {}
        return {"task_id": task.task_id, "context_ids": list(task.context_ids), "item_id": task.item_id,
                "scale": self._scale(str(campaign))}

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

    @ui_event()
    def my_labels(self, request: gr.Request = None) -> list[list[Any]]:
        caller = self.access.caller(request)
        rows = []
        for f in self.repository.my_feedback(caller.username, limit=200):
            title = self.service.item(f.item_id).title if self.service.has_item(f.item_id) else f.item_id
            rows.append([f.created_at.strftime("%Y-%m-%d %H:%M"), title, f.label if f.grade is None else f.grade,
                         ", ".join(f.context_ids)])
        return rows


def build_labelling_tab(handlers: LabellingHandlers) -> None:
    """Inside an open ``gr.Blocks``: the Label tab and its wiring."""
    ui = {"api_visibility": "private"}
    with gr.Tab("Label") as tab:
        gr.Markdown("Judge whether the **item** suits someone who likes the **profile** items. "
                    "You see tasks in a random order and never other people's answers.")
        with gr.Row():
            campaign = gr.Dropdown(label="Campaign", choices=[], scale=3)
            start = gr.Button("Get a task", variant="primary", scale=1)
        progress = gr.Markdown()
        with gr.Row():
            with gr.Column(scale=3):
                profile = gr.Gallery(label="Profile: this person likes", columns=4, height=220, allow_preview=False,
                                     object_fit="contain")
            with gr.Column(scale=2):
                target_image = gr.Image(label="Item to judge", height=220, interactive=False)
        target_card = gr.Markdown()
        answer = gr.Radio(GRADES, label="How relevant is the item to this profile?")
        submit = gr.Button("Submit and next", variant="primary")
        note = gr.Markdown()
        state = gr.State({})
        with gr.Accordion("My labels", open=False):
            refresh_mine = gr.Button("Show my labels", size="sm")
            mine = gr.Dataframe(headers=["when", "item", "answer", "profile"], interactive=False, wrap=True)
    outputs = [profile, target_image, target_card, answer, state, progress]
    tab.select(handlers.campaigns, None, [campaign], api_name="ui_label_campaigns", **ui)
    start.click(handlers.next_task, [campaign], outputs, api_name="ui_label_next", concurrency_limit=16,
                concurrency_id="label", **ui)
    submit.click(handlers.answer, [state, answer], outputs + [note], api_name="ui_label_answer", concurrency_limit=16,
                 concurrency_id="label", **ui)
    refresh_mine.click(handlers.my_labels, None, [mine], api_name="ui_label_mine", **ui)


def register_labelling_api(handlers: LabellingHandlers) -> None:
    """The labelling API endpoints; call outside ``gr.Tabs`` (an endpoint there is drawn as a tab button)."""
    gr.api(handlers.api_next, api_name="label_next", concurrency_limit=16, concurrency_id="label")
    gr.api(handlers.api_answer, api_name="label_answer", concurrency_limit=16, concurrency_id="label")
