"""The crowd-labelling load benchmark (benchmarks/load_feedback.py): its plan, its row counting, and one
small run of the real script against a started app with accounts (tiny encoders, tiny catalog)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import Session

from storage import Annotator, Feedback, init_db, make_engine
from tests.conftest import REPO_ROOT, load_benchmark, write_tiny_catalog

SCRIPT = REPO_ROOT / "benchmarks" / "load_feedback.py"


@pytest.fixture(scope="module")
def load_feedback():
    """The script as a module (benchmarks/ is not a package)."""
    return load_benchmark("load_feedback")


def test_plan_sends_every_label_once_and_resends_a_share_both_ways(load_feedback) -> None:
    config = load_feedback.LoadConfig(clients=4, per_client=10, recommend_clients=0, resend_fraction=0.2, seed=3)
    item_ids = [f"item{i}" for i in range(12)]
    plans = load_feedback.build_plan(config, item_ids, "tok", ["a", "b", "c", "d"])

    calls = [call for plan in plans for call in plan.calls]
    assert len({c.request_id for c in calls}) == 40
    assert all(c.request_id.startswith("tok-") for c in calls)
    assert len({(c.item_id, c.liked, c.label) for c in calls}) == 40  # no content repeats across the whole plan
    assert all(c.item_id not in c.liked and len(c.liked) == 3 for c in calls)
    for plan in plans:
        sends = Counter(call.request_id for step in plan.steps for call in step)
        assert sorted(sends.values()) == [1] * 8 + [2, 2]
        assert sum(len(step) == 2 for step in plan.steps) == 1  # one concurrent resend, one sent later
        later = next(rid for rid, n in sends.items() if n == 2 and all(len(s) == 1 for s in plan.steps
                                                                          if s[0].request_id == rid))
        positions = [i for i, step in enumerate(plan.steps) if step[0].request_id == later]
        # RESEND_GAP other calls in between, unless the client runs out of calls first
        assert positions[1] - positions[0] == load_feedback.RESEND_GAP + 1 or positions[1] == len(plan.steps) - 1
    again = load_feedback.build_plan(config, item_ids, "tok", ["a", "b", "c", "d"])
    assert again == plans  # seeded


def test_resend_count_rounds_half_up(load_feedback) -> None:
    assert load_feedback.LoadConfig(per_client=5, resend_fraction=0.1).resends_per_client == 1
    assert load_feedback.LoadConfig(per_client=40, resend_fraction=0.1).resends_per_client == 4
    assert load_feedback.LoadConfig(per_client=40, resend_fraction=0.0).resends_per_client == 0
    with pytest.raises(ValueError, match="allowed 0..1"):
        load_feedback.LoadConfig(resend_fraction=1.5)


def test_count_rows_reports_missing_doubled_foreign_and_misattributed_rows(load_feedback, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = make_engine(url)
    init_db(engine)
    with Session(engine) as session:
        alice, bob = Annotator(username="alice"), Annotator(username="bob")
        session.add_all([alice, bob])
        session.flush()

        def row(request_id: str, who: Annotator, item: str, label: str = "like") -> Feedback:
            return Feedback(request_id=request_id, annotator_id=who.id, context_ids=["x", "y"], item_id=item,
                            label=label, model_version="m")

        session.add_all([
            row("tok-000-0000", alice, "i1"),
            row("tok-000-0001", alice, "i2"),
            row("tok-000-0009", alice, "i1"),  # never sent, same content as -0000: stored twice under a new id
            row("tok-001-0000", alice, "i3"),  # bob sent it, alice owns it
            row("other-000-0000", alice, "i1"),  # another run: not counted
        ])
        session.commit()
    engine.dispose()
    sent = {"tok-000-0000": "alice", "tok-000-0001": "alice", "tok-001-0000": "bob", "tok-001-0001": "bob"}

    counts = load_feedback.count_rows(url, "tok", sent)

    assert counts == load_feedback.RowCounts(stored=3, rows=4, duplicate_request_ids=0, duplicate_contents=1,
                                             unexpected_rows=1, misattributed=1)
    assert counts.duplicates_stored == 1


def test_url_without_a_database_is_a_usage_error() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "--url", "http://127.0.0.1:9/", "--open"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "--database-url" in result.stderr


def test_small_crowd_stores_every_label_exactly_once(tmp_path: Path) -> None:
    """6 accounts x 5 labels (2 of each resent) while a client calls /recommend, against the started app."""
    catalog = write_tiny_catalog(tmp_path / "catalog")
    out = tmp_path / "load.json"
    cmd = [sys.executable, str(SCRIPT), "--clients", "6", "--per-client", "5", "--resend-fraction", "0.4",
           "--recommend-clients", "1", "--catalog", str(catalog), "--text-encoder", "tiny-random",
           "--image-encoder", "tiny-random", "--threads", "1", "--data-dir", str(tmp_path / "data"),
           "--json", str(out), "--log-level", "WARNING"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["sent"] == 30
    assert report["stored"] == report["sent"]
    assert report["duplicates_stored"] == 0
    assert report["errors"] == 0, report["error_samples"]
    assert report["unexpected_rows"] == 0 and report["misattributed"] == 0
    assert report["resent"] == 12 and report["feedback_calls"] == 42
    assert report["acknowledged"] == 30 and report["acknowledged_twice"] == 0  # each resend answered stored=False
    assert report["recommend_calls"] >= 1
    assert report["mode"] == "password" and report["passed"] is True
    assert json.loads(result.stdout) == report
