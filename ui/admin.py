"""The "Admin" tab and admin API: fine-tune, registry decisions, campaigns, statistics, exports.

Every handler is declared ``@admin_only`` (:func:`ui.access.admin_only`): the UI and the API enforce
the same rule, because the API is reachable without the UI.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from recsys_core.errors import InvalidInputError
from storage import Repository
from studio.campaigns import CampaignSpec, create_campaign
from studio.jobs import FinetuneJobs
from studio.registry import ModelManager
from ui import admin_views, render
from ui.access import Access, admin_only
from ui.errors import ui_event, user_errors
from ui.header import model_line
from ui.handlers import _file_path

log = logging.getLogger(__name__)

REGISTRY_HEADERS = ["version", "status", "parent", "created", "decided by", "held-out AUC",
                    "held-out pairwise acc.", "base pairwise acc.", "held-out likes NDCG@20", "base likes NDCG@20",
                    "gate"]
EXPORT_FORMATS = ["csv", "parquet", "jsonl", "mmrec", "cornac"]
# registry table, version choices, serving line, header model line, and the statistics' five outputs
VIEW_COUNT = 9
OVERRIDE_CONFIRM = "I understand the gate rejected it"
COMPARE_K = 10


def _num(value: float | None) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def _rows(frame: pd.DataFrame) -> list[list[Any]]:
    """Table rows with numbers rounded and missing values (NaN) shown as empty cells."""
    frame = frame.round(4).astype(object)
    return frame.where(frame.notna(), "").values.tolist()


class AdminHandlers:
    """The Admin tab's events and the admin API. Each public handler is declared ``@admin_only`` (checked
    before any argument is read); the private helpers run only inside such handlers, where
    ``self.access.caller(request)`` just names the admin for the record."""

    def __init__(self, service, repository: Repository, access: Access, manager: ModelManager,
                 jobs: FinetuneJobs, export_dir: Path) -> None:
        self.service = service
        self.repository = repository
        self.access = access
        self.manager = manager
        self.jobs = jobs
        self.export_dir = Path(export_dir)
        self.catalogs_dir = self.export_dir.parent / "catalogs"

    # -- registry ---------------------------------------------------------------------------------
    def _registry(self) -> tuple[list[list[Any]], Any]:
        rows = self.manager.rows()
        table = [[r.version, r.status, r.parent or "", r.created, r.decided_by or "", _num(r.heldout_auc),
                  _num(r.heldout_pairwise), _num(r.base_pairwise), _num(r.heldout_likes_ndcg), _num(r.base_likes_ndcg),
                  r.gate] for r in rows]
        return table, gr.update(choices=[r.version for r in rows], value=None)

    def _views(self, campaign: str | None, note: str = "") -> tuple:
        """Every admin view in the order of ``build_admin_tab``'s ``views``: the registry table, the version
        choices, the serving line (``note`` first: what the last action did), the page header's model line,
        and the label statistics (:meth:`statistics`'s five values)."""
        table, choices = self._registry()
        serving = f"{note} " if note else ""
        serving += f"Serving **{render.esc(self.service.model_version)}**."
        return (table, choices, serving, model_line(self.service), *self._statistics(campaign))

    @ui_event(outputs=VIEW_COUNT, note=2)
    @admin_only
    def registry(self, campaign: str | None = None, request: gr.Request = None) -> tuple:
        """Every admin view, fresh (the tab opened, Refresh)."""
        return self._views(campaign)

    def _decide(self, action, verb: str, version: str | None, campaign: str | None,
                request: gr.Request | None) -> tuple:
        if not version:
            raise InvalidInputError("choose a model version first")
        action(version, self.access.caller(request).username)
        return self._views(campaign, note=f"{verb} `{render.esc(version)}`.")

    def _check_override(self, version: str | None, override: bool, confirmed: bool) -> None:
        """Promoting a gate-rejected version is two deliberate steps: 'override' and then the confirmation."""
        entry = self.repository.get_model(version) if version and override else None
        if entry is not None and entry.status == "rejected" and not confirmed:
            reason = (entry.metrics or {}).get("gate_reason") or "rejected by an admin"
            raise InvalidInputError(f"{version} was rejected ({reason}); to serve it anyway, also tick "
                                    f"'{OVERRIDE_CONFIRM}' and press Promote again. Nothing was changed.")

    # A decision changes what every view shows (the header names the served model): all of them are returned.
    @ui_event(outputs=VIEW_COUNT, note=2)
    @admin_only
    def promote(self, version: str | None, override: bool, campaign: str | None = None,
                request: gr.Request = None, confirmed: bool = False) -> tuple:
        # confirmed after request (as create_campaign's guidelines): callers of the first three keep working.
        self._check_override(version, override, confirmed)
        return self._decide(lambda v, by: self.manager.promote(v, by, override=bool(override)), "Promoted", version,
                            campaign, request)

    @ui_event(outputs=VIEW_COUNT, note=2)
    @admin_only
    def rollback(self, version: str | None, campaign: str | None = None, request: gr.Request = None) -> tuple:
        return self._decide(self.manager.rollback, "Rolled back to", version, campaign, request)

    @ui_event(outputs=VIEW_COUNT, note=2)
    @admin_only
    def reject(self, version: str | None, campaign: str | None = None, request: gr.Request = None) -> tuple:
        return self._decide(self.manager.reject, "Rejected", version, campaign, request)

    # -- fine-tune ----------------------------------------------------------------------------------
    def _job_text(self) -> str:
        return admin_views.job_html(self.jobs.status())

    @ui_event(outputs=1, note=0)
    @admin_only
    def start_finetune(self, campaign: str | None, request: gr.Request = None) -> str:
        self.jobs.start(self.access.caller(request).username, campaign=campaign or None)
        return self._job_text()

    def tab_visibility(self, request: gr.Request = None) -> tuple[Any, Any, Any]:
        """Admin controls and the job poller for admins only (the handlers check the role again on every action)."""
        try:
            is_admin = self.access.caller(request).is_admin
        except Exception:
            is_admin = False
        return gr.update(visible=is_admin), gr.update(visible=not is_admin), gr.Timer(active=is_admin)

    @admin_only(refused=(gr.skip(),) * (2 + VIEW_COUNT))  # polled every 2 s: nothing for an annotator, no pop-ups
    def job_status(self, seen: dict | None, campaign: str | None = None, request: gr.Request = None) -> tuple:
        """The job line, what this page has seen (a ``gr.State``), and every admin view when something it shows
        changed since the last poll (a job ended, labels arrived), else ``gr.skip()`` for each: a finished
        fine-tune appears in the registry and the statistics follow new labels without a Refresh."""
        s = self.jobs.status()
        now = {"job": [s.job_id, s.state], "labels": self.repository.count_feedback()}
        seen = seen or {}
        job_ended = bool(seen) and seen.get("job") != now["job"] and not s.running
        changed = job_ended or (bool(seen) and seen.get("labels") != now["labels"])
        views = self._views(campaign) if changed else (gr.skip(),) * VIEW_COUNT
        return (self._job_text(), now, *views)

    # -- job history ---------------------------------------------------------------------------------
    @ui_event()
    @admin_only
    def job_history(self, request: gr.Request = None) -> list[list[str]]:
        return admin_views.job_rows(self.jobs.history())

    @admin_only(refused=(gr.skip(), gr.skip()))  # polled with the job line: quiet for non-admins too
    def job_history_poll(self, seen: str, request: gr.Request = None) -> tuple:
        """The history table again only when a job started or ended since ``seen`` (this page's last look),
        so a finished job shows up without a click and an unchanged table is not re-sent every 2 s."""
        records = self.jobs.history()
        now = ",".join(f"{r.job_id}:{r.state}" for r in records)
        if now == seen:
            return gr.skip(), gr.skip()
        return admin_views.job_rows(records), now

    @user_errors
    @admin_only
    def api_jobs(self, request: gr.Request = None) -> list[dict]:
        """Every fine-tune job of this data folder, newest first (admin): job_id, started_at (epoch s),
        started_by, campaign, state (running | done | failed), seconds, version, gate_passed, gate_reason, error."""
        return admin_views.job_api(self.jobs.history())

    # -- two versions side by side ---------------------------------------------------------------------
    def _profile_ids(self, text: str) -> list[str]:
        """Item ids or exact titles (any case), separated by commas or new lines."""
        catalog = self.service.catalog
        by_title = {item.title.strip().lower(): item.item_id for item in catalog.items}
        ids, unknown = [], []
        for part in (p.strip() for p in (text or "").replace("\n", ",").split(",")):
            if not part:
                continue
            found = part if part in catalog else by_title.get(part.lower())
            (ids if found else unknown).append(found or part)
        if unknown:
            shown = ", ".join(repr(u) for u in unknown[:5])
            raise InvalidInputError(f"not in the catalog (neither an item id nor a title): {shown}")
        if not ids:
            raise InvalidInputError("type the liked items: item ids or titles, separated by commas")
        return ids

    @ui_event(outputs=2)
    @admin_only
    def compare_choices(self, request: gr.Request = None) -> tuple:
        versions = [r.version for r in self.manager.rows()]
        active = self.service.model_version
        other = next((v for v in versions if v != active), active)
        return gr.update(choices=versions, value=active), gr.update(choices=versions, value=other)

    @ui_event(outputs=1, note=0)  # a mistake is said where the lists would be
    @admin_only
    def compare(self, version_a: str | None, version_b: str | None, profile: str, request: gr.Request = None) -> str:
        if not version_a or not version_b:
            raise InvalidInputError("choose two model versions (A and B)")
        ids = self._profile_ids(profile)
        a = self.manager.recommend_with(version_a, ids, COMPARE_K)
        b = self.manager.recommend_with(version_b, ids, COMPARE_K)
        return admin_views.comparison_html(a, b, [self.service.item(i).title for i in ids])

    # -- campaigns ----------------------------------------------------------------------------------
    @ui_event(outputs=1, note=0)
    @admin_only
    def create_campaign(self, name: str, profiles: float, per_profile: float, randoms: float, controls: float,
                        overlap: float, scale: str, request: gr.Request = None, guidelines: str = "") -> str:
        # guidelines after request: Gradio fills inputs around a gr.Request wherever it is, and callers
        # of the first seven (tests, scripts) keep working.
        spec = CampaignSpec(name=(name or "").strip(), profiles=int(profiles), per_profile=int(per_profile),
                            random_per_profile=int(randoms), controls_per_profile=int(controls), overlap=int(overlap),
                            scale=scale, guidelines=guidelines or "")
        added = create_campaign(self.service, self.repository, spec)
        return (f"Campaign **{render.esc(spec.name)}**: {added} task(s) added, each for {spec.overlap} annotator(s), "
                f"from model `{render.esc(self.service.model_version)}`.")

    # -- statistics -----------------------------------------------------------------------------------
    @ui_event(outputs=5, note=4)
    @admin_only
    def statistics(self, campaign: str | None, request: gr.Request = None) -> tuple:
        return self._statistics(campaign)

    def _statistics(self, campaign: str | None) -> tuple:
        from recsys_core.labels.aggregation import agreement

        counts = self.repository.label_counts()
        frame = self.repository.judgements_frame(campaign or None)
        like_rate = self.repository.like_rate_by_model(campaign or None)
        summary = (f"**{counts.get('total', 0)} judgement(s)** · " +
                   " · ".join(f"{k}: {v}" for k, v in counts.items() if k != "total"))
        if frame.empty:
            return summary + "\n\nNo judgements yet.", like_rate, [], [], ""
        report = agreement(frame)
        per = _rows(report.per_annotator)
        pairs = _rows(report.pairwise)
        text = (f"{summary}\n\nKrippendorff's alpha ({report.level}): **{_num(report.alpha) or 'n/a'}** over "
                f"{report.n_units} unit(s), {report.n_annotators} annotator(s).")
        return text, like_rate, per, pairs, ""

    # -- exports --------------------------------------------------------------------------------------
    @ui_event()
    @admin_only
    def export(self, formats: list[str], pseudonymise: bool, campaign: str | None, request: gr.Request = None) -> list[str]:
        return self._export(formats, pseudonymise, campaign)

    def _export(self, formats: list[str], pseudonymise: bool, campaign: str | None) -> list[str]:
        from storage.export import export_labels

        if not formats:
            raise InvalidInputError(f"choose at least one format: {', '.join(EXPORT_FORMATS)}")
        frame = self.repository.judgements_frame(campaign or None)
        if frame.empty:
            raise InvalidInputError("there are no judgements to export yet")
        self.export_dir.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=time.strftime("labels-%Y%m%d-%H%M%S-"), dir=self.export_dir))
        paths = export_labels(frame, folder, formats, pseudonymise=bool(pseudonymise), repository=self.repository)
        log.info("exported %d judgements to %s (%s)", len(frame), folder, ", ".join(paths))
        return [str(p) for p in paths.values()]

    # -- catalog import -------------------------------------------------------------------------------
    def _import(self, file: Any, name: str):
        from studio.catalog_import import ImportLimits, import_catalog_zip

        path = _file_path(file)
        if not path:
            raise InvalidInputError("choose a .zip of the catalog folder (items.csv or items.jsonl plus images)")
        limits = ImportLimits(max_image_pixels=self.service.config.limits.max_image_pixels)
        return import_catalog_zip(str(path), str(name or ""), self.catalogs_dir, limits)

    @ui_event(outputs=1, note=0)
    @admin_only
    def import_catalog(self, file: Any, name: str, request: gr.Request = None) -> str:
        report = self._import(file, name)
        problems = "".join(f"\n- {render.esc(p)}" for p in report.problems[:50])
        more = f"\n- … and {len(report.problems) - 50} more" if len(report.problems) > 50 else ""
        return (f"Imported **{render.esc(report.name)}**: {report.items} item(s), {len(report.problems)} row "
                f"problem(s).{problems}{more}\n\nServe it by restarting the app with `{render.esc(report.command)}` "
                "(its features are extracted at that start).")

    # -- privacy ----------------------------------------------------------------------------------------
    def _erase(self, username: str, confirm: bool, request: gr.Request | None):
        caller = self.access.caller(request)
        username = (username or "").strip()
        if not username:
            raise InvalidInputError("type the annotator's username (as shown in the per-annotator statistics)")
        if not confirm:
            raise InvalidInputError(f"confirm to erase every label of {username!r}: it cannot be undone")
        result = self.repository.erase_annotator(username)
        log.info("admin %s erased the labels of one annotator (%d judgements)", caller.username, result.feedback)
        return result

    @ui_event(outputs=1, note=0)
    @admin_only
    def erase(self, username: str, confirm: bool, request: gr.Request = None) -> str:
        result = self._erase(username, confirm, request)
        if not result.found:
            return f"Nobody called **{render.esc(result.username)}** has labelled anything; nothing was erased."
        return (f"Erased **{result.feedback}** judgement(s) and {result.assignments} task assignment(s) of "
                f"**{render.esc(result.username)}**. Later fine-tunes will not use them; models trained before keep "
                "what they learned (fine-tune again to drop it).")

    # -- API (admin only) ----------------------------------------------------------------------------
    @user_errors
    @admin_only
    def api_finetune(self, campaign: str = "", request: gr.Request = None) -> dict:
        """Start a fine-tune from the active model on the stored labels (admin). One at a time."""
        status = self.jobs.start(self.access.caller(request).username, campaign=campaign or None)
        return {"state": status.state, "job_id": status.job_id}

    @user_errors
    @admin_only
    def api_finetune_status(self, request: gr.Request = None) -> dict:
        """State of the last fine-tune: state, fraction, message, version, gate_passed, gate_reason, seconds, error."""
        s = self.jobs.status()
        return {"state": s.state, "job_id": s.job_id, "fraction": round(s.fraction, 4), "message": s.message,
                "version": s.version, "gate_passed": s.gate_passed, "gate_reason": s.gate_reason,
                "seconds": round(s.seconds, 2), "error": s.error, "serving": self.service.model_version}

    @user_errors
    @admin_only
    def api_promote(self, version: str, override: bool = False, request: gr.Request = None) -> dict:
        """Serve ``version`` (admin); a gate-rejected one needs ``override``. Also the rollback path."""
        self.manager.promote(str(version), self.access.caller(request).username, override=bool(override))
        return {"serving": self.service.model_version}

    @user_errors
    @admin_only
    def api_models(self, request: gr.Request = None) -> list[dict]:
        """The registry, newest first (admin)."""
        return [{"version": r.version, "status": r.status, "parent": r.parent, "created": r.created,
                 "heldout_pairwise": r.heldout_pairwise, "gate": r.gate} for r in self.manager.rows()]

    @user_errors
    @admin_only
    def api_campaign(self, name: str, profiles: int = 10, per_profile: int = 5, random_per_profile: int = 2,
                     controls_per_profile: int = 1, overlap: int = 3, scale: str = "graded",
                     guidelines: str = "", request: gr.Request = None) -> dict:
        """Create a labelling campaign from the served model (admin); returns how many tasks were added.

        ``guidelines``: Markdown shown to annotators on the Label tab (empty keeps an existing campaign's)."""
        spec = CampaignSpec(name=str(name).strip(), profiles=int(profiles), per_profile=int(per_profile),
                            random_per_profile=int(random_per_profile), controls_per_profile=int(controls_per_profile),
                            overlap=int(overlap), scale=str(scale), guidelines=str(guidelines or ""))
        return {"tasks": create_campaign(self.service, self.repository, spec)}

    @user_errors
    @admin_only
    def api_erase_annotator(self, username: str, confirm: bool = False, request: gr.Request = None) -> dict:
        """Delete every judgement of ``username`` (admin; ``confirm`` must be true). Returns the counts."""
        result = self._erase(str(username), bool(confirm), request)
        return {"found": result.found, "feedback": result.feedback, "assignments": result.assignments}

    @user_errors
    @admin_only
    def api_import_catalog(self, file: gr.FileData, name: str, request: gr.Request = None) -> dict:
        """Unpack a catalog zip into <data dir>/catalogs/<name> after checking every entry (admin)."""
        report = self._import(file, name)
        return {"name": report.name, "folder": str(report.folder), "items": report.items,
                "problems": list(report.problems), "command": report.command}

    @user_errors
    @admin_only
    def api_export(self, formats: list[str] | None = None, pseudonymise: bool = True, request: gr.Request = None) -> dict:
        """Write all labels in the given formats on the server (admin); returns {format: path}."""
        paths = self._export(list(formats or EXPORT_FORMATS), pseudonymise, None)
        return {"files": paths}


def build_admin_tab(handlers: AdminHandlers, header: gr.Markdown) -> tuple[gr.Column, gr.Markdown, gr.Timer]:
    """Inside an open ``gr.Blocks``: the Admin tab (hidden from annotators on page load) and its wiring.
    ``header``: the page header's model line (:func:`ui.header.model_line`), refreshed with the admin views."""
    ui = {"api_visibility": "private"}
    is_open = handlers.access.mode == "open"
    with gr.Tab("Admin") as tab:  # the tab itself stays: Gradio does not render tabs that start hidden
        gr.Markdown("Admins only. Fine-tune on the collected labels, decide which model is served, run "
                    "labelling campaigns, and watch label quality.")
        notice = gr.Markdown("You are logged in as an annotator: this tab is for admins.", visible=False)
        with gr.Column(visible=is_open) as body:
            with gr.Accordion("Models", open=True):
                serving = gr.Markdown()
                registry = gr.Dataframe(headers=REGISTRY_HEADERS, interactive=False, wrap=True)
                with gr.Row():
                    version = gr.Dropdown(label="Model version", choices=[], scale=3)
                    override = gr.Checkbox(label="override the gate", value=False, scale=1)
                    # Checked by the promote handler itself (not a browser confirm() dialog): the refusal then
                    # holds for every caller of the event, with or without JavaScript, and tests can show it.
                    override_ok = gr.Checkbox(label=OVERRIDE_CONFIRM, value=False, scale=1,
                                              info="needed with 'override' to promote a rejected version")
                with gr.Row():
                    promote = gr.Button("Promote", variant="primary")
                    rollback = gr.Button("Roll back to this version")
                    reject = gr.Button("Reject", variant="stop")
                    refresh = gr.Button("Refresh")
            with gr.Accordion("Fine-tune on the labels", open=True):
                with gr.Row():
                    ft_campaign = gr.Textbox(label="Only this campaign (empty = all labels)", scale=3)
                    ft_start = gr.Button("Start fine-tune", variant="primary", scale=1)
                job = gr.HTML()
                jobs_seen = gr.State("")
                job_table = gr.Dataframe(headers=admin_views.JOB_HEADERS, interactive=False, wrap=True,
                                         label="Job history (newest first)")
            with gr.Accordion("Compare two versions", open=False):
                gr.Markdown(f"The top {COMPARE_K} of two registry versions for the same profile, next to each other; "
                            "neither is served by this (a version that is not served is loaded aside).")
                with gr.Row():
                    cmp_a = gr.Dropdown(label="Version A", choices=[], scale=2)
                    cmp_b = gr.Dropdown(label="Version B", choices=[], scale=2)
                cmp_profile = gr.Textbox(label="Liked items (ids or titles, separated by commas)",
                                         placeholder="e.g. chess, checkers")
                cmp_go = gr.Button("Compare")
                cmp_out = gr.HTML(elem_id="compare-versions")
            with gr.Accordion("New labelling campaign", open=False):
                with gr.Row():
                    c_name = gr.Textbox(label="Name", value="session-1")
                    c_scale = gr.Radio([("graded 0-3", "graded"), ("like / dislike", "binary")], value="graded",
                                       label="Answer scale")
                with gr.Row():
                    c_profiles = gr.Number(label="Profiles", value=10, precision=0)
                    c_per = gr.Number(label="Recommendations per profile", value=5, precision=0)
                    c_random = gr.Number(label="Random items per profile", value=2, precision=0)
                    c_controls = gr.Number(label="Controls per profile", value=1, precision=0)
                    c_overlap = gr.Number(label="Annotators per task (overlap)", value=3, precision=0)
                c_guidelines = gr.Textbox(label="Guidelines for annotators (Markdown, shown on the Label tab)", lines=4,
                                          placeholder="e.g. 3 = you would recommend it to this person; 0 = unrelated",
                                          info="Empty keeps the guidelines an existing campaign has.")
                c_go = gr.Button("Create campaign")
                c_note = gr.Markdown()
            with gr.Accordion("Label statistics and agreement", open=False):
                with gr.Row():
                    s_campaign = gr.Textbox(label="Campaign (empty = all)", scale=3)
                    s_go = gr.Button("Refresh statistics", scale=1)
                s_summary = gr.Markdown()
                s_like = gr.BarPlot(x="model_version", y="like_rate",
                                title="Like-rate of shown items per model version (👍 or grade 2-3; controls left out)",
                                    height=240, y_lim=[0, 1])
                s_per = gr.Dataframe(headers=["annotator", "labels", "controls", "control accuracy", "majority agreement"],
                                     interactive=False, label="Per annotator")
                s_pairs = gr.Dataframe(headers=["annotator A", "annotator B", "Cohen's kappa", "common units"],
                                       interactive=False, label="Pairwise agreement")
                s_note = gr.Markdown()
            with gr.Accordion("Export labels", open=False):
                e_formats = gr.CheckboxGroup(EXPORT_FORMATS, value=EXPORT_FORMATS, label="Formats")
                e_pseudo = gr.Checkbox(label="Pseudonymise annotators", value=True)
                e_go = gr.Button("Export")
                e_files = gr.File(label="Files", file_count="multiple")
            with gr.Accordion("Import a catalog", open=False):
                gr.Markdown("Upload a .zip of a catalog folder (`items.csv` or `items.jsonl` plus images; see the "
                            "README). Every entry is checked before anything is unpacked; rows with problems are "
                            "skipped and listed. The app serves it after a restart with `--catalog`.")
                with gr.Row():
                    i_file = gr.File(label="Catalog .zip", file_types=[".zip"], scale=3)
                    i_name = gr.Textbox(label="Name (letters, digits, - and _)", scale=2)
                    i_go = gr.Button("Import", scale=1)
                i_note = gr.Markdown()
            with gr.Accordion("Erase an annotator's labels", open=False):
                gr.Markdown("Deletes every judgement and task assignment of one annotator (a privacy request, "
                            "or a careless labeller). Later fine-tunes will not use them. This cannot be undone: "
                            "export first if you need a record.")
                with gr.Row():
                    x_user = gr.Textbox(label="Username", scale=3)
                    x_confirm = gr.Checkbox(label="I understand this cannot be undone", value=False, scale=2)
                    x_go = gr.Button("Erase", variant="stop", scale=1)
                x_note = gr.Markdown()
        # Polls the job status for the progress line; started on page load for admins only, so a crowd of
        # annotators does not send the server a no-op request every 2 s each. Inside the tab: a component
        # directly under gr.Tabs is drawn as an extra tab button.
        timer = gr.Timer(2.0, active=is_open)
        seen = gr.State({})  # what this page's poller last saw (job state, label count)
    stats_out = [s_summary, s_like, s_per, s_pairs, s_note]
    views = [registry, version, serving, header, *stats_out]  # AdminHandlers._views' order
    # Every action refreshes the views it may have changed, so no view shows an older state than another.
    refresh_views = {"fn": handlers.registry, "inputs": [s_campaign], "outputs": views, "api_name": "ui_admin_views",
                     **ui}
    tab.select(handlers.registry, [s_campaign], views, api_name="ui_admin_open", **ui)
    refresh.click(handlers.registry, [s_campaign], views, api_name="ui_admin_refresh", **ui)
    promote.click(handlers.promote, [version, override, s_campaign, override_ok], views, api_name="ui_admin_promote", **ui)
    rollback.click(handlers.rollback, [version, s_campaign], views, api_name="ui_admin_rollback", **ui)
    reject.click(handlers.reject, [version, s_campaign], views, api_name="ui_admin_reject", **ui)
    ft_start.click(handlers.start_finetune, [ft_campaign], [job], api_name="ui_admin_finetune", **ui)
    timer.tick(handlers.job_status, [seen, s_campaign], [job, seen, *views], api_name="ui_admin_job",
               show_progress="hidden", **ui)
    tab.select(handlers.job_history, None, [job_table], api_name="ui_admin_jobs", **ui)
    refresh.click(handlers.job_history, None, [job_table], api_name="ui_admin_jobs", **ui)
    timer.tick(handlers.job_history_poll, [jobs_seen], [job_table, jobs_seen], api_name="ui_admin_jobs_poll",
               show_progress="hidden", **ui)
    tab.select(handlers.compare_choices, None, [cmp_a, cmp_b], api_name="ui_admin_compare_versions", **ui)
    refresh.click(handlers.compare_choices, None, [cmp_a, cmp_b], api_name="ui_admin_compare_versions", **ui)
    cmp_go.click(handlers.compare, [cmp_a, cmp_b, cmp_profile], [cmp_out], api_name="ui_admin_compare", **ui)
    c_go.click(handlers.create_campaign, [c_name, c_profiles, c_per, c_random, c_controls, c_overlap, c_scale,
                                          c_guidelines],
               [c_note], api_name="ui_admin_campaign", **ui).then(**refresh_views)
    s_go.click(handlers.statistics, [s_campaign], stats_out, api_name="ui_admin_stats", **ui)
    e_go.click(handlers.export, [e_formats, e_pseudo, s_campaign], [e_files], api_name="ui_admin_export", **ui)
    x_go.click(handlers.erase, [x_user, x_confirm], [x_note], api_name="ui_admin_erase", **ui).then(**refresh_views)
    i_go.click(handlers.import_catalog, [i_file, i_name], [i_note], api_name="ui_admin_import", **ui)
    return body, notice, timer


def register_admin_api(handlers: AdminHandlers) -> None:
    """The admin API endpoints; call outside ``gr.Tabs`` (an endpoint there is drawn as a tab button)."""
    gr.api(handlers.api_finetune, api_name="finetune")
    gr.api(handlers.api_finetune_status, api_name="finetune_status")
    gr.api(handlers.api_promote, api_name="promote")
    gr.api(handlers.api_models, api_name="models")
    gr.api(handlers.api_jobs, api_name="jobs")
    gr.api(handlers.api_export, api_name="export")
    gr.api(handlers.api_erase_annotator, api_name="erase_annotator")
    gr.api(handlers.api_import_catalog, api_name="import_catalog")
    gr.api(handlers.api_campaign, api_name="campaign")
