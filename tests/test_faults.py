"""Faults: SIGKILL mid-burst and mid-fine-tune, read-only and full database, corrupt caches, atomic model files.

The kill tests run ``python app.py`` as a user would (tiny catalog, tiny random encoders) and kill it with
SIGKILL, the one signal nothing can clean up after.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import gradio as gr
import pytest
import torch
from gradio_client import Client
from sqlalchemy import event

from recsys_core.model import content
from storage import FeedbackIn, Repository, make_engine
from storage.db import init_db
from tests.app_process import start_app, stop_app
from tests.conftest import write_tiny_catalog
from tests.recsys_core.training.test_finetune import ARCADE, _examples
from ui.handlers import Handlers

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL and /proc are POSIX")


def _app_args(root: Path) -> list[str]:
    catalog = root / "catalog"
    if not catalog.exists():
        write_tiny_catalog(catalog)
    return ["--catalog", str(catalog), "--text-encoder", "tiny-random", "--image-encoder", "tiny-random",
            "--data-dir", str(root / "data"), "--device", "cpu", "--feedback-rate-limit", "0"]


def _integrity(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0]


def _request_ids(db: Path) -> set[str]:
    with sqlite3.connect(db) as con:
        return {row[0] for row in con.execute("SELECT request_id FROM feedback")}


def test_sigkill_during_a_feedback_burst_loses_no_acknowledged_label(tmp_path: Path) -> None:
    args = _app_args(tmp_path)
    proc, url = start_app(args, tmp_path / "app.log", timeout=120)
    acked: set[str] = set()
    lock, stop = threading.Lock(), threading.Event()

    def annotator(worker: int) -> None:
        client = Client(url, verbose=False)
        n = 0
        while not stop.is_set():
            request_id = f"w{worker}-{n}"
            try:
                client.predict(["chess"], ARCADE[n % 3], "like", request_id, api_name="/feedback")
            except Exception:  # the server died under us: this label was never acknowledged
                return
            with lock:
                acked.add(request_id)
            n += 1

    threads = [threading.Thread(target=annotator, args=(i,), daemon=True) for i in range(6)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < 40:
            assert time.monotonic() < deadline, "the burst never got going"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: six clients are sending right now
        proc.wait(timeout=10)
    finally:
        stop.set()
        stop_app(proc)
    for t in threads:
        t.join(timeout=30)
    db = tmp_path / "data" / "recsys.sqlite3"
    assert _integrity(db) == "ok"
    stored = _request_ids(db)
    assert acked <= stored, f"acknowledged but lost: {sorted(acked - stored)[:5]}"
    assert len(stored) - len(acked) <= len(threads)  # at most one in-flight label per client beyond the acks

    proc, url = start_app(args, tmp_path / "app2.log", timeout=120)  # restart on the same folder
    try:
        client = Client(url, verbose=False)
        assert len(client.predict(["chess"], 3, api_name="/recommend")) == 3
        assert client.predict(["chess"], "space", "like", "w0-0", api_name="/feedback")["stored"] is False
    finally:
        stop_app(proc)


def _seed_labels(db_url: str) -> None:
    """Board-game fans like board games and dislike arcade ones, and the other way round: enough to fine-tune."""
    repository = Repository.from_url(db_url)
    for n, row in enumerate(_examples(8).itertuples(index=False)):
        label = "like" if row.label == 1.0 else "dislike"
        repository.add_feedback(FeedbackIn(request_id=f"seed-{n}", item_id=row.item_id, label=label,
                                           context_ids=row.context_ids, model_version="seed"))
    repository.engine.dispose()


def _finetune_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "studio.finetune_job" in cmdline and marker in cmdline:
                pids.append(int(entry.name))
    return pids


def test_sigkill_during_a_finetune_keeps_the_active_model_and_serves_no_partial_checkpoint(tmp_path: Path) -> None:
    args = _app_args(tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    db = data / "recsys.sqlite3"
    _seed_labels(f"sqlite:///{db}")
    proc, url = start_app(args, tmp_path / "app.log", timeout=120)
    try:
        client = Client(url, verbose=False)  # open mode: the local user is the admin
        serving = client.predict(api_name="/finetune_status")["serving"]
        assert client.predict("", api_name="/finetune")["state"] == "running"
        deadline = time.monotonic() + 60
        while not _finetune_pids(str(data)):
            assert time.monotonic() < deadline, "the fine-tune job never started"
            time.sleep(0.05)
        time.sleep(1.0)  # the job is importing, reading labels or training now
        assert not list((data / "jobs").glob("*/result.json")), "the job finished before the kill: not a mid-run test"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop_app(proc)
    deadline = time.monotonic() + 15  # the orphaned job notices its app is gone and stops (it polls every 1 s)
    while _finetune_pids(str(data)):
        assert time.monotonic() < deadline, "the fine-tune kept running after its app was killed"
        time.sleep(0.2)
    assert _integrity(db) == "ok"
    assert not [p for p in (data / "models").glob("candidate-*") if not p.name.endswith(".tmp")]

    proc, url = start_app(args, tmp_path / "app2.log", timeout=120)
    try:
        client = Client(url, verbose=False)
        status = client.predict(api_name="/finetune_status")
        assert status["serving"] == serving and status["state"] == "idle"
        models = client.predict(api_name="/models")
        assert [(m["version"], m["status"]) for m in models] == [(serving, "active")]
        assert len(client.predict(["chess"], 3, api_name="/recommend")) == 3
    finally:
        stop_app(proc)


@pytest.mark.parametrize("fault", ["read-only", "full"])
def test_read_only_or_full_database_gives_a_clear_error_and_recommendations_keep_working(
        tiny_service, tmp_path: Path, fault: str) -> None:
    db = tmp_path / "db.sqlite3"
    engine = make_engine(f"sqlite:///{db}")
    init_db(engine)
    with engine.connect() as con:
        pages = con.exec_driver_sql("PRAGMA page_count").scalar()
    engine.dispose()
    repository = Repository(engine, max_retries=0)
    handlers = Handlers(tiny_service, repository)
    if fault == "read-only":  # what SQLite answers for a file it may not write
        pragma, message = "PRAGMA query_only=ON", "the database is read-only or cannot be opened for writing"
    else:  # SQLITE_FULL, exactly what a full disk gives: the file may not grow past a few more pages
        pragma, message = f"PRAGMA max_page_count={pages + 4}", "the database disk is full"

    @event.listens_for(engine, "connect")
    def _broken_disk(dbapi_connection, _record) -> None:
        dbapi_connection.execute(pragma)

    stored = 0
    if fault == "full":  # fill the file until the disk is "full"
        with pytest.raises(gr.Error, match=message):
            while True:
                handlers.api_feedback(["chess"], "checkers", "like", f"f{stored}", None)
                stored += 1
        assert stored > 0
    long_id = "r" * 100  # bigger than any filler row: it cannot squeeze into a page's leftover bytes
    with pytest.raises(gr.Error, match=f"Nothing was saved: {message}. Recommendations still work"):
        handlers.api_feedback(["chess", "checkers", "space", "racer"], "cards", "like", long_id, None)
    recs = handlers.api_recommend(["chess"], 3)  # the impression log fails too, and is only logged
    assert len(recs) == 3
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*) FROM feedback").fetchone()[0] == stored
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_a_corrupt_content_cache_file_is_recomputed(tmp_path: Path) -> None:
    path = tmp_path / "tokens-abc.pt"
    calls = []

    def compute():
        calls.append(1)
        return torch.arange(4)

    assert torch.equal(content._cached(path, compute), torch.arange(4))
    path.write_bytes(path.read_bytes()[:20])  # a torn write from before atomic renames, or disk damage
    assert torch.equal(content._cached(path, compute), torch.arange(4))
    assert len(calls) == 2 and torch.equal(torch.load(path, weights_only=True), torch.arange(4))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_checkpoint_interrupted_while_writing_never_appears(tiny_service, tmp_path: Path, monkeypatch) -> None:
    from recsys_core.model import checkpoint
    from recsys_core.errors import RecsysError
    from recsys_core.model.checkpoint import save_checkpoint
    from recsys_core.training.config import TrainConfig
    from tests.recsys_core.serving.test_finetuned import _train

    _, trained = _train(tiny_service, tmp_path, TrainConfig(epochs=1, batch_users=8))

    def crash(*a, **k):  # the last file written before the rename
        raise OSError("No space left on device")

    monkeypatch.setattr(checkpoint, "plot_history", crash)
    out = tmp_path / "models" / "candidate"
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(trained, out, metrics={}, fingerprint_info={}, encoders={})
    assert not out.exists() and (tmp_path / "models" / "candidate.tmp").is_dir()  # only the temporary folder
    before = tiny_service.model_version
    with pytest.raises(RecsysError):
        tiny_service.load_model(out)
    assert tiny_service.model_version == before
