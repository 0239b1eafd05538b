"""Start ``python app.py`` as a user would, wait until it serves, and stop it afterwards (end-to-end tests)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from app import READY_MESSAGE
from tests.conftest import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(args: Sequence[str], log_path: Path, timeout: float = 180) -> tuple[subprocess.Popen, str]:
    """Start ``python app.py args --port <free>`` and wait until it serves; the caller stops the process."""
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "app.py", *args, "--port", str(port)], cwd=REPO_ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(proc, url, log_path, timeout)
    return proc, url


def wait_until_serving(proc: subprocess.Popen, url: str, log_path: Path, timeout_s: float = 180) -> int:
    """Poll ``url + "/"`` until the app serves its first page, then wait until it logs that it is ready
    (the page comes first and shows the catalog's preparation); return the first page's HTTP status.

    Fails the test with the app's log if the process exits first, or stops it and fails after ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    status = None
    while True:
        if proc.poll() is not None:
            pytest.fail(f"app exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        if status is None:
            try:
                with urllib.request.urlopen(url + "/", timeout=2) as response:
                    status = response.status
            except OSError:
                pass
        if status is not None and READY_MESSAGE in log_path.read_text(errors="replace"):
            return status
        if time.monotonic() > deadline:
            stop_app(proc)
            pytest.fail(f"app did not serve within {timeout_s:.0f} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.25)


def stop_app(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def running(args: Sequence[str], log_path: Path, timeout: float = 180) -> Iterator[str]:
    """Yield the URL of an app started with ``args`` (``--port`` is added); fail with its log if it never serves."""
    proc, url = start_app(args, log_path, timeout)
    try:
        yield url
    finally:
        stop_app(proc)
