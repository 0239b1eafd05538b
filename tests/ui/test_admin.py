"""Labelling and admin handlers with accounts: roles enforced on every action, a full small session."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import pandas as pd
import pytest

from storage import FeedbackIn
from tests.studio_app import refusal
from tests.studio_app import req as _req
from tests.studio_app import studio_app
from ui.handlers import FEEDBACK_NOTE


@pytest.fixture
def app(tiny_service, tmp_path):
    return studio_app(tiny_service, tmp_path)


def test_roles_are_enforced_on_admin_actions_and_feedback(app) -> None:
    for call in (lambda r: app.admin.api_finetune("", r), lambda r: app.admin.api_promote("x", False, r),
                 lambda r: app.admin.api_export(["csv"], True, r), lambda r: app.admin.api_models(r),
                 lambda r: app.admin.create_campaign("c", 1, 1, 0, 0, 1, "graded", r)):
        assert "annotator; this needs the admin role" in refusal(lambda: call(_req("ann1")))
        assert "log in first" in refusal(lambda: call(_req(None)))
    with pytest.raises(gr.Error, match="log in first"):
        app.main.api_feedback(["chess"], "checkers", "like", "r1", _req(None))
    assert app.repository.count_feedback() == 0  # nothing stored on refusal
    stored = app.main.api_feedback(["chess"], "checkers", "like", "r1", _req("ann1"))
    assert stored["stored"] is True
    with pytest.raises(gr.Error):  # another annotator cannot overwrite or claim that label
        app.main.api_feedback(["chess"], "checkers", "dislike", "r1", _req("ann2"))
    assert app.repository.my_feedback("ann2") == [] and len(app.repository.my_feedback("ann1")) == 1


def test_a_labelling_session_with_three_annotators(app) -> None:
    note = app.admin.create_campaign("s1", 2, 2, 1, 1, 2, "graded", _req("boss"))
    assert "8 task(s) added, each for 2 annotator(s)" in note
    answered = 0
    states = {name: app.label.next_task("s1", _req(name))[4] for name in ("ann1", "ann2", "ann3")}
    while any(states.values()):  # annotators work side by side, one task at a time
        for name, state in states.items():
            if state:
                states[name] = app.label.answer(state, 3 if name != "ann3" else 0, _req(name))[4]
                answered += 1
    assert answered == 16  # 8 tasks x overlap 2
    assert app.repository.campaign_overview("s1")["complete"] == 8
    text, like_rate, per_annotator, pairs, _ = app.admin.statistics("s1", _req("boss"))
    assert "16 judgement(s)" in text and "Krippendorff's alpha (ordinal)" in text
    assert {row[0] for row in per_annotator} == {"ann1", "ann2", "ann3"}
    # Like-rate of shown items: ann1/ann2 gave 3 (liked), ann3 gave 0, controls (2 of 8 tasks) left out.
    frame = app.repository.judgements_frame("s1")
    shown = frame[~frame["is_control"]]
    expected = (shown["annotator"] != "ann3").mean()
    assert like_rate["judgements"].sum() == len(shown) == 12
    assert like_rate["like_rate"].iloc[0] == pytest.approx(expected)
    mine = app.label.my_labels(_req("ann2"))
    assert len(mine) == len(app.repository.my_feedback("ann2"))
    files = app.admin.export(["csv", "jsonl", "mmrec", "cornac", "parquet"], True, "s1", _req("boss"))
    csv = pd.read_csv(next(f for f in files if f.endswith(".csv")))
    assert len(csv) == 16 and not csv["annotator"].isin(["ann1", "ann2", "ann3"]).any()  # pseudonymised
    assert len(pd.read_parquet(next(f for f in files if f.endswith(".parquet")))) == 16


def _like_a_recommendation(app, request) -> None:
    """A 👍 on the Recommend tab: recommend for a profile, select the first result, press Like."""
    state = next(x for x in app.main.recommend(["noimage", "chess"], 3, request) if isinstance(x, dict))
    state, _ = app.main.select_result(state, SimpleNamespace(index=0))
    rated = app.main.like(state, state["liked"], [], [], 3, 0.0, request)
    assert rated[FEEDBACK_NOTE].startswith("Saved:")


def _answer_a_task(app, campaign: str, request) -> None:
    """An answer on the Label tab: get a task of ``campaign``, answer like."""
    state = app.label.next_task(campaign, request)[4]
    assert app.label.answer(state, "like", request)[-1] == "Saved."


def _export_users(app, request) -> list[str]:
    """The user column of a pseudonymised Cornac export (one line per judgement)."""
    [path] = app.admin.export(["cornac"], True, "", request)
    return [line.split(" ")[0] for line in Path(path).read_text(encoding="utf-8").splitlines()]


def test_open_mode_stores_recommend_and_label_judgements_under_the_one_local_user(tiny_service, tmp_path) -> None:
    """Open mode is the single local user: a 👍 and a Label answer are both ``local``, counted together."""
    app = studio_app(tiny_service, tmp_path, accounts=False)
    visitor = SimpleNamespace(username=None, session_hash="browser-1")  # what Gradio hands over without a login
    app.admin.create_campaign("c", 1, 1, 0, 0, 1, "binary", visitor)
    _like_a_recommendation(app, visitor)
    _answer_a_task(app, "c", visitor)
    frame = app.repository.judgements_frame()
    assert list(frame["annotator"]) == ["local", "local"]
    text, _, per_annotator, _, _ = app.admin.statistics("", visitor)
    assert "**2 judgement(s)**" in text and "1 annotator(s)" in text
    assert [row[:2] for row in per_annotator] == [["local", 2]]  # the statistics count them together
    users = _export_users(app, visitor)
    assert len(users) == 2 and len(set(users)) == 1
    # Rows without an annotator (written before this rule, or by a script) keep one name per session.
    for n, session_key in enumerate(("script-a", "script-b")):
        app.repository.add_feedback(FeedbackIn(f"old-{n}", "racer", "like", ("chess",), "v0", session_key=session_key))
    assert len(set(_export_users(app, visitor))) == 3


def test_with_accounts_each_persons_recommend_and_label_judgements_share_a_name_and_stay_apart(app) -> None:
    app.admin.create_campaign("c", 1, 2, 0, 0, 2, "binary", _req("boss"))
    for name in ("ann1", "ann2"):  # two people, two browser sessions
        _like_a_recommendation(app, _req(name))
        _answer_a_task(app, "c", _req(name))
    assert sorted(app.repository.judgements_frame()["annotator"]) == ["ann1", "ann1", "ann2", "ann2"]
    _, _, per_annotator, _, _ = app.admin.statistics("", _req("boss"))
    assert [row[:2] for row in per_annotator] == [["ann1", 2], ["ann2", 2]]
    assert sorted(Counter(_export_users(app, _req("boss"))).values()) == [2, 2]


def test_a_finetune_with_too_few_labels_is_refused_on_the_button_and_the_api_without_a_job(app) -> None:
    from tests.studio.test_jobs import needed_labels

    app.main.api_feedback(["chess"], "checkers", "like", "r1", _req("ann1"))
    for start in (lambda: app.admin.start_finetune("", _req("boss")), lambda: app.admin.api_finetune("", _req("boss"))):
        assert refusal(start).startswith(
            f"not enough labels to fine-tune: 1 usable label(s) (from 1 judgement(s)); at least {needed_labels()} "
            "are needed")
    assert app.admin.jobs.status().state == "idle"
    assert "No fine-tune has run" in app.admin.job_status(None, "", _req("boss"))[0]


# Every @admin_only handler of ui.admin.AdminHandlers with placeholder arguments (the role is checked before
# any argument is read). job_status is the one that answers a non-admin quietly (see its own test).
ADMIN_CALLS = {
    "registry": lambda h, r: h.registry("", r),
    "promote": lambda h, r: h.promote("v", True, "", r),
    "rollback": lambda h, r: h.rollback("v", "", r),
    "reject": lambda h, r: h.reject("v", "", r),
    "start_finetune": lambda h, r: h.start_finetune("", r),
    "create_campaign": lambda h, r: h.create_campaign("c", 1, 1, 0, 0, 1, "graded", r),
    "statistics": lambda h, r: h.statistics("", r),
    "export": lambda h, r: h.export(["csv"], True, "", r),
    "import_catalog": lambda h, r: h.import_catalog(None, "x", r),
    "erase": lambda h, r: h.erase("ann2", True, r),
    "api_finetune": lambda h, r: h.api_finetune("", r),
    "api_finetune_status": lambda h, r: h.api_finetune_status(r),
    "api_promote": lambda h, r: h.api_promote("v", True, r),
    "api_models": lambda h, r: h.api_models(r),
    "api_campaign": lambda h, r: h.api_campaign("c", request=r),
    "api_erase_annotator": lambda h, r: h.api_erase_annotator("ann2", True, r),
    "api_import_catalog": lambda h, r: h.api_import_catalog(None, "x", r),
    "api_export": lambda h, r: h.api_export(["csv"], True, r),
    "job_history": lambda h, r: h.job_history(r),
    "api_jobs": lambda h, r: h.api_jobs(r),
    "compare_choices": lambda h, r: h.compare_choices(r),
    "compare": lambda h, r: h.compare("a", "b", "chess", r),
}


def test_every_public_admin_handler_is_declared_admin_only() -> None:
    from ui.admin import AdminHandlers

    public = {name for name, value in vars(AdminHandlers).items() if callable(value) and not name.startswith("_")}
    declared = {name for name in public if getattr(getattr(AdminHandlers, name), "admin_only", False)}
    # tab_visibility is for everyone: it only hides the tab from annotators.
    assert declared == public - {"tab_visibility"} == set(ADMIN_CALLS) | {"job_status", "job_history_poll"}


@pytest.mark.parametrize("name", sorted(ADMIN_CALLS))
def test_an_annotator_and_an_anonymous_caller_are_refused_on_every_admin_handler(app, name) -> None:
    app.main.api_feedback(["chess"], "checkers", "like", "r1", _req("ann2"))
    # API endpoints raise the refusal, UI events show it (see refusal)
    call = ADMIN_CALLS[name]
    assert "ann1 is an annotator; this needs the admin role" in refusal(lambda: call(app.admin, _req("ann1")))
    assert "log in first" in refusal(lambda: call(app.admin, _req(None)))
    # Refused before doing anything: no job, no campaign, no registry decision, no erasure.
    assert app.admin.jobs.status().state == "idle"
    assert app.repository.campaign_overview("c")["tasks"] == 0
    assert [m.status for m in app.repository.list_models()] == ["active"]
    assert app.repository.count_feedback() == 1


def test_the_job_poller_answers_a_non_admin_with_nothing(app) -> None:
    for nobody in (_req("ann1"), _req(None)):
        assert all(v == gr.skip() for v in app.admin.job_status({}, "", nobody))
    assert app.admin.job_status({}, "", _req("boss"))[0] == "No fine-tune has run since the app started."


def test_admin_only_keeps_what_gradio_reads_from_a_handler(app) -> None:
    """Gradio finds ``request`` by signature and type hint (``special_args``) and builds the API from them."""
    import inspect

    from gradio.helpers import special_args
    from gradio.utils import get_type_hints

    handler = app.admin.api_promote
    assert list(inspect.signature(handler).parameters) == ["version", "override", "request"]
    assert get_type_hints(handler)["request"] is gr.Request
    request = _req("boss")
    inputs, *_ = special_args(handler, ["v1", True], request)
    assert inputs == ["v1", True, request]


def test_admin_only_needs_a_request_parameter() -> None:
    from ui.access import admin_only

    with pytest.raises(TypeError, match="no 'request' parameter"):
        admin_only(lambda self, version: None)


def _texts(values) -> list[str]:
    return [v for v in values if isinstance(v, str)]


def _rows(values) -> list[list]:
    return [row for v in values if isinstance(v, list) for row in v if isinstance(row, list)]


def test_promote_refreshes_the_header_the_registry_and_the_statistics(app, tmp_path) -> None:
    """After a promotion every admin view and the page header show the new state (issue 15, defect 6)."""
    from tests.studio.test_registry import _candidate

    version = app.admin.manager.register_candidate(_candidate(app.service, tmp_path, "cand"), auto_promote=False,
                                                   by="boss")
    app.main.api_feedback(["chess"], "checkers", "like", "r1", _req("ann1"))
    out = app.admin.promote(version, True, "", _req("boss"))
    assert any(f"**model:** `{version}`" in t for t in _texts(out))  # the header's model line
    assert [version, "active"] in [row[:2] for row in _rows(out)]  # the registry table
    assert any("1 judgement(s)" in t for t in _texts(out))  # the label statistics
    zeroshot = app.repository.get_model(version).parent
    back = app.admin.rollback(zeroshot, "", _req("boss"))
    assert any(f"**model:** `{zeroshot}`" in t for t in _texts(back))


def test_the_layout_sends_admin_actions_to_the_header_and_every_admin_view(app) -> None:
    from ui.layout import build_demo

    demo = build_demo(app.main, labelling=app.label, admin=app.admin)
    fns = {fn.api_name: fn for fn in demo.fns.values() if fn.api_name}
    header = next(b for b in demo.blocks.values() if isinstance(b, gr.Markdown) and "**model:**" in str(b.value))
    stats = {id(c) for c in fns["ui_admin_stats"].outputs}
    for name in ("ui_admin_promote", "ui_admin_rollback", "ui_admin_reject", "ui_admin_refresh", "ui_admin_job"):
        outputs = {id(c) for c in fns[name].outputs}
        assert id(header) in outputs and stats <= outputs, name


def test_the_job_poller_refreshes_the_views_once_when_a_job_ends(app, monkeypatch) -> None:
    from studio.jobs import JobStatus

    status = JobStatus(state="running", job_id="j1", started_by="boss", started_at=0.0)
    monkeypatch.setattr(app.admin.jobs, "status", lambda: status)
    text, seen, *views = app.admin.job_status({}, "", _req("boss"))
    assert "<strong>Running</strong>" in text and all(v == gr.skip() for v in views)
    app.main.api_feedback(["chess"], "checkers", "like", "r1", _req("ann1"))  # a label arrives meanwhile
    _, seen, *views = app.admin.job_status(seen, "", _req("boss"))
    assert any("1 judgement(s)" in t for t in _texts(views))
    status = JobStatus(state="succeeded", job_id="j1", version="v2", seconds=3.0)
    text, seen, *views = app.admin.job_status(seen, "", _req("boss"))
    assert "Finished" in text and any("**model:**" in t for t in _texts(views))
    _, seen, *views = app.admin.job_status(seen, "", _req("boss"))  # nothing new: the views are left alone
    assert all(v == gr.skip() for v in views)


def test_a_label_submitted_without_an_answer_keeps_the_task_and_says_why(app) -> None:
    """The rating radio and the task stay as they are (no "Error" badges); the note says what to do (defect 7)."""
    app.admin.create_campaign("c", 1, 1, 0, 0, 1, "graded", _req("boss"))
    state = app.label.next_task("c", _req("ann1"))[4]
    with pytest.warns(UserWarning, match="choose an answer before submitting"):
        *task, note = app.label.answer(state, None, _req("ann1"))
    assert all(v == gr.skip() for v in task) and "choose an answer before submitting" in note
    with pytest.warns(UserWarning, match="choose a campaign first"):
        outputs = app.label.next_task(None, _req("ann1"))
    assert any("choose a campaign first" in str(v) for v in outputs)
    with pytest.warns(UserWarning, match="choose a model version first"):
        views = app.admin.promote(None, False, "", _req("boss"))
    assert "choose a model version first" in views[2] and views[0] == gr.skip()  # the serving line says it


# -- fine-tune progress bar and job history ----------------------------------------------------------


def test_a_running_finetune_shows_a_progress_bar_with_percent_and_message_then_the_job_history(app, tmp_path) -> None:
    import re
    import time

    from tests.studio.test_jobs import _slow_fake_python, add_labels, needed_labels

    add_labels(app.repository, needed_labels())
    app.admin.jobs.python = str(_slow_fake_python(tmp_path))
    boss = _req("boss")
    app.admin.start_finetune("", boss)
    deadline = time.time() + 30
    while "40%" not in app.admin.job_status(None, "", boss)[0] and time.time() < deadline:
        time.sleep(0.05)
    html = app.admin.job_status(None, "", boss)[0]
    assert re.search(r'<progress value="40" max="100"[^>]*>40%</progress>', html), html
    assert "40% · epoch 2 of 5 &lt;b&gt;" in html and "░" not in html  # the job's message, escaped
    [row] = app.admin.job_history(boss)
    assert row[2:4] == ["boss", "running"] and row[5] == ""
    table, seen = app.admin.job_history_poll("", boss)
    assert table == [row] and app.admin.job_history_poll(seen, boss) == (gr.skip(), gr.skip())  # unchanged: not re-sent
    (tmp_path / "go").touch()
    app.admin.jobs.wait(timeout=60)
    table, _ = app.admin.job_history_poll(seen, boss)  # the job ended: the poll sends the new row
    assert table[0][3:] == ["failed", table[0][4], "", "gate data missing (fake)"]
    [api] = app.admin.api_jobs(boss)
    assert (api["state"], api["started_by"], api["error"], api["version"]) == ("failed", "boss",
                                                                               "gate data missing (fake)", None)
    assert "<progress" not in app.admin.job_status(None, "", boss)[0]
    assert app.admin.job_history_poll("", _req("ann1")) == (gr.skip(), gr.skip())  # nothing for an annotator


def test_the_job_history_shows_the_candidate_and_the_gate_decision_newest_first(app, tmp_path) -> None:
    from studio.finetune_job import JobFailure
    from tests.studio.test_jobs import _old_job, finished_result

    _old_job(tmp_path / "jobs", "20240101-100000", finished_result("ft-abc", passed=False))
    _old_job(tmp_path / "jobs", "20240102-100000", JobFailure("too few labels").to_json())
    failed, done = app.admin.job_history(_req("boss"))
    assert failed[3] == "failed" and failed[6] == "too few labels"
    assert done == ["20240101-100000", "2024-01-01 10:00:00", "boss", "done", "1 min 15 s", "ft-abc",
                    "rejected: held-out NDCG 0.31 < 0.35"]


# -- override the gate: two steps ------------------------------------------------------------------------


@pytest.fixture
def rejected(app, tmp_path) -> str:
    """A fine-tuned candidate the gate rejected (registered, not served)."""
    from dataclasses import replace

    from tests.studio.test_registry import _candidate

    result = _candidate(app.service, tmp_path, "cand", epochs=4)
    result = replace(result, gate=replace(result.gate, passed=False, reason="held-out AUC 0.41 < 0.50"))
    return app.admin.manager.register_candidate(result, auto_promote=False, by="gate")


def test_promoting_a_rejected_version_needs_the_override_and_its_confirmation(app, rejected) -> None:
    zeroshot, boss = app.service.model_version, _req("boss")
    assert "failed its gate" in refusal(lambda: app.admin.promote(rejected, False, "", boss))
    # override without the confirmation: refused, nothing changes
    assert refusal(lambda: app.admin.promote(rejected, True, "", boss)) == (
        f"{rejected} was rejected (held-out AUC 0.41 < 0.50); to serve it anyway, also tick 'I understand the gate "
        "rejected it' and press Promote again. Nothing was changed.")
    assert app.service.model_version == zeroshot == app.repository.active_model().version
    assert app.repository.get_model(rejected).status == "rejected"
    app.admin.promote(rejected, True, "", boss, confirmed=True)
    assert app.service.model_version == rejected == app.repository.active_model().version
    # A version that was not rejected needs no confirmation, with or without override (here: the rollback path).
    app.admin.promote(zeroshot, True, "", boss)
    assert app.service.model_version == zeroshot


# -- two versions side by side ------------------------------------------------------------------------------


def test_two_versions_lists_side_by_side_for_one_profile_without_serving_either(app, rejected) -> None:
    import re

    zeroshot, boss = app.service.model_version, _req("boss")
    a, b = app.admin.compare_choices(boss)
    assert set(a["choices"]) == {zeroshot, rejected} and (a["value"], b["value"]) == (zeroshot, rejected)
    html = app.admin.compare(zeroshot, rejected, "chess, card SOLITAIRE", boss)  # an id and a title (any case)
    assert app.service.model_version == zeroshot  # the rejected candidate was not served
    ids = ["chess", "cards"]
    mine = app.service.recommend(ids, k=10)
    theirs = app.service.recommend_with(Path(app.repository.get_model(rejected).path), ids, k=10).items
    col_a, col_b = html.split("<h4>B: ")
    for column, recs in ((col_a, mine), (col_b, theirs)):
        shown = re.findall(r"<small>\(([^)]+)\)</small></td><td[^>]*>(-?[\d.]+)</td>", column)
        assert shown == [(r.item_id, f"{r.score:.4f}") for r in recs]  # the whole list with its scores, in order
    common = {r.item_id for r in mine} & {r.item_id for r in theirs}
    assert f"<strong>{len(common)} of {len(mine)}</strong> items are in both lists" in html
    assert html.count("● #") == 2 * len(common)
    assert f"<code>{zeroshot}</code> <small>(zeroshot · served now)" in html and "different scales" in html


def test_compare_says_what_is_wrong_with_the_profile_or_the_versions(app) -> None:
    boss, zeroshot = _req("boss"), app.service.model_version
    assert "neither an item id nor a title): 'Halo', 'nope'" in refusal(
        lambda: app.admin.compare(zeroshot, zeroshot, "chess, Halo, nope", boss))
    assert "type the liked items" in refusal(lambda: app.admin.compare(zeroshot, zeroshot, " , ", boss))
    assert "choose two model versions" in refusal(lambda: app.admin.compare(zeroshot, None, "chess", boss))
    assert "'ghost' is not in the registry" in refusal(lambda: app.admin.compare(zeroshot, "ghost", "chess", boss))
