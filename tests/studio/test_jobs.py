"""studio.jobs: the background fine-tune job, one at a time, with its options on the job's command line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from storage import FeedbackIn, Repository, TaskIn
from studio.finetune_job import JobOptions, build_parser
from studio.jobs import FinetuneJobs, JobBusyError, TooFewLabelsError
from studio.registry import ModelManager

BOARD = ["chess", "checkers", "puzzle", "noimage"]
ARCADE = ["space", "racer", "cards"]
ITEMS = BOARD + ARCADE


def add_labels(repository: Repository, n: int, *, annotator: str = "a0", start: int = 0,
               campaign: str | None = None) -> None:
    """``n`` judgements of ``n`` distinct (profile, item) pairs: ``n`` labels (a pair judged twice is one label);
    with ``campaign``, as answers to that campaign's tasks."""
    pairs = [((c,), i) for c in ITEMS for i in ITEMS if i != c][start:start + n]
    assert len(pairs) == n
    if campaign is not None:
        repository.add_tasks(campaign, [TaskIn(item, context, "v0") for context, item in pairs])
        while (task := repository.next_task(campaign, annotator)) is not None:
            repository.answer_task(annotator, task.task_id, "like", None, f"{annotator}-{task.task_id}")
        return
    for context, item in pairs:
        repository.add_feedback(FeedbackIn(request_id=f"{annotator}-{context[0]}-{item}", item_id=item, label="like",
                                           context_ids=context, model_version="v0", annotator=annotator))


def needed_labels() -> int:
    from recsys_core.training.finetune import FinetuneConfig

    return FinetuneConfig.min_labels + FinetuneConfig.min_heldout


@pytest.fixture
def repository(tmp_path):
    return Repository.from_url(f"sqlite:///{tmp_path / 'studio.sqlite3'}")


def test_background_job_runs_once_at_a_time_and_registers_its_candidate(tiny_catalog_dir, repository, tmp_path,
                                                                         tiny_catalog) -> None:
    from tests.conftest import make_tiny_service

    service = make_tiny_service(tiny_catalog, tmp_path / "data" / "features")
    service.prepare()
    manager = ModelManager(service, repository)
    manager.sync_at_startup()
    n = 0
    for rep in range(8):
        for fans, liked, disliked in ((BOARD, BOARD, ARCADE), (ARCADE, ARCADE, BOARD)):
            context = (fans[rep % len(fans)],)
            for item, label in [(i, "like") for i in liked if i not in context] + [(i, "dislike") for i in disliked]:
                n += 1
                repository.add_feedback(FeedbackIn(request_id=f"r{n}", item_id=item, label=label, context_ids=context,
                                                   model_version=service.model_version, annotator=f"a{rep % 3}"))
    jobs = FinetuneJobs(manager=manager, database_url=f"sqlite:///{tmp_path / 'studio.sqlite3'}",
                        data_dir=tmp_path / "data", auto_promote=True,
                        catalog_args=["--catalog", str(tiny_catalog_dir), "--text-encoder", "tiny-random",
                                      "--image-encoder", "tiny-random"], options=JobOptions(epochs=3, threads=1))
    status = jobs.start("admin")
    assert status.running
    with pytest.raises(JobBusyError, match="already running"):
        jobs.start("someone else")
    final = jobs.wait(timeout=240)
    assert final.state == "succeeded", final.error
    entry = repository.get_model(final.version)
    assert entry is not None and entry.label_snapshot and repository.get_snapshot(entry.label_snapshot)
    if final.gate_passed:
        assert repository.active_model().version == final.version == service.model_version
    else:
        assert entry.status == "rejected" and service.model_version != final.version
    assert jobs.start("admin").running  # a new job may start once the last one ended
    jobs.wait(timeout=240)


def _fake_python(tmp_path: Path) -> Path:
    """An interpreter stand-in that records its argv and fails the way the job does (a JobFailure in --json)."""
    script = tmp_path / "fake-python"
    script.write_text(f"""#!{sys.executable}
import json, sys
from pathlib import Path
argv = sys.argv[1:]
Path({str(tmp_path / "argv.json")!r}).write_text(json.dumps(argv))
Path(argv[argv.index("--json") + 1]).write_text(json.dumps({{"ok": False, "error": "too few labels (fake)"}}))
sys.exit(2)
""")
    script.chmod(0o755)
    return script


def test_too_few_labels_are_refused_with_both_numbers_before_any_job_starts(tiny_service, repository,
                                                                              tmp_path) -> None:
    manager = ModelManager(tiny_service, repository)
    manager.sync_at_startup()
    jobs = FinetuneJobs(manager=manager, database_url="sqlite://", data_dir=tmp_path / "data",
                        catalog_args=["--catalog", "demo"], python=str(_fake_python(tmp_path)))
    needed = needed_labels()
    add_labels(repository, needed - 1)
    add_labels(repository, 3, annotator="a1")  # three pairs judged a second time: judgements, not new labels
    with pytest.raises(TooFewLabelsError) as info:
        jobs.start("admin")
    assert str(info.value) == (
        f"not enough labels to fine-tune: {needed - 1} usable label(s) (from {needed + 2} judgement(s)); at least "
        f"{needed} are needed (20 to train on, 5 held out to gate the candidate). Collect more judgements, then "
        "start again")
    with pytest.raises(TooFewLabelsError, match="in campaign 'c1': 0 usable label"):
        jobs.start("admin", campaign="c1")
    assert jobs.status().state == "idle"  # no job: nothing ran, nothing was written
    assert not (tmp_path / "argv.json").exists() and not (tmp_path / "data" / "jobs").exists()
    add_labels(repository, 1, start=needed - 1)
    assert jobs.start("admin").running  # enough now: the job starts
    jobs.wait(timeout=60)


def test_the_job_options_reach_the_job_command_line(tiny_service, repository, tmp_path) -> None:
    manager = ModelManager(tiny_service, repository)
    manager.sync_at_startup()
    add_labels(repository, needed_labels(), campaign="c1")  # the job is started for campaign c1
    options = JobOptions(epochs=3, lr=0.001, method="soft", threads=1, likes_as_interactions=False,
                         offline_gate=False)
    jobs = FinetuneJobs(manager=manager, database_url="sqlite://", data_dir=tmp_path / "data",
                        catalog_args=["--catalog", "demo", "--text-encoder", "tiny-random"],
                        python=str(_fake_python(tmp_path)), options=options)
    assert jobs.start("admin", campaign="c1").running
    final = jobs.wait(timeout=60)
    assert final.state == "failed" and final.error == "too few labels (fake)"  # the job's own message
    argv = json.loads((tmp_path / "argv.json").read_text())
    assert argv[:2] == ["-m", "studio.finetune_job"]
    args = build_parser().parse_args(argv[2:])
    assert (args.epochs, args.lr, args.method, args.threads) == (3, 0.001, "soft", 1)
    assert args.no_likes_as_interactions and args.no_offline_gate
    assert (args.catalog, args.text_encoder, args.campaign) == ("demo", "tiny-random", "c1")
    assert args.label_weight == build_parser().parse_args(["--out", "x"]).label_weight  # unset: the job's default


def _slow_fake_python(tmp_path: Path) -> Path:
    """An interpreter stand-in that reports 40 % progress, waits for ``<tmp>/go``, then fails like a job."""
    script = tmp_path / "slow-python"
    script.write_text(f"""#!{sys.executable}
import json, sys, time
from pathlib import Path
argv = sys.argv[1:]
Path(argv[argv.index("--progress-file") + 1]).write_text(json.dumps({{"fraction": 0.4, "message": "epoch 2 of 5 <b>"}}) + "\\n")
go = Path({str(tmp_path / "go")!r})
deadline = time.time() + 60
while not go.exists() and time.time() < deadline:
    time.sleep(0.05)
Path(argv[argv.index("--json") + 1]).write_text(json.dumps({{"ok": False, "error": "gate data missing (fake)"}}))
sys.exit(2)
""")
    script.chmod(0o755)
    return script


def _old_job(jobs_dir: Path, job_id: str, result: str | None, *, meta: bool = True) -> Path:
    from studio.jobs import write_job_meta

    folder = jobs_dir / job_id
    folder.mkdir(parents=True)
    if meta:
        write_job_meta(folder, started_by="boss", started_at=time.mktime(time.strptime(job_id, "%Y%m%d-%H%M%S")),
                       campaign=None)
    (folder / "job.log").write_text("epoch 1\nTraceback: killed\n")
    if result is not None:
        (folder / "result.json").write_text(result)
    return folder


def finished_result(version: str = "ft-abc", passed: bool = False) -> str:
    from studio.finetune_job import GateDecision, JobResult, SnapshotInfo

    return JobResult(out_dir="/nowhere", version=version, parent="zs", n_train=20, n_heldout=5, seconds=75.4,
                     gate=GateDecision(base={}, candidate={}, passed=passed, reason="held-out NDCG 0.31 < 0.35"),
                     snapshot=SnapshotInfo(id="s", n_examples=25, n_judgements=30, config={},
                                           feedback_ids=())).to_json()


def test_the_job_history_lists_every_job_folder_newest_first_with_how_it_ended(tmp_path) -> None:
    from studio.finetune_job import JobFailure
    from studio.jobs import read_history

    jobs_dir = tmp_path / "jobs"
    _old_job(jobs_dir, "20240101-100000", finished_result())
    _old_job(jobs_dir, "20240102-100000", JobFailure("at least 20 labels are needed").to_json())
    _old_job(jobs_dir, "20240103-100000", None)  # killed: no result
    _old_job(jobs_dir, "20231231-235959", finished_result("ft-old", passed=True), meta=False)  # before job.json
    records = read_history(jobs_dir)
    assert [r.job_id for r in records] == ["20240103-100000", "20240102-100000", "20240101-100000",
                                           "20231231-235959"]
    killed, failed, done, legacy = records
    assert (killed.state, killed.version) == ("failed", None)
    assert killed.error.startswith("ended without a result") and "Traceback: killed" in killed.error
    assert (failed.state, failed.error, failed.started_by) == ("failed", "at least 20 labels are needed", "boss")
    assert (done.state, done.version, done.gate_passed, done.seconds) == ("done", "ft-abc", False, 75.4)
    assert done.gate_reason == "held-out NDCG 0.31 < 0.35"
    assert done.started_at == time.mktime((2024, 1, 1, 10, 0, 0, 0, 0, -1))
    assert (legacy.state, legacy.gate_passed, legacy.started_by) == ("done", True, "")  # start time from the id
    assert legacy.started_at == time.mktime((2023, 12, 31, 23, 59, 59, 0, 0, -1))
    assert read_history(tmp_path / "no-jobs-yet") == []


def test_a_running_job_is_in_the_history_with_its_progress_and_then_with_its_end(tiny_service, repository,
                                                                                   tmp_path) -> None:
    manager = ModelManager(tiny_service, repository)
    manager.sync_at_startup()
    add_labels(repository, needed_labels())
    jobs = FinetuneJobs(manager=manager, database_url="sqlite://", data_dir=tmp_path / "data",
                        catalog_args=["--catalog", "demo"], python=str(_slow_fake_python(tmp_path)))
    _old_job(tmp_path / "data" / "jobs", "20240101-100000", finished_result())
    jobs.start("boss")
    deadline = time.time() + 30
    while jobs.status().fraction == 0 and time.time() < deadline:
        time.sleep(0.05)
    assert (jobs.status().fraction, jobs.status().message) == (0.4, "epoch 2 of 5 <b>")
    running, old = jobs.history()
    assert (running.state, running.started_by, old.job_id) == ("running", "boss", "20240101-100000")
    (tmp_path / "go").touch()
    jobs.wait(timeout=60)
    ended = jobs.history()[0]
    assert (ended.job_id, ended.state, ended.error) == (running.job_id, "failed", "gate data missing (fake)")
    assert ended.seconds is not None and ended.seconds >= 0
