"""studio.finetune_job: the fine-tune process's command line, the judgements it hands to training, its result."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

from recsys_core.errors import InvalidInputError
from recsys_core.labels.aggregation import aggregate
from storage import FeedbackIn
from studio.finetune_job import (
    GateDecision, JobFailure, JobOptions, JobResult, SnapshotInfo, build_parser, read_judgements, read_outcome,
)
from tests.conftest import REPO_ROOT
from tests.studio_app import req, studio_app


def test_help_names_the_module_and_importing_it_loads_no_training_code() -> None:
    done = subprocess.run([sys.executable, "-m", "studio.finetune_job", "--help"], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.startswith("usage: python -m studio.finetune_job") and "--epochs" in done.stdout
    # app.py imports this module (for the job's options and result): it must stay cheap.
    code = "import sys, studio.finetune_job; sys.exit(bool({'torch', 'pandas', 'gradio'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, timeout=120).returncode == 0


def test_judgements_reach_training_as_aggregate_reads_them(tiny_service, tmp_path) -> None:
    app = studio_app(tiny_service, tmp_path)
    app.admin.create_campaign("c", 2, 1, 0, 1, 1, "graded", req("boss"))  # 2 profiles: a task and a control each
    while task := app.label.api_next("c", req("ann1")):
        app.label.api_answer(task["task_id"], "3", f"t{task['task_id']}", req("ann1"))
    app.repository.add_feedback(FeedbackIn(request_id="anon", item_id="checkers", label="like", context_ids=("chess",),
                                           model_version="m"))  # open mode: nobody's name on it
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"

    frame = read_judgements(url)
    assert len(frame) == 5 and list(frame["feedback_id"]) == sorted(frame["feedback_id"])
    assert frame["annotator"].tolist().count("ann1") == 4 and frame["annotator"].iloc[-1] == "anonymous"
    # The job reads storage's one judgements frame as it is (no adaptation of its own).
    pd.testing.assert_frame_equal(frame, app.repository.judgements_frame())
    assert frame["grade"].iloc[:4].tolist() == [3, 3, 3, 3] and pd.isna(frame["grade"].iloc[4])
    assert all(isinstance(c, list) for c in frame["context_ids"]) and frame["is_control"].dtype == bool
    assert frame["is_control"].sum() == 2
    assert frame.loc[frame["is_control"], "expected"].between(0, 1).all()
    labels = aggregate(frame)
    assert len(labels.examples) == 3 and "anonymous" in {a for t in labels.examples["annotators"] for a in t}
    assert len(read_judgements(url, "c")) == 4  # a campaign's tasks only: the anonymous like has none


def test_a_missing_sqlite_database_is_a_clear_error_not_an_empty_one(tmp_path) -> None:
    missing = tmp_path / "typo.sqlite3"
    with pytest.raises(InvalidInputError, match="no database at"):
        read_judgements(f"sqlite:///{missing}")
    assert not missing.exists()  # nothing was created


def _result(**changes) -> JobResult:
    values = dict(out_dir="/data/models/candidate-1", version="ft-1", parent="zeroshot-abc",
                  gate=GateDecision(base={"auc": 0.6}, candidate={"auc": 0.7, "pairwise_accuracy": 0.8}, passed=True,
                                    reason="not worse"),
                  n_train=40, n_heldout=10, seconds=12.5,
                  snapshot=SnapshotInfo(id="snap-1", n_examples=50, n_judgements=60, config={"method": "majority"},
                                        feedback_ids=(3, 1, 2), excluded_annotators={"bob": "control accuracy 0.2"}),
                  history=({"epoch": 1.0, "loss": 0.5},))
    return JobResult(**{**values, **changes})


def test_the_job_result_round_trips_through_the_json_the_job_writes(tmp_path) -> None:
    result = _result()
    text = result.to_json()
    # The file keeps the keys it had as a plain dict (an admin may read <data dir>/jobs/<id>/result.json).
    data = json.loads(text)
    assert set(data) == {"ok", "out_dir", "version", "parent", "gate", "n_train", "n_heldout", "seconds", "history",
                         "snapshot"} and data["ok"] is True
    assert set(data["gate"]) == {"base", "candidate", "passed", "reason"}
    assert set(data["snapshot"]) == {"id", "n_examples", "n_judgements", "config", "feedback_ids",
                                     "excluded_annotators"}
    assert JobResult.from_json(text) == result
    assert JobResult.from_json(_result(parent=None, history=()).to_json()).parent is None
    path = tmp_path / "result.json"
    assert read_outcome(path) is None  # the job wrote nothing: crashed or killed
    path.write_text(text)
    assert read_outcome(path) == result
    path.write_text(JobFailure("3 usable training labels; at least 20 are needed").to_json())
    assert read_outcome(path) == JobFailure("3 usable training labels; at least 20 are needed")
    with pytest.raises(ValueError, match="not a finished job's result"):
        JobResult.from_json(path.read_text())
    with pytest.raises(ValueError, match="without 'snapshot'"):
        JobResult.from_json(json.dumps({k: v for k, v in data.items() if k != "snapshot"}))


def test_every_job_option_becomes_the_flag_the_job_parses() -> None:
    from dataclasses import fields

    options = JobOptions(epochs=3, lr=1e-3, label_weight=0.5, heldout=0.3, gate_confidence=0.9, method="soft",
                         min_control_accuracy=0.6, min_agreement=0.2, seed=7, threads=2, likes_as_interactions=False,
                         offline_gate=False)
    args = build_parser().parse_args(["--out", "x", *options.to_argv()])
    for f in fields(JobOptions):
        value = getattr(options, f.name)
        parsed = not getattr(args, f"no_{f.name}") if isinstance(value, bool) else getattr(args, f.name)
        assert parsed == value, f.name
    assert JobOptions().to_argv() == []  # nothing set: every default is the job's own
    assert JobOptions(epochs=4).to_argv() == ["--epochs", "4"]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"epochs": 0}, "epochs is 0; allowed: >= 1"),
    ({"heldout": 1.0}, "heldout is 1.0; allowed: 0 < heldout < 1"),
    ({"method": "mean"}, "method is 'mean'; allowed: majority or soft"),
])
def test_job_options_are_checked(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        JobOptions(**kwargs)
