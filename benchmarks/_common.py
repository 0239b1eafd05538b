"""Shared helpers for the benchmark scripts: machine facts, JSON output, and running ``app.py``.

Import this module *after* setting ``HF_HUB_OFFLINE`` (each script does it on its first lines).
Nothing here imports torch or gradio at import time except :func:`machine_facts`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

log = logging.getLogger("benchmarks")

DEFAULT_THREADS = 2
_LOAD_AT_START: tuple[float, float, float] | None = None
READY_POLL_S = 0.1
READY_TIMEOUT_S = 600.0


# -- CLI / output -----------------------------------------------------------------------------------
def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help="torch.set_num_threads in this process; also OMP_NUM_THREADS/MKL_NUM_THREADS of a started app")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where encoders run (passed to app.py as --device)")
    p.add_argument("--json", metavar="OUT", type=Path, default=None,
                   help="also write the result JSON to this file (it is always printed to stdout)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


class DocHelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The script's docstring as written, and every option's default."""


def doc_parser(prog: str, doc: str | None, epilog_from: str) -> argparse.ArgumentParser:
    """A parser described by the docstring's first paragraph, with the docstring from ``epilog_from`` on as epilog."""
    return argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0] if doc else None,
                                   epilog=doc[doc.index(epilog_from):] if doc and epilog_from in doc else None,
                                   formatter_class=DocHelpFormatter)


def add_app_args(p: argparse.ArgumentParser) -> None:
    """The app's catalog and encoder flags (declared once, in recsys_core.cli_args), passed on to app.py."""
    from recsys_core.cli_args import add_catalog_arguments

    add_catalog_arguments(p, only=("catalog", "data_root", "text_encoder", "image_encoder"), helps={
        "catalog": "passed to app.py --catalog", "data_root": "passed to app.py --data-root (e.g. for movielens-100k)",
        "text_encoder": "passed to app.py --text-encoder (tiny-random for a smoke test)",
        "image_encoder": "passed to app.py --image-encoder (tiny-random for a smoke test)"})


def app_argv(args: argparse.Namespace, data_dir: Path) -> list[str]:
    """The catalog/encoder/device flags of ``args`` and ``--data-dir`` as app.py's argv."""
    from recsys_core.cli_args import CatalogArgs

    return CatalogArgs.from_namespace(argparse.Namespace(**{**vars(args), "data_dir": data_dir})).to_argv()


def setup(args: argparse.Namespace) -> None:
    """Logging to stderr, torch threads; call once after parsing."""
    global _LOAD_AT_START
    _LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else None
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore"):  # one INFO line per request would also cost time inside timed calls
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    if _LOAD_AT_START and _LOAD_AT_START[0] > 0.5 * (os.cpu_count() or 1):
        log.warning("load average at start is %.2f on %s CPUs: the machine is not quiet, timings will be noisy",
                    _LOAD_AT_START[0], os.cpu_count())
    if args.threads < 1:
        raise SystemExit("--threads must be >= 1")
    import torch

    torch.set_num_threads(args.threads)


def machine_facts(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from recsys_core.device import resolve_device

    try:
        device = str(resolve_device(args.device))
    except Exception as exc:  # e.g. --device cuda without a GPU: report rather than crash here
        device = f"unavailable ({exc})"
    facts: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "load_avg_at_start": [round(x, 2) for x in _LOAD_AT_START] if _LOAD_AT_START else None,
        "torch_version": torch.__version__,
        "device": device,
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    from importlib import metadata

    for name in ("gradio", "gradio_client", "transformers", "timm", "faiss-cpu"):
        try:  # the installed version, without importing the package (gradio alone takes seconds)
            facts[f"{name.replace('-', '_')}_version"] = metadata.version(name)
        except metadata.PackageNotFoundError:
            facts[f"{name.replace('-', '_')}_version"] = None
    facts["git_commit"] = _git_commit()
    return facts


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (head + ("-dirty" if dirty else "")) or None
    except Exception:
        return None


def emit(result: dict[str, Any], out: Path | None) -> None:
    """The one print of a script: the result JSON on stdout (and into ``out``)."""
    text = json.dumps(result, indent=2, sort_keys=False, default=str)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")
        log.info("wrote %s", out)
    print(text, flush=True)


# -- statistics -------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100] (numpy's default method)."""
    if not values:
        return math.nan
    data = sorted(values)
    pos = (len(data) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000.0 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p95_ms": round(percentile(ms, 95), 3),
        "mean_ms": round(sum(ms) / len(ms), 3) if ms else math.nan,
        "min_ms": round(min(ms), 3) if ms else math.nan,
        "max_ms": round(max(ms), 3) if ms else math.nan,
    }


# -- running the app --------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def app_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "HF_HUB_OFFLINE": "1",
        "GRADIO_ANALYTICS_ENABLED": "False",  # no network calls that could stall or skew start-up
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def app_command(args: argparse.Namespace, data_dir: Path, port: int) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "app.py"), "--port", str(port), "--host", "127.0.0.1",
            *app_argv(args, data_dir)]


class AppProcess:
    """``python app.py`` as a subprocess with its output in a log file; always stop it (context manager)."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str]) -> None:
        self.cmd = cmd
        self.log_path = log_path
        self.env = env
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self.started_at = math.nan
        self.first_page_s = math.nan  # set by wait_ready

    def start(self) -> "AppProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "wb")
        log.info("starting: %s (log: %s)", " ".join(self.cmd), self.log_path)
        self.started_at = time.perf_counter()
        # Own session: stopping it also stops anything it started, and nothing else.
        self.proc = subprocess.Popen(self.cmd, cwd=REPO_ROOT, env=self.env, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        return self

    def wait_ready(self, url: str, timeout_s: float = READY_TIMEOUT_S, poll_s: float = READY_POLL_S) -> float:
        """Seconds from start until the app serves requests: ``GET url`` answers 200 (also kept, as
        :attr:`first_page_s`) and the app has logged that it is ready. The page comes first (it shows the
        catalog's preparation), so the two differ by the preparation. Raises if the app exits or time runs out."""
        from app import READY_MESSAGE

        assert self.proc is not None
        deadline = self.started_at + timeout_s
        self.first_page_s = math.nan
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"app exited with code {self.proc.returncode} before it was ready at {url}")
            if math.isnan(self.first_page_s):
                try:
                    with urllib.request.urlopen(url, timeout=2) as resp:
                        if resp.status == 200:
                            self.first_page_s = time.perf_counter() - self.started_at
                except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                    pass
            if not math.isnan(self.first_page_s) and READY_MESSAGE in self.log_path.read_text(errors="replace"):
                return time.perf_counter() - self.started_at
            if time.perf_counter() > deadline:
                raise TimeoutError(f"{url} was not ready within {timeout_s:.0f}s")
            time.sleep(poll_s)

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the group id is our child's pid (start_new_session)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                log.warning("app did not stop on SIGTERM; killing it")
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=15)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])

    def __enter__(self) -> "AppProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def parse_prepare_seconds(log_text: str | None) -> float | None:
    """The app's own 'service ready ... N.Ns' figure (feature extraction / cache read) in its log text, if logged.

    ``log_text`` None (the log could not be read) gives None.
    """
    import re

    if log_text is None:
        return None
    found = re.findall(r"service ready: .*?, ([0-9.]+)s", log_text)
    return float(found[-1]) if found else None


def connect(url: str, auth: tuple[str, str] | None = None):
    """A ``gradio_client.Client`` for ``url``, logged in as ``auth`` (user, password) unless None."""
    from gradio_client import Client

    # gradio_client makes a new httpx client for every request, and with verification on each one loads the CA
    # bundle (about 27 ms of CPU, twice per call): ten times the client's other work, which on a small machine
    # takes CPU from the app under test. Plain http has no TLS to verify; https targets keep verification.
    return Client(url, auth=auth, verbose=False, ssl_verify=not url.startswith("http://"))


def write_users_csv(path: Path, roles: dict[str, str]) -> dict[str, str]:
    """An ``--auth-file`` (username,password,role) with fresh random plain passwords; returns name -> password.

    Plain passwords are fine for throw-away benchmark accounts; the file is readable by its owner only.
    """
    import csv
    import secrets

    passwords = {name: secrets.token_urlsafe(12) for name in roles}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["username", "password", "role"])
        for name, role in roles.items():
            writer.writerow([name, passwords[name], role])
    os.chmod(path, 0o600)
    return passwords
