"""Security: roles on every UI event and API endpoint, own labels only, rate limit, erasure, no secrets in logs."""

from __future__ import annotations

import inspect
import logging
import re

import gradio as gr
import pytest

from storage import make_engine
from studio.finetune_job import read_judgements
from tests.studio_app import refusal, req, studio_app
from ui.layout import build_demo
from ui.rate_limit import LabelRateLimit

# Every event and endpoint the app registers, by who may call it. A new one fails
# test_every_endpoint_is_classified until it is put in one of these sets (and so tested below).
ADMIN_ONLY = {
    "ui_admin_open", "ui_admin_refresh", "ui_admin_promote", "ui_admin_rollback", "ui_admin_reject",
    "ui_admin_finetune", "ui_admin_campaign", "ui_admin_stats", "ui_admin_export", "ui_admin_erase",
    "ui_admin_import", "ui_admin_views", "finetune", "finetune_status", "promote", "models", "export", "campaign",
    "erase_annotator", "import_catalog", "ui_admin_jobs", "jobs", "ui_admin_compare_versions", "ui_admin_compare",
}
# Write labels or read one's own labels: any logged-in person, never an anonymous caller.
LOGGED_IN = {"ui_like", "ui_dislike", "feedback", "ui_label_next", "ui_label_answer", "ui_label_mine",
             "label_next", "label_answer", "ui_label_skip", "ui_label_undo", "label_skip", "label_undo"}
# Read-only, no personal data; with --auth-file Gradio's login still gates every route (tests/test_e2e_labelling.py).
EVERYONE = {"ui_header", "ui_search", "ui_pick", "ui_recommend", "ui_select", "ui_explain", "ui_explain_method",
            "ui_upload", "ui_upload_select", "ui_upload_explain", "ui_upload_explain_method", "recommend",
            "recommend_upload", "explain", "ui_label_campaigns", "search", "item", "similar", "explain_upload",
            # A campaign's guidelines; the caller's own progress only when logged in.
            "ui_label_choose", "ui_label_keys",  # ui_label_keys: browser-side only (the keyboard script)
            # The start-up poller (header text only) and the example upload (fills the inputs, then searches);
            # the example profiles (ui_example_profile, ui_example_recommend) exist only where they apply, not here.
            "ui_startup", "ui_example_upload", "ui_example_upload_run",
            # The catalog picker's pages and liked marks, the liked/disliked boxes kept apart (the caller's own
            # values only), and the selected result's images (catalog data only).
            "ui_page_prev", "ui_page_next", "ui_mark_liked", "ui_disliked_edited", "ui_images", "ui_upload_images",
            # These only answer what the caller may see (the Admin tab's visibility, the job line, the job
            # history poll: nothing, and no error, for a non-admin).
            "ui_admin_visible", "ui_admin_job", "ui_admin_jobs_poll",
            # Players of catalog audio/video (the items' own media, as public as their images): read-only.
            "ui_players", "ui_upload_players", "ui_label_players", "ui_label_play_profile"}


@pytest.fixture
def app(tiny_service, tmp_path):
    return studio_app(tiny_service, tmp_path, rate_limit=0)


@pytest.fixture
def endpoints(app) -> dict:
    demo = build_demo(app.main, labelling=app.label, admin=app.admin)
    # One handler bound to several triggers gets numbered names (ui_search, ui_search_1): same handler.
    return {re.sub(r"_\d+$", "", fn.api_name): fn.fn for fn in demo.fns.values() if fn.api_name}


def _call(fn, request):
    """Call a handler with placeholder arguments: the access check must come before any use of them."""
    params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("request", "evt")]
    # By name: a form input may follow ``request`` (Gradio fills inputs around it, e.g. create_campaign's guidelines).
    kwargs = {p.name: "x" if p.default is inspect.Parameter.empty else p.default for p in params}
    return fn(**kwargs, request=request)


def test_every_endpoint_is_classified(endpoints) -> None:
    assert not ADMIN_ONLY & LOGGED_IN and not ADMIN_ONLY & EVERYONE and not LOGGED_IN & EVERYONE
    assert set(endpoints) == ADMIN_ONLY | LOGGED_IN | EVERYONE


def test_admin_only_endpoints_refuse_annotators_and_anonymous_callers(app, endpoints) -> None:
    before = (app.repository.count_feedback(), app.service.model_version, app.repository.list_models())
    for name in sorted(ADMIN_ONLY):  # API endpoints raise the refusal, UI events show it (see refusal)
        assert "annotator; this needs the admin role" in refusal(lambda: _call(endpoints[name], req("ann1"))), name
        assert "log in first" in refusal(lambda: _call(endpoints[name], req(None))), name
    assert (app.repository.count_feedback(), app.service.model_version, app.repository.list_models()) == before
    assert not app.admin.jobs.status().running


def test_label_endpoints_refuse_anonymous_callers(app, endpoints) -> None:
    for name in sorted(LOGGED_IN):
        assert "log in first" in refusal(lambda: _call(endpoints[name], req(None))), name
    assert app.repository.count_feedback() == 0


def test_admin_tab_and_job_line_stay_hidden_from_annotators(app) -> None:
    body, notice, timer = app.admin.tab_visibility(req("ann1"))
    assert body["visible"] is False and notice["visible"] is True and timer.active is False
    assert all(v == gr.skip() for v in app.admin.job_status({}, "", req("ann1")))  # the job line stays as it is
    assert app.admin.tab_visibility(req("boss"))[0]["visible"] is True


def test_annotators_see_only_their_own_labels(app) -> None:
    app.main.api_feedback(["chess"], "checkers", "like", "a1", req("ann1"))
    app.main.api_feedback(["chess"], "puzzle", "dislike", "b1", req("ann2"))
    mine = app.label.my_labels(req("ann2"))
    assert len(mine) == 1 and mine[0][2] == "dislike"
    assert [f.request_id for f in app.repository.my_feedback("ann1")] == ["a1"]


def test_rate_limit_refuses_the_excess_and_stores_nothing(tiny_service, tmp_path) -> None:
    app = studio_app(tiny_service, tmp_path, rate_limit=3)
    for i in range(3):
        assert app.main.api_feedback(["chess"], "checkers", "like", f"r{i}", req("ann1"))["stored"]
    with pytest.raises(gr.Error, match=r"too many labels: at most 3 per minute per person. Nothing was stored"):
        app.main.api_feedback(["chess"], "checkers", "like", "r3", req("ann1"))
    assert app.repository.count_feedback() == 3
    # Per person: another annotator still has their whole budget.
    assert app.main.api_feedback(["chess"], "puzzle", "like", "s0", req("ann2"))["stored"]
    # Task answers count against the same budget.
    app.admin.create_campaign("c", 1, 1, 0, 0, 1, "graded", req("boss"))
    task = app.label.api_next("c", req("ann1"))
    with pytest.raises(gr.Error, match="too many labels"):
        app.label.api_answer(task["task_id"], "3", "t0", req("ann1"))
    assert app.repository.count_feedback() == 4


def test_rate_limit_config_is_checked() -> None:
    assert not LabelRateLimit(0).enabled
    LabelRateLimit(0).check("anyone")  # off: never raises
    with pytest.raises(ValueError, match="allowed: 0 \\(off\\) or a positive number"):
        LabelRateLimit(-1)


def test_erasing_an_annotator_removes_their_labels_from_later_finetunes(app, tmp_path) -> None:
    app.admin.create_campaign("c", 2, 1, 0, 0, 2, "graded", req("boss"))
    for name in ("ann1", "ann2"):
        while (task := app.label.api_next("c", req(name))):
            app.label.api_answer(task["task_id"], "2", f"{name}-{task['task_id']}", req(name))
    app.main.api_feedback(["chess"], "checkers", "like", "x1", req("ann1"))
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    assert set(read_judgements(url)["annotator"]) == {"ann1", "ann2"}
    n_ann1 = len(app.repository.my_feedback("ann1"))
    with pytest.raises(gr.Error, match="confirm"):
        app.admin.api_erase_annotator("ann1", False, req("boss"))
    assert len(app.repository.my_feedback("ann1")) == n_ann1  # nothing erased without confirmation

    result = app.admin.api_erase_annotator("ann1", True, req("boss"))
    assert result == {"found": True, "feedback": n_ann1, "assignments": 2}
    assert set(read_judgements(url)["annotator"]) == {"ann2"}  # what the fine-tune job reads
    assert app.repository.my_feedback("ann1") == []
    assert set(app.repository.judgements_frame()["annotator"]) == {"ann2"}
    # Their tasks go back to the pool: ann1 (or anyone) can be served them again.
    assert app.label.api_next("c", req("ann3"))
    assert "nothing was erased" in app.admin.erase("ann1", True, req("boss"))


def test_database_credentials_are_never_logged(caplog) -> None:
    caplog.set_level(logging.DEBUG)
    engine = make_engine("postgresql+psycopg://labeller:s3cr3t-pw@127.0.0.1:1/studio")
    assert "s3cr3t-pw" not in caplog.text and "labeller:***@" in caplog.text
    engine.dispose()


def test_the_finetune_job_gets_the_database_url_from_the_environment_not_its_command_line(app, monkeypatch) -> None:
    captured = {}

    class FakePopen:  # records how the job would be started (argv is visible to every local user via ps)
        def __init__(self, cmd, **kwargs) -> None:
            captured.update(cmd=cmd, env=kwargs.get("env") or {})

        def wait(self) -> int:
            return 1

    from tests.studio.test_jobs import add_labels, needed_labels

    monkeypatch.setattr("studio.jobs.subprocess.Popen", FakePopen)
    add_labels(app.repository, needed_labels())  # enough for the job to start
    jobs = app.admin.jobs
    jobs.database_url = "postgresql+psycopg://labeller:s3cr3t-pw@db.internal/studio"
    jobs.start("boss")
    assert jobs.wait(30).state == "failed"  # the fake job exits 1
    assert not any("s3cr3t-pw" in str(part) for part in captured["cmd"])
    assert captured["env"]["DATABASE_URL"] == jobs.database_url


def test_a_space_never_runs_open_even_without_admins_configured() -> None:
    from ui.access import Access

    assert Access.from_options(None, None).mode == "open"  # a local tool on 127.0.0.1
    on_space = Access.from_options(None, None, on_space=True)
    assert on_space.mode == "oauth"
    with pytest.raises(Exception, match="log in first"):
        on_space.caller(req(None))
    assert on_space.caller(req("visitor")).role == "annotator"
    assert Access.from_options(None, "alice, bob", on_space=True).caller(req("bob")).is_admin
