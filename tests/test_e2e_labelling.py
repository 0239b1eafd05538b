"""End to end: a labelling session with accounts, a fine-tune through the app, promotion and rollback.

The app runs as a user would start it (``python app.py --auth-file ...``) on the tiny test catalog
with tiny random encoders (fast); everything goes through the API with gradio_client, logged in.
"""

from __future__ import annotations

import time
import uuid

import pytest
from gradio_client import Client

from tests.app_process import running
from tests.conftest import write_tiny_catalog

USERS = {"ann1": "pw-1", "ann2": "pw-2", "ann3": "pw-3", "boss": "pw-admin"}


@pytest.fixture(scope="module")
def labelling_app(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelling")
    catalog = write_tiny_catalog(root / "catalog")
    users = root / "users.csv"
    users.write_text("username,password,role\n" + "".join(
        f"{u},{p},{'admin' if u == 'boss' else 'annotator'}\n" for u, p in USERS.items()))
    args = ["--catalog", str(catalog), "--text-encoder", "tiny-random", "--image-encoder", "tiny-random",
            "--data-dir", str(root / "data"), "--auth-file", str(users), "--device", "cpu"]
    log_path = root / "app.log"
    with running(args, log_path, timeout=120) as url:
        yield url, log_path


def _client(url: str, user: str) -> Client:
    return Client(url, auth=(user, USERS[user]), verbose=False)


def test_session_finetune_promote_and_rollback(labelling_app) -> None:
    url, log_path = labelling_app
    with pytest.raises(Exception):  # no account, no API
        Client(url, verbose=False).predict(["chess"], 3, api_name="/recommend")
    boss = _client(url, "boss")
    annotators = {u: _client(url, u) for u in ("ann1", "ann2", "ann3")}
    with pytest.raises(Exception, match="admin role"):
        annotators["ann1"].predict("s", api_name="/campaign")
    with pytest.raises(Exception, match="admin role"):
        annotators["ann1"].predict("", api_name="/finetune")

    added = boss.predict("session-1", 12, 2, 1, 1, 3, "graded", api_name="/campaign")["tasks"]
    assert added == 48
    zeroshot = boss.predict(api_name="/finetune_status")["serving"]

    answers = 0
    pending = dict(annotators)
    while pending:  # three people label side by side; board games are relevant to everyone here
        for name, client in list(pending.items()):
            task = client.predict("session-1", api_name="/label_next")
            if not task:
                del pending[name]
                continue
            # Attentive annotators: an item from the profile itself is relevant (the hidden controls).
            relevant = task["item_id"] in task["context_ids"] or task["item_id"] in ("chess", "checkers", "puzzle",
                                                                                     "noimage")
            grade = "3" if relevant else "0"
            result = client.predict(task["task_id"], grade, uuid.uuid4().hex, api_name="/label_answer")
            assert result["stored"] is True
            answers += 1
    assert answers == 48 * 3  # every task answered by exactly `overlap` annotators

    before_recs = annotators["ann1"].predict(["space"], 6, api_name="/recommend")
    before = [r["item_id"] for r in before_recs]
    assert boss.predict("", api_name="/finetune")["state"] == "running"
    with pytest.raises(Exception, match="already running"):
        boss.predict("", api_name="/finetune")
    deadline = time.monotonic() + 240
    while (status := boss.predict(api_name="/finetune_status"))["state"] == "running":
        assert time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(1)
    assert status["state"] == "succeeded", status["error"]
    models = {m["version"]: m for m in boss.predict(api_name="/models")}
    assert status["version"] in models and zeroshot in models

    if status["gate_passed"]:  # promoted by the gate already
        assert status["serving"] == status["version"] and models[status["version"]]["status"] == "active"
    else:  # an admin overrides the gate
        assert models[status["version"]]["status"] == "rejected"
        assert boss.predict(status["version"], True, api_name="/promote")["serving"] == status["version"]
    after = annotators["ann1"].predict(["space"], 6, api_name="/recommend")
    # The candidate serves now. Its list may equal the zero-shot one: when the labels do not justify leaving the
    # base's settings, the hybrid fine-tune serves the zero-shot scores exactly (so a few labels cannot hurt).
    assert len(after) == 6 and "space" not in [r["item_id"] for r in after]
    assert boss.predict(api_name="/finetune_status")["serving"] == status["version"]
    assert boss.predict(zeroshot, False, api_name="/promote")["serving"] == zeroshot  # one-click rollback
    assert [r["item_id"] for r in annotators["ann1"].predict(["space"], 6, api_name="/recommend")] == before
    files = boss.predict(["csv", "jsonl"], True, api_name="/export")["files"]
    assert len(files) == 2
