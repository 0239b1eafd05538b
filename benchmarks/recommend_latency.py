"""Latency of the ``/recommend`` API (gradio_client) against the in-process ``RecommenderService.recommend``.

    .venv/bin/python benchmarks/recommend_latency.py --json latency.json
    .venv/bin/python benchmarks/recommend_latency.py --text-encoder tiny-random --image-encoder tiny-random --calls 20
    .venv/bin/python benchmarks/recommend_latency.py --url http://127.0.0.1:7860/ --data-dir data   # a running app

Starts the app on a free port (fresh temp data dir unless ``--data-dir``) or uses ``--url``, waits until
it serves its first page, then times ``--calls`` ``/recommend`` calls (fixed profile, k=10) after
``--warmup`` untimed ones, and ``--upload-calls`` text-only ``/recommend_upload`` calls. The app it
started is then stopped and, as the baseline, a ``RecommenderService`` is built in this process on the
same data dir (so its features come from the cache) and ``recommend`` timed the same way. Every API
call stores impressions in the app's database: point ``--url`` at a throw-away instance.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    READY_TIMEOUT_S, AppProcess, add_app_args, add_common_args, app_argv, app_command, app_env, emit, free_port,
    machine_facts, setup, summary_ms,
)

log = logging.getLogger("benchmarks.recommend_latency")

DEFAULT_LIKED = ["org.gnome.Mahjongg", "org.kde.kmahjongg", "pychess", "org.gnome.Reversi"]
UPLOAD_TITLE = "Tile matching puzzle"
UPLOAD_DESCRIPTION = "A relaxing solitaire game: remove matching pairs of tiles from a stacked layout."


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/recommend_latency.py",
        description="p50/p95/mean latency of /recommend via gradio_client vs the in-process service, "
                    "plus text-only /recommend_upload.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_app_args(p)
    p.add_argument("--url", default=None,
                   help="use this running app instead of starting one (its catalog/encoders should match the flags)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data dir of the started app and of the in-process service (default: a fresh temp dir); "
                        "with --url pass the app's own data dir so the in-process features come from its cache")
    p.add_argument("--calls", type=int, default=100, help="timed /recommend calls (and in-process calls)")
    p.add_argument("--warmup", type=int, default=5, help="untimed calls before each timed series")
    p.add_argument("--upload-calls", type=int, default=20, help="timed text-only /recommend_upload calls")
    p.add_argument("--liked", nargs="+", default=DEFAULT_LIKED, metavar="ID", help="the fixed profile")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait for the app's first page")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir afterwards")
    add_common_args(p)
    return p


def time_calls(fn: Callable[[], Any], calls: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def check_result(result: Any, k: int, liked: list[str], where: str) -> None:
    ids = [r["item_id"] if isinstance(r, dict) else r.item_id for r in result]
    if len(ids) != k or set(ids) & set(liked):
        raise RuntimeError(f"{where}: unexpected result {result!r}")
    log.info("%s: top 3 = %s", where, ids[:3])


def api_benchmark(args: argparse.Namespace, url: str) -> dict[str, Any]:
    from gradio_client import Client

    t0 = time.perf_counter()
    client = Client(url, verbose=False)
    connect_s = time.perf_counter() - t0

    def recommend() -> Any:
        return client.predict(liked_ids=args.liked, k=args.k, api_name="/recommend")

    def upload() -> Any:
        return client.predict(image=None, title=UPLOAD_TITLE, description=UPLOAD_DESCRIPTION, k=args.k,
                              api_name="/recommend_upload")

    check_result(recommend(), args.k, args.liked, "API /recommend")
    check_result(upload(), args.k, [], "API /recommend_upload")
    log.info("timing %d /recommend calls (+%d warm-up)", args.calls, args.warmup)
    rec = time_calls(recommend, args.calls, args.warmup)
    log.info("timing %d /recommend_upload calls (+%d warm-up)", args.upload_calls, args.warmup)
    up = time_calls(upload, args.upload_calls, args.warmup)
    if hasattr(client, "close"):
        client.close()
    return {"connect_s": round(connect_s, 3), "recommend": summary_ms(rec), "upload_text": summary_ms(up)}


def inprocess_benchmark(args: argparse.Namespace, data_dir: Path) -> dict[str, Any]:
    import app as app_module
    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.service import RecommenderService

    config = app_module.parse_config(app_argv(args, data_dir))  # the app's own config: same cache dir, same encoders
    catalog = resolve_catalog(config.catalog, data_root=config.data_root,
                              max_image_pixels=config.service.limits.max_image_pixels)
    service = RecommenderService(catalog, config.service)
    t0 = time.perf_counter()
    report = service.prepare()
    prepare_s = time.perf_counter() - t0
    stats = report.stats
    if stats.text_computed or stats.image_computed:
        log.warning("in-process service computed %d text / %d image features (not all cached)",
                    stats.text_computed, stats.image_computed)

    def recommend() -> Any:
        return service.recommend(args.liked, args.k)

    def upload() -> Any:
        return service.recommend_for_upload(image=None, title=UPLOAD_TITLE, description=UPLOAD_DESCRIPTION, k=args.k)

    check_result(recommend(), args.k, args.liked, "in-process recommend")
    log.info("timing %d in-process recommend calls (+%d warm-up)", args.calls, args.warmup)
    rec = time_calls(recommend, args.calls, args.warmup)
    up = time_calls(upload, args.upload_calls, args.warmup)
    return {
        "prepare_s": round(prepare_s, 3),
        "features": {"text_computed": stats.text_computed, "text_cached": stats.text_cached,
                     "image_computed": stats.image_computed, "image_cached": stats.image_cached},
        "model_version": report.model_version,
        "recommend": summary_ms(rec),
        "upload_text": summary_ms(up),
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    if args.calls < 1 or args.upload_calls < 1 or args.warmup < 0:
        raise SystemExit("--calls and --upload-calls must be >= 1, --warmup >= 0")
    temp = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="bench-latency-")) if temp else args.data_dir.expanduser().resolve()
    if args.url and temp:
        log.warning("--url without --data-dir: the in-process baseline extracts its own features into %s", data_dir)

    app_ready_s = None
    try:
        if args.url:
            api = api_benchmark(args, args.url)
            url = args.url
        else:
            port = free_port()
            url = f"http://127.0.0.1:{port}/"
            app = AppProcess(app_command(args, data_dir, port), data_dir / "app.log", app_env(args.threads))
            try:
                app.start()
                app_ready_s = app.wait_ready(url, timeout_s=args.timeout)
                log.info("app ready after %.2fs", app_ready_s)
                api = api_benchmark(args, url)
            except BaseException:
                log.error("API benchmark failed; last lines of %s:\n%s", app.log_path, app.log_tail())
                raise
            finally:
                app.stop()
        local = inprocess_benchmark(args, data_dir)
    except Exception as exc:
        log.error("benchmark failed: %s: %s (data dir kept: %s)", type(exc).__name__, exc, data_dir)
        return 1
    if temp and not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)

    api_p50, local_p50 = api["recommend"]["p50_ms"], local["recommend"]["p50_ms"]
    result = {
        "benchmark": "recommend_latency",
        "api_p50_ms": api_p50,
        "api_p95_ms": api["recommend"]["p95_ms"],
        "api_mean_ms": api["recommend"]["mean_ms"],
        "inprocess_p50_ms": local_p50,
        "api_overhead_ratio": round(api_p50 / local_p50, 2) if local_p50 > 0 else None,
        "api_overhead_ms": round(api_p50 - local_p50, 3),
        "upload_text_p50_ms": api["upload_text"]["p50_ms"],
        "api": api,
        "inprocess": local,
        "liked": args.liked,
        "k": args.k,
        "calls": args.calls,
        "upload_calls": args.upload_calls,
        "warmup": args.warmup,
        "url": url if args.url else f"{url} (started by the benchmark)",
        "app_ready_s": round(app_ready_s, 3) if app_ready_s is not None else None,
        "catalog": args.catalog,
        "text_encoder": args.text_encoder,
        "image_encoder": args.image_encoder,
        "app_threads": None if args.url else args.threads,
        "machine": machine_facts(args),
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
