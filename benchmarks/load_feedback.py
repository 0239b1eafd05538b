"""Crowd-labelling load: many annotators send labels through ``/feedback`` at once while others call
``/recommend``; afterwards the database must hold every label exactly once.

    .venv/bin/python benchmarks/load_feedback.py --clients 50 --per-client 40 --json load.json
    .venv/bin/python benchmarks/load_feedback.py --clients 6 --per-client 5 \\
        --text-encoder tiny-random --image-encoder tiny-random               # a quick check
    DATABASE_URL=postgresql+psycopg://user:pw@host/db .venv/bin/python benchmarks/load_feedback.py ...
    .venv/bin/python benchmarks/load_feedback.py --url http://127.0.0.1:7860/ --auth-file users.csv \\
        --database-url sqlite:///data/recsys.sqlite3                         # a running app

Protocol
--------
1. Unless ``--url`` is given, ``python app.py`` is started on a free port (``--data-dir`` or a fresh
   temp dir), with env ``DATABASE_URL`` set when a URL is given (flag or env). Password mode
   (default): a generated ``users.csv`` in the work dir holds one annotator account per client
   (``load-NNN`` for feedback, ``rec-NNN`` for ``/recommend``) and the app keeps its default feedback
   rate limit, as in a real crowd session. ``--open``: no accounts, and ``--feedback-rate-limit 0`` is
   passed (the single-user local mode: the run measures storage alone, without the limiter).
2. A plan is drawn (``--seed``): per feedback client ``--per-client`` calls, each with a request id
   ``<run token>-<client>-<call>``, a random profile of liked items, an item and like/dislike. No two
   planned calls share (item, profile, label), so content duplicates can be told apart from plan
   repeats. ``--resend-fraction`` of each client's calls are sent a second time with the same request
   id, alternately *concurrently* (both copies in flight at once: the UNIQUE-constraint race) and
   *later* (three calls afterwards: the "already stored" lookup), as a client retrying after a
   timeout would.
3. All ``--clients`` feedback clients and ``--recommend-clients`` ``/recommend`` clients (k=10,
   random profiles) log in with ``gradio_client``; the feedback clients then start together, each
   sending its calls one after another; the recommend clients loop until the feedback clients finish.
4. Rows are counted with SQLAlchemy in the app's database (the SQLite file in the data dir, or the
   URL), restricted to this run's token so earlier runs in the same database do not count.

Counting
--------
``sent``: distinct request ids sent; ``stored``: how many of them have a row. ``duplicates_stored``
is ``duplicate_request_ids`` (rows minus distinct request ids; impossible while the UNIQUE constraint
on ``feedback.request_id`` exists, e.g. on a database created without it) plus ``duplicate_contents``:
extra rows with the same (annotator, item, profile, label) under different request ids. The plan never
repeats that content, so such a row means the server stored one call twice under an id it made up or
rewrote. ``unexpected_rows`` (rows with this run's token that were never sent) and ``misattributed``
(rows whose annotator is not the account that sent the request id) should also be 0. ``errors``: calls
(feedback or recommend) that raised, e.g. a ``gr.Error`` or a timeout, or returned something other
than the endpoint's result; ``error_samples`` shows the first distinct messages. Latencies are per
call on the client side, from the call to its result (queue wait included); ``p50_ms``/``p95_ms``
cover every feedback call that succeeded, resends included (failed calls count in ``errors`` only).
``cpu_during_load`` (app and benchmark process, via psutil) shows which side a small machine is short of.

Exit code: 0 when ``stored == sent`` with no duplicates, unexpected or misattributed rows and no
errors; 1 when that target is missed (the JSON is still printed); 2 when the benchmark could not run.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import random  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Sequence  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    READY_TIMEOUT_S, AppProcess, add_app_args, add_common_args, app_command, app_env, connect, doc_parser, emit,
    free_port, machine_facts, percentile, setup, summary_ms, write_users_csv,
)

log = logging.getLogger("benchmarks.load_feedback")

RATE_LIMIT_FLAG = "--feedback-rate-limit"
RESEND_GAP = 3  # a "later" resend follows this many other calls of the same client
CONNECT_WORKERS = 8  # parallel logins while setting up; the load itself starts only when all are in
MAX_ERROR_SAMPLES = 5
FEEDBACK_PREFIX, RECOMMEND_PREFIX = "load", "rec"


@dataclass(frozen=True)
class LoadConfig:
    clients: int = 50  # concurrent feedback clients, one account each
    per_client: int = 40  # distinct labels (request ids) per feedback client
    recommend_clients: int = 5  # clients calling /recommend while the labels come in
    resend_fraction: float = 0.1  # share of each client's labels sent twice with the same request id
    seed: int = 0  # the plan: profiles, items, labels, which calls are resent
    profile_size: int = 3  # liked items per call (the /feedback and /recommend context)
    k: int = 10  # /recommend list length

    def __post_init__(self) -> None:
        if self.clients < 1 or self.per_client < 1:
            raise ValueError(f"--clients is {self.clients} and --per-client {self.per_client}; both must be >= 1")
        if self.recommend_clients < 0:
            raise ValueError(f"--recommend-clients is {self.recommend_clients}; use 0 or more")
        if not 0.0 <= self.resend_fraction <= 1.0:
            raise ValueError(f"--resend-fraction is {self.resend_fraction}; allowed 0..1")
        if self.profile_size < 1 or self.k < 1:
            raise ValueError(f"profile size {self.profile_size} and k {self.k} must be >= 1")

    @property
    def resends_per_client(self) -> int:
        # Half up, not Python's round-half-even: 5 calls at 0.1 resend one call, not none.
        return int(self.per_client * self.resend_fraction + 0.5)


@dataclass(frozen=True)
class Call:
    """One planned /feedback call; a resend repeats the same object."""

    request_id: str
    liked: tuple[str, ...]
    item_id: str
    label: str


@dataclass(frozen=True)
class ClientPlan:
    username: str | None  # the account that sends these calls (None: --open)
    calls: tuple[Call, ...]  # distinct request ids
    steps: tuple[tuple[Call, ...], ...]  # in order; a step of two is a concurrent resend


@dataclass
class Tally:
    """What the clients saw; shared by the worker threads, changed under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    feedback_s: list[float] = field(default_factory=list)
    recommend_s: list[float] = field(default_factory=list)
    feedback_errors: int = 0
    recommend_errors: int = 0
    acknowledged: Counter = field(default_factory=Counter)  # request id -> responses with stored=True
    error_samples: list[str] = field(default_factory=list)

    def error(self, kind: str, message: str) -> None:
        with self.lock:
            if kind == "feedback":
                self.feedback_errors += 1
            else:
                self.recommend_errors += 1
            if len(self.error_samples) < MAX_ERROR_SAMPLES and message not in self.error_samples:
                self.error_samples.append(message)


@dataclass(frozen=True)
class RowCounts:
    stored: int
    rows: int
    duplicate_request_ids: int
    duplicate_contents: int
    unexpected_rows: int
    misattributed: int

    @property
    def duplicates_stored(self) -> int:
        return self.duplicate_request_ids + self.duplicate_contents


# -- CLI ----------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    doc = __doc__ or ""
    p = doc_parser("benchmarks/load_feedback.py", doc, "Protocol")
    defaults = LoadConfig()
    p.add_argument("--clients", type=int, default=defaults.clients, help="concurrent /feedback clients")
    p.add_argument("--per-client", type=int, default=defaults.per_client,
                   help="distinct labels (request ids) each feedback client sends")
    p.add_argument("--recommend-clients", type=int, default=defaults.recommend_clients,
                   help="clients calling /recommend in a loop while the labels come in")
    p.add_argument("--resend-fraction", type=float, default=defaults.resend_fraction,
                   help="share of each client's labels sent a second time with the same request id")
    p.add_argument("--seed", type=int, default=defaults.seed, help="the plan: profiles, items, labels, resends")
    p.add_argument("--open", action="store_true",
                   help="no accounts (the app without --auth-file); passes --feedback-rate-limit 0 to a started app")
    p.add_argument("--url", default=None,
                   help="target this running app instead of starting one; needs --database-url (or DATABASE_URL) "
                        "to count rows, --auth-file unless --open, and --catalog/--data-root naming its catalog")
    p.add_argument("--auth-file", type=Path, default=None,
                   help="with --url: the target app's users.csv (plain passwords); one annotator account per client "
                        "is used. Without --url a users.csv is generated in the data dir")
    # Not default=os.environ[...]: --help prints defaults, and the URL may hold a password.
    p.add_argument("--database-url", default=None,
                   help="SQLAlchemy URL of the app's database (default: env DATABASE_URL, else the SQLite file in "
                        "--data-dir); given to a started app as env DATABASE_URL")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the started app's data dir (database, features, users.csv); default: a fresh temp dir, "
                        "removed afterwards unless --keep")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for the app's first page")
    add_app_args(p)
    add_common_args(p)
    return p


def load_config(args: argparse.Namespace) -> LoadConfig:
    return LoadConfig(clients=args.clients, per_client=args.per_client, recommend_clients=args.recommend_clients,
                      resend_fraction=args.resend_fraction, seed=args.seed)


# -- the plan -----------------------------------------------------------------------------------------
def build_plan(config: LoadConfig, item_ids: Sequence[str], token: str, usernames: Sequence[str | None]
               ) -> list[ClientPlan]:
    """Each client's calls and the order they are sent in; no two calls share (item, profile, label)."""
    if len(item_ids) < config.profile_size + 1:
        raise ValueError(f"the catalog has {len(item_ids)} items; the plan needs at least {config.profile_size + 1}")
    rng = random.Random(config.seed)
    ids = sorted(item_ids)
    used: set[tuple] = set()
    plans = []
    for c, username in enumerate(usernames):
        calls = []
        for j in range(config.per_client):
            while True:  # a repeat is rare (189 items choose 3); draw again rather than skew the plan
                picked = rng.sample(ids, config.profile_size + 1)
                call = Call(f"{token}-{c:03d}-{j:04d}", tuple(sorted(picked[1:])), picked[0],
                            rng.choice(("like", "dislike")))
                key = (call.item_id, call.liked, call.label)
                if key not in used:
                    used.add(key)
                    break
            calls.append(call)
        resent = sorted(rng.sample(range(config.per_client), config.resends_per_client))
        modes = {j: ("concurrent" if n % 2 == 0 else "later") for n, j in enumerate(resent)}
        plans.append(ClientPlan(username, tuple(calls), _steps(calls, modes)))
    return plans


def _steps(calls: Sequence[Call], modes: dict[int, str]) -> tuple[tuple[Call, ...], ...]:
    steps: list[tuple[Call, ...]] = []
    due: list[tuple[int, Call]] = []  # (send once this many steps exist, call), in order
    for j, call in enumerate(calls):
        steps.append((call, call) if modes.get(j) == "concurrent" else (call,))
        if modes.get(j) == "later":
            due.append((len(steps) + RESEND_GAP, call))
        while due and due[0][0] <= len(steps):
            steps.append((due.pop(0)[1],))
    steps.extend((call,) for _, call in due)
    return tuple(steps)


# -- the clients --------------------------------------------------------------------------------------
def connect_all(url: str, accounts: Sequence[tuple[str, str] | None]) -> list:
    with ThreadPoolExecutor(max_workers=CONNECT_WORKERS) as pool:
        return list(pool.map(lambda auth: connect(url, auth), accounts))


def send_feedback(client, call: Call, tally: Tally) -> None:
    t0 = time.perf_counter()
    try:
        result = client.predict(list(call.liked), call.item_id, call.label, call.request_id, api_name="/feedback")
    except Exception as exc:  # the error is the measurement: count it, keep the other calls going
        tally.error("feedback", f"/feedback: {type(exc).__name__}: {str(exc)[:300]}")
        return
    seconds = time.perf_counter() - t0
    if not isinstance(result, dict) or not isinstance(result.get("stored"), bool):
        tally.error("feedback", f"/feedback returned {str(result)[:300]!r}, expected {{'stored': bool, ...}}")
        return
    with tally.lock:
        tally.feedback_s.append(seconds)
        if result["stored"]:
            tally.acknowledged[call.request_id] += 1


def feedback_worker(client, plan: ClientPlan, tally: Tally, start: threading.Barrier, progress) -> None:
    start.wait()
    for step in plan.steps:
        if len(step) == 2:  # a concurrent resend: the copy goes from a second thread of the same client
            twin = threading.Thread(target=send_feedback, args=(client, step[1], tally), daemon=True)
            twin.start()
            send_feedback(client, step[0], tally)
            twin.join()
        else:
            send_feedback(client, step[0], tally)
        progress(len(step))


def recommend_worker(client, item_ids: Sequence[str], config: LoadConfig, seed: int, tally: Tally,
                     start: threading.Barrier, stop: threading.Event) -> None:
    rng = random.Random(seed)
    ids = sorted(item_ids)
    start.wait()
    while not stop.is_set():
        liked = rng.sample(ids, config.profile_size)
        t0 = time.perf_counter()
        try:
            result = client.predict(liked, config.k, api_name="/recommend")
        except Exception as exc:
            tally.error("recommend", f"/recommend: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        seconds = time.perf_counter() - t0
        if not isinstance(result, list) or not result:
            tally.error("recommend", f"/recommend returned {str(result)[:300]!r}, expected a non-empty list")
            continue
        with tally.lock:
            tally.recommend_s.append(seconds)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None: unknown, e.g. the app runs elsewhere)."""
    if pid is None:
        return None
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
    except Exception:  # psutil missing or the process gone: the number is a diagnostic, not the result
        return None
    return times.user + times.system


def run_load(url: str, plans: Sequence[ClientPlan], passwords: dict[str, str], rec_accounts: Sequence[str | None],
             item_ids: Sequence[str], config: LoadConfig, app_pid: int | None = None
             ) -> tuple[Tally, float, float, dict[str, float | None]]:
    """Log every client in, start them together; returns the tally, connect and load seconds, and the CPU
    seconds the app and this process used during the load (who is the bottleneck on a small machine)."""
    from tqdm.auto import tqdm

    def auth(name: str | None) -> tuple[str, str] | None:
        return None if name is None else (name, passwords[name])

    t0 = time.perf_counter()
    feedback_clients = connect_all(url, [auth(p.username) for p in plans])
    rec_clients = connect_all(url, [auth(name) for name in rec_accounts])
    connect_s = time.perf_counter() - t0
    log.info("%d feedback + %d recommend clients logged in after %.1f s", len(feedback_clients), len(rec_clients),
             connect_s)

    tally = Tally()
    stop = threading.Event()
    start = threading.Barrier(len(plans) + len(rec_clients) + 1)
    bar = tqdm(total=sum(len(s) for p in plans for s in p.steps), desc="feedback calls", unit="call",
               disable=not log.isEnabledFor(logging.INFO))
    bar_lock = threading.Lock()

    def progress(n: int) -> None:
        with bar_lock:
            bar.update(n)

    threads = [threading.Thread(target=feedback_worker, args=(client, plan, tally, start, progress), daemon=True)
               for client, plan in zip(feedback_clients, plans, strict=True)]
    rec_threads = [threading.Thread(target=recommend_worker,
                                    args=(client, item_ids, config, config.seed + 1000 + n, tally, start, stop),
                                    daemon=True)
                   for n, client in enumerate(rec_clients)]
    for thread in (*threads, *rec_threads):
        thread.start()
    start.wait()
    t1 = time.perf_counter()
    cpu0 = (cpu_seconds(app_pid), cpu_seconds(os.getpid()))
    for thread in threads:
        thread.join()
    load_s = time.perf_counter() - t1
    cpu1 = (cpu_seconds(app_pid), cpu_seconds(os.getpid()))
    cpu = {name: (round(b - a, 1) if a is not None and b is not None else None)
           for name, a, b in zip(("app_s", "benchmark_s"), cpu0, cpu1, strict=True)}
    stop.set()
    for thread in rec_threads:
        thread.join()
    bar.close()
    for client in (*feedback_clients, *rec_clients):
        client.close()
    return tally, connect_s, load_s, cpu


# -- counting -----------------------------------------------------------------------------------------
def count_rows(database_url: str, token: str, sent: dict[str, str | None]) -> RowCounts:
    """Rows of this run (request ids starting with ``token``) against ``sent`` (request id -> account)."""
    from sqlmodel import Session, select

    from storage import Annotator, Feedback, make_engine

    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            stmt = (select(Feedback.request_id, Annotator.username, Feedback.item_id, Feedback.context_ids,
                           Feedback.label)
                    .join(Annotator, Feedback.annotator_id == Annotator.id, isouter=True)
                    .where(Feedback.request_id.startswith(f"{token}-", autoescape=True)))
            rows = list(session.exec(stmt).all())
    finally:
        engine.dispose()
    by_id = {row[0]: row for row in rows}  # one row per request id, so a doubled id is not counted twice below
    contents = Counter((user, item, tuple(context or ()), label) for _, user, item, context, label in by_id.values())
    return RowCounts(
        stored=len(by_id.keys() & sent.keys()),
        rows=len(rows),
        duplicate_request_ids=len(rows) - len(by_id),
        duplicate_contents=sum(n - 1 for n in contents.values()),
        unexpected_rows=len(by_id.keys() - sent.keys()),
        misattributed=sum(1 for rid, row in by_id.items() if rid in sent and row[1] != sent[rid]),
    )


# -- accounts and the app -----------------------------------------------------------------------------
def read_accounts(path: Path) -> dict[str, str]:
    """Annotator name -> plain password from the target app's users.csv (``--url`` in password mode), read
    with the app's own reader."""
    from storage.auth import load_users

    accounts = {name: user.secret for name, user in load_users(path).items() if user.role == "annotator"}
    hashed = [name for name, pw in accounts.items() if pw.startswith("scrypt$")]
    if hashed:
        raise ValueError(f"--auth-file {path}: {len(hashed)} annotator password(s) are hashed; the benchmark needs "
                         "plain passwords to log in")
    return accounts


def account_names(config: LoadConfig, open_mode: bool, available: Sequence[str] | None = None
                  ) -> tuple[list[str | None], list[str | None]]:
    if open_mode:
        return [None] * config.clients, [None] * config.recommend_clients
    if available is None:
        return ([f"{FEEDBACK_PREFIX}-{i:03d}" for i in range(config.clients)],
                [f"{RECOMMEND_PREFIX}-{i:03d}" for i in range(config.recommend_clients)])
    need = config.clients + config.recommend_clients
    if len(available) < need:
        raise ValueError(f"--auth-file has {len(available)} annotator accounts; --clients {config.clients} + "
                         f"--recommend-clients {config.recommend_clients} need {need}")
    names = sorted(available)
    return list(names[:config.clients]), list(names[config.clients:need])


def app_rate_limit(app_args: Sequence[str]) -> int:
    """The started app's labels per minute per user, as app.py's own parser reads ``app_args`` (its command line
    after ``app.py``) and env FEEDBACK_RATE_LIMIT."""
    from app import build_parser as app_parser  # light: app.py imports nothing heavy at module level

    return app_parser().parse_args(list(app_args)).feedback_rate_limit


def start_app(args: argparse.Namespace, config: LoadConfig, data_dir: Path, auth_file: Path | None
              ) -> tuple[AppProcess, str, dict]:
    port = free_port()
    cmd = app_command(args, data_dir, port)
    env = app_env(args.threads)
    if args.database_url:  # by env, not argv: the command line is logged and visible in ps, a password is not
        env["DATABASE_URL"] = args.database_url
    if auth_file is not None:
        cmd += ["--auth-file", str(auth_file)]
    if args.open:
        cmd += [RATE_LIMIT_FLAG, "0"]
        rate_limit: dict[str, Any] = {"flag_supported": True, "per_minute": 0}
    else:
        per_minute = app_rate_limit(cmd[2:])  # cmd is [python, app.py, *its arguments]
        rate_limit = {"flag_supported": True, "per_minute": per_minute}
        per_account = config.per_client + config.resends_per_client
        if per_minute and per_account > per_minute:
            log.warning("each account sends %d labels and the app allows %d per minute: expect refused labels "
                        "(errors) unless the run takes well over a minute", per_account, per_minute)
    app = AppProcess(cmd, data_dir / "app.log", env)
    return app, f"http://127.0.0.1:{port}/", rate_limit


def _ms(seconds: Sequence[float], q: float) -> float | None:
    """A percentile in ms; None (JSON null, not NaN) when there were no calls."""
    return round(percentile([x * 1000 for x in seconds], q), 1) if seconds else None


# -- main ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.database_url = args.database_url or os.environ.get("DATABASE_URL") or None
    try:
        config = load_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    if args.url and not args.database_url:
        parser.error("--url needs --database-url (or env DATABASE_URL): the rows are counted in the app's database")
    if args.url and not args.open and args.auth_file is None:
        parser.error("--url needs --auth-file (the target app's users.csv) or --open")
    if not args.url and args.auth_file is not None:
        parser.error("--auth-file is only for --url; a started app gets a generated users.csv")
    setup(args)
    temp = args.data_dir is None and not args.url
    data_dir: Path | None = None  # --url: nothing is written locally; rows are counted through --database-url
    if temp:
        data_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))
    elif not args.url:
        data_dir = args.data_dir.expanduser().resolve()
    try:
        result = run(args, config, data_dir)
    except Exception as exc:
        log.error("benchmark failed: %s: %s%s", type(exc).__name__, exc,
                  f" (work folder kept: {data_dir})" if data_dir else "")
        return 2
    result["data_dir"] = None if data_dir is None or (temp and not args.keep) else str(data_dir)
    emit(result, args.json)
    if temp and not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    if not result["passed"]:
        log.error("target missed: stored %d of %d sent, %d duplicates, %d errors, %d unexpected, %d misattributed",
                  result["stored"], result["sent"], result["duplicates_stored"], result["errors"],
                  result["unexpected_rows"], result["misattributed"])
        return 1
    return 0


def run(args: argparse.Namespace, config: LoadConfig, data_dir: Path | None) -> dict[str, Any]:
    from recsys_core.data.adapters import resolve_catalog
    from storage import default_database_url, redact_url

    item_ids = list(resolve_catalog(args.catalog, data_root=args.data_root).ids)
    token = secrets.token_hex(4)  # not seeded: a rerun on the same database must not count older rows
    if args.url:
        available = None if args.open else read_accounts(args.auth_file)
        feedback_names, rec_names = account_names(config, args.open, list(available or ()))
        passwords, auth_file = available or {}, None
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        feedback_names, rec_names = account_names(config, args.open)
        auth_file = None if args.open else data_dir / "users.csv"
        passwords = {} if auth_file is None else write_users_csv(
            auth_file, {name: "annotator" for name in (*feedback_names, *rec_names)})
    database_url = args.database_url or default_database_url(data_dir)
    plans = build_plan(config, item_ids, token, feedback_names)
    sent = {call.request_id: plan.username for plan in plans for call in plan.calls}
    log.info("run token %s: %d clients x %d labels (%d resent each), %d recommend clients, database %s",
             token, config.clients, config.per_client, config.resends_per_client, config.recommend_clients,
             redact_url(database_url))

    app, ready_s, rate_limit = None, None, {"flag_supported": None, "per_minute": "the target app's own"}
    url, facts = args.url, None
    try:
        if url is None:
            app, url, rate_limit = start_app(args, config, data_dir, auth_file)
            app.start()
            facts = machine_facts(args)  # imports gradio, timm, ... (seconds): overlap them with the app's start
            ready_s = app.wait_ready(url, timeout_s=args.timeout)
            log.info("app ready after %.1f s", ready_s)
        app_pid = app.proc.pid if app is not None and app.proc is not None else None
        tally, connect_s, load_s, cpu = run_load(url, plans, passwords, rec_names, item_ids, config, app_pid)
        counts = count_rows(database_url, token, sent)
    except BaseException:
        if app is not None:
            log.error("last lines of %s:\n%s", app.log_path, app.log_tail())
        raise
    finally:
        if app is not None:
            app.stop()

    errors = tally.feedback_errors + tally.recommend_errors
    feedback_calls = len(tally.feedback_s) + tally.feedback_errors
    passed = (counts.stored == len(sent) and counts.duplicates_stored == 0 and errors == 0
              and counts.unexpected_rows == 0 and counts.misattributed == 0)
    return {
        "benchmark": "load_feedback",
        "passed": passed,
        "sent": len(sent),
        "stored": counts.stored,
        "duplicates_stored": counts.duplicates_stored,
        "errors": errors,
        "p50_ms": _ms(tally.feedback_s, 50),
        "p95_ms": _ms(tally.feedback_s, 95),
        "recommend_p95_ms": _ms(tally.recommend_s, 95),
        "recommend_calls": len(tally.recommend_s) + tally.recommend_errors,
        "resent": config.clients * config.resends_per_client,
        "seconds": round(load_s, 2),
        "calls_per_s": round(feedback_calls / load_s, 1) if load_s > 0 else None,
        "feedback_calls": feedback_calls,
        "acknowledged": len(tally.acknowledged),
        "acknowledged_twice": sum(1 for n in tally.acknowledged.values() if n > 1),
        "rows": counts.rows,
        "duplicate_request_ids": counts.duplicate_request_ids,
        "duplicate_contents": counts.duplicate_contents,
        "unexpected_rows": counts.unexpected_rows,
        "misattributed": counts.misattributed,
        "feedback_errors": tally.feedback_errors,
        "recommend_errors": tally.recommend_errors,
        "error_samples": tally.error_samples,
        "feedback_latency": summary_ms(tally.feedback_s) if tally.feedback_s else None,
        "recommend_latency": summary_ms(tally.recommend_s) if tally.recommend_s else None,
        "mode": "open" if args.open else "password",
        "feedback_rate_limit": rate_limit,
        "clients": config.clients,
        "per_client": config.per_client,
        "recommend_clients": config.recommend_clients,
        "resend_fraction": config.resend_fraction,
        "seed": config.seed,
        "run_token": token,
        "database": redact_url(database_url),
        "url": args.url,
        "encoders": {"text": args.text_encoder, "image": args.image_encoder},
        "app_ready_s": round(ready_s, 1) if ready_s is not None else None,
        "connect_seconds": round(connect_s, 1),
        "cpu_during_load": cpu,
        "machine": facts or machine_facts(args),
    }


if __name__ == "__main__":
    sys.exit(main())
