"""The fine-tune job: one at a time, outside the request path, with progress the app can show.

The job runs ``python -m studio.finetune_job`` in a subprocess. A subprocess rather than a thread:
training then never holds the app's interpreter, a crash or a kill of the job cannot take the app
down, and the candidate is written to a temporary folder and renamed (``save_checkpoint``), so a
killed job never leaves a half-written model behind. The app keeps serving the active model the
whole time; when the job ends the candidate is registered and, if it passed its gate (and
``auto_promote``), promoted with a hot swap.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from recsys_core.errors import RecsysError
from recsys_core.model.checkpoint import unfinished
from storage.db import with_default_driver
from studio.finetune_job import JobFailure, JobOptions, JobResult, read_outcome
from studio.registry import unchanged

log = logging.getLogger(__name__)


class JobBusyError(RecsysError, RuntimeError):
    """A fine-tune is already running: only one at a time."""


class TooFewLabelsError(RecsysError, ValueError):
    """The stored labels cannot be enough for a fine-tune: refused before any job starts."""


@dataclass(frozen=True)
class JobStatus:
    state: str  # idle | running | succeeded | failed
    job_id: str = ""
    started_by: str = ""
    started_at: float = 0.0
    fraction: float = 0.0
    message: str = ""
    version: str | None = None
    gate_passed: bool | None = None
    gate_reason: str = ""
    seconds: float = 0.0
    error: str = ""

    @property
    def running(self) -> bool:
        return self.state == "running"


class FinetuneJobs:
    def __init__(self, *, manager, database_url: str, data_dir: Path, catalog_args: Sequence[str],
                 auto_promote: bool = True, python: str = sys.executable, options: JobOptions = JobOptions()) -> None:
        """``catalog_args``: the app's catalog and encoder flags, for the job to rebuild the same features;
        ``options``: how every job trains (:class:`studio.finetune_job.JobOptions`)."""
        self.manager = manager
        # The job opens its own plain SQLAlchemy engine: spell the driver out (postgres:// -> +psycopg).
        self.database_url = with_default_driver(database_url)
        self.data_dir = Path(data_dir)
        self.catalog_args = list(catalog_args)
        self.auto_promote = auto_promote
        self.python = python
        self.options = options
        self._lock = threading.Lock()
        self._status = JobStatus("idle")
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None
        self._remove_unfinished_candidates()

    def _remove_unfinished_candidates(self) -> None:
        """A job killed mid-write leaves ``<candidate>.tmp``; it was never registered, so it is only junk.

        Only folders untouched for an hour: another app replica on the same data folder may be writing one now.
        """
        for leftover in unfinished(self.data_dir / "models"):
            if time.time() - leftover.stat().st_mtime < 3600:
                continue
            log.warning("removing %s: an unfinished candidate from a fine-tune that did not complete", leftover)
            shutil.rmtree(leftover, ignore_errors=True)

    def status(self) -> JobStatus:
        status = self._status
        if status.running:
            progress = self._read_progress(status.job_id)
            if progress:
                status = replace(status, fraction=progress["fraction"], message=progress["message"])
        return status

    def check_labels(self, campaign: str | None = None) -> int:
        """The usable labels (or ``campaign``'s); raises :class:`TooFewLabelsError` when they cannot be enough.

        Counted the way the job counts them: the judgements from the one reader (``judgements_frame``),
        aggregated into one label per (profile, item). Nobody is left out here, and items the catalog lost
        are not checked, so this is an upper bound of what the job will train on: a job refused here would
        certainly have failed, and one started may still stop with the job's own, more exact, message.
        """
        # Lazily: the training package imports torch, which the app's first page needs no earlier than this.
        from recsys_core.labels.aggregation import AggregationConfig, aggregate
        from recsys_core.training.finetune import FinetuneConfig

        judgements = self.manager.repository.judgements_frame(campaign)
        everyone = AggregationConfig(min_control_accuracy=0.0, min_majority_agreement=0.0)
        examples = aggregate(judgements, everyone).examples
        # A label without a profile (a 👍 on an upload's results) trains nothing: the job skips it.
        usable = sum(1 for context in examples["context_ids"] if len(context))
        # The job needs min_labels to train on after min_heldout labels are held out for its gate.
        needed = FinetuneConfig.min_labels + FinetuneConfig.min_heldout
        if usable < needed:
            where = f" in campaign {campaign!r}" if campaign else ""
            raise TooFewLabelsError(
                f"not enough labels to fine-tune{where}: {usable} usable label(s) (from {len(judgements)} "
                f"judgement(s)); at least {needed} are needed ({FinetuneConfig.min_labels} to train on, "
                f"{FinetuneConfig.min_heldout} held out to gate the candidate). Collect more judgements, then "
                "start again")
        return usable

    def start(self, by: str, *, campaign: str | None = None) -> JobStatus:
        """Start a fine-tune from the active model; raises :class:`JobBusyError` while one runs and
        :class:`TooFewLabelsError` (no job started) when the labels cannot be enough."""
        with self._lock:
            if self._status.running:
                raise JobBusyError(f"a fine-tune is already running (started by {self._status.started_by}, "
                                   f"{self.status().message or 'starting'}); wait for it to finish")
            self.check_labels(campaign)
            job_id = time.strftime("%Y%m%d-%H%M%S")
            active = self.manager.repository.active_model()
            base = active.path if active is not None and active.path != "zero-shot" else None
            job_dir = self.data_dir / "jobs" / job_id
            job_dir.mkdir(parents=True, exist_ok=True)
            # Who started it and when: result.json says neither, and the job history shows both.
            write_job_meta(job_dir, started_by=by, started_at=time.time(), campaign=campaign)
            out_dir = self.data_dir / "models" / f"candidate-{job_id}"
            # The database URL goes in the environment, not argv: argv is visible to every local user (ps).
            cmd = [self.python, "-m", "studio.finetune_job", "--out", str(out_dir),
                   "--data-dir", str(self.data_dir), "--json", str(job_dir / "result.json"),
                   "--progress-file", str(job_dir / "progress.jsonl"), "--parent-pid", str(os.getpid()),
                   *self.catalog_args, *self.options.to_argv()]
            if base:
                cmd += ["--base", base]
            if campaign:
                cmd += ["--campaign", campaign]
            self._status = JobStatus("running", job_id=job_id, started_by=by, started_at=time.time(),
                                     message="starting")
            self._thread = threading.Thread(target=self._run, args=(cmd, job_dir, by), daemon=True,
                                            name=f"finetune-{job_id}")
            self._thread.start()
            log.info("%s started fine-tune job %s", by, job_id)
            return self._status

    def history(self, limit: int = 100) -> list["JobRecord"]:
        """Every job of this data folder, newest first (see :func:`read_history`)."""
        status = self._status
        return read_history(self.data_dir / "jobs", running=status.job_id if status.running else None,
                            limit=limit)

    def wait(self, timeout: float | None = None) -> JobStatus:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return self.status()

    def _read_progress(self, job_id: str) -> dict | None:
        path = self.data_dir / "jobs" / job_id / "progress.jsonl"
        try:
            lines = path.read_text(encoding="utf-8").strip().splitlines()
            return json.loads(lines[-1]) if lines else None
        except (OSError, ValueError):
            return None

    def _run(self, cmd: list[str], job_dir: Path, by: str) -> None:
        started = time.time()
        log_path = job_dir / "job.log"
        try:
            with open(log_path, "w", encoding="utf-8") as log_file:
                self._process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT,
                                                 env=dict(os.environ, DATABASE_URL=self.database_url))
                code = self._process.wait()
            outcome = read_outcome(job_dir / "result.json")
            if code != 0 or not isinstance(outcome, JobResult):
                error = (outcome.error if isinstance(outcome, JobFailure) else "") or _tail(log_path)
                self._status = replace(self._status, state="failed", error=error, seconds=time.time() - started,
                                       message="failed")
                log.error("fine-tune job %s failed: %s", self._status.job_id, error)
                return
            version = self.manager.register_candidate(outcome, auto_promote=self.auto_promote, by=by)
            gate = outcome.gate
            if unchanged(outcome):
                message = "unchanged: the labels did not change the served model, which stays"
            else:
                message = ("promoted" if gate.passed and self.auto_promote else
                           "candidate registered" if gate.passed else "rejected by the gate")
            self._status = replace(self._status, state="succeeded", fraction=1.0, version=version,
                                   gate_passed=gate.passed, gate_reason=gate.reason,
                                   seconds=time.time() - started, message=message)
        except Exception as exc:  # the job thread must always end in a final state the UI can show
            log.exception("fine-tune job crashed")
            self._status = replace(self._status, state="failed", error=f"{type(exc).__name__}: {exc}",
                                   seconds=time.time() - started, message="failed")


META_FILE = "job.json"


def write_job_meta(job_dir: Path, *, started_by: str, started_at: float, campaign: str | None) -> None:
    (Path(job_dir) / META_FILE).write_text(json.dumps({"started_by": started_by, "started_at": started_at,
                                                       "campaign": campaign}), encoding="utf-8")


@dataclass(frozen=True)
class JobRecord:
    """One fine-tune job as its folder ``<data dir>/jobs/<id>/`` tells it (the job history's row)."""
    job_id: str
    started_at: float  # epoch seconds
    started_by: str  # "" for jobs written before job.json existed
    campaign: str | None
    state: str  # running | done | failed
    seconds: float | None  # how long it ran (so far, while running); None when nothing says
    version: str | None = None  # the candidate (done)
    gate_passed: bool | None = None
    gate_reason: str = ""
    error: str = ""  # why it failed


def read_history(jobs_dir: Path, *, running: str | None = None, limit: int = 100) -> list[JobRecord]:
    """The job folders under ``jobs_dir``, newest first. ``running``: the id this process is running now.

    A folder without a result that is not the running job was killed or crashed (or belongs to an app
    that stopped mid-job): it is shown as failed, since it never produced a candidate.
    """
    try:
        folders = [f for f in Path(jobs_dir).iterdir() if f.is_dir()]
    except OSError:
        return []
    records = [_record(folder, running) for folder in folders]
    return sorted(records, key=lambda r: (r.started_at, r.job_id), reverse=True)[:limit]


def _record(folder: Path, running: str | None) -> JobRecord:
    meta: dict = {}
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    try:  # older jobs: the id is the start time
        started = float(meta.get("started_at") or time.mktime(time.strptime(folder.name[:15], "%Y%m%d-%H%M%S")))
    except (ValueError, TypeError):
        started = folder.stat().st_mtime
    base = dict(job_id=folder.name, started_at=started, started_by=str(meta.get("started_by") or ""),
                campaign=meta.get("campaign"))
    if folder.name == running:
        return JobRecord(**base, state="running", seconds=time.time() - started)
    result = folder / "result.json"
    try:
        outcome = read_outcome(result)
    except (OSError, ValueError) as exc:
        return JobRecord(**base, state="failed", seconds=None, error=f"unreadable result.json ({exc})")
    if isinstance(outcome, JobResult):
        return JobRecord(**base, state="done", seconds=outcome.seconds, version=outcome.version,
                         gate_passed=outcome.gate.passed, gate_reason=outcome.gate.reason)
    ended = next((p.stat().st_mtime for p in (result, folder / "job.log", folder / "progress.jsonl") if p.exists()),
                 None)
    seconds = max(0.0, ended - started) if ended is not None else None
    if isinstance(outcome, JobFailure):
        return JobRecord(**base, state="failed", seconds=seconds, error=outcome.error or _tail(folder / "job.log"))
    return JobRecord(**base, state="failed", seconds=seconds,
                     error="ended without a result (the job or the app was stopped); last log lines: "
                           + _tail(folder / "job.log"))


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "no log"
