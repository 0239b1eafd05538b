"""Time until ``python app.py`` serves requests, and until its first page: a cold start (features extracted)
and a restart (features cached).

    .venv/bin/python benchmarks/startup.py --json startup.json
    .venv/bin/python benchmarks/startup.py --text-encoder tiny-random --image-encoder tiny-random   # smoke test

Starts the app on a free port with a fresh data directory (or ``--data-dir``), polls ``GET /`` every
0.1 s until it answers 200 (``first_page_s``: the page then shows the catalog's preparation) and then
its log until it says it is ready (``seconds``, ``first_run_s``, ``restart_s``: requests are served;
before the app launched ahead of preparing, the first page came only at this moment, so these keep
the meaning "time to first page" had), stops the app, then starts it again on the same data directory. The app's
output goes to ``<data dir>/app-run<N>.log``. Feature-extraction throughput of the cold run (text and
image items/s) comes from the app's own ``features: ...`` log line (seconds logged to 0.1 s, so rates
below about a second of work are rough; ``benchmarks/feature_throughput.py`` measures them in-process),
and, for a catalog with audio or video (``--catalog media``), from its ``features: audio ...`` /
``features: video ...`` lines.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    READY_TIMEOUT_S, AppProcess, add_app_args, add_common_args, app_command, app_env, emit, free_port,
    machine_facts, parse_prepare_seconds, setup,
)

log = logging.getLogger("benchmarks.startup")

# recsys_core.encoders.features logs one line per prepare: what was computed (not cached) and how long it took.
FEATURES_LINE = re.compile(
    r"features: text (?P<text_computed>\d+) computed / (?P<text_cached>\d+) cached in (?P<text_s>[0-9.]+)s; "
    r"images (?P<image_computed>\d+) computed / (?P<image_cached>\d+) cached / (?P<image_failed>\d+) unreadable "
    r"in (?P<image_s>[0-9.]+)s")
# ... and one line per audio / video extraction, for a catalog with audio or video (e.g. --catalog media).
MEDIA_FEATURES_LINE = re.compile(
    r"features: (?P<kind>audio|video) (?P<computed>\d+) computed / (?P<cached>\d+) cached / (?P<failed>\d+) "
    r"unreadable in (?P<s>[0-9.]+)s")


def read_log(log_path: Path) -> str | None:
    """The app's log text; None when it cannot be read (the parsers then report None)."""
    try:
        return log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def parse_feature_stats(log_text: str | None) -> dict | None:
    """Counts, seconds and items/s of the last feature extraction the app logged (None if none was logged)."""
    if log_text is None:
        return None
    found = list(FEATURES_LINE.finditer(log_text))
    if not found:
        return None
    stats: dict = {k: (float(v) if k.endswith("_s") else int(v)) for k, v in found[-1].groupdict().items()}
    # The audio/video lines that follow the last text/image line belong to the same extraction.
    for line in MEDIA_FEATURES_LINE.finditer(log_text, found[-1].end()):
        kind = line["kind"]
        stats.update({f"{kind}_computed": int(line["computed"]), f"{kind}_cached": int(line["cached"]),
                      f"{kind}_failed": int(line["failed"]), f"{kind}_s": float(line["s"])})
    for part in ("text", "image", "audio", "video"):
        if f"{part}_s" not in stats:
            continue
        seconds, computed = stats[f"{part}_s"], stats[f"{part}_computed"]
        stats[f"{part}_items_per_s"] = round(computed / seconds, 2) if seconds > 0 and computed else None
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/startup.py",
        description="Seconds until the app serves requests (and until its first page answers 200): first run "
                    "(cold feature cache) and restart (features cached in the same data dir).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_app_args(p)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data dir for both runs (default: a fresh temp dir, deleted afterwards unless --keep)")
    p.add_argument("--restarts", type=int, default=1, help="how many cached restarts to time (restart_s is their median)")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT_S, help="seconds to wait until the app is ready")
    p.add_argument("--keep", action="store_true", help="keep the temp data dir (its logs) afterwards")
    add_common_args(p)
    return p


def time_one_start(args: argparse.Namespace, data_dir: Path, run: int) -> dict:
    port = free_port()
    app = AppProcess(app_command(args, data_dir, port), data_dir / f"app-run{run}.log", app_env(args.threads))
    try:
        app.start()
        seconds = app.wait_ready(f"http://127.0.0.1:{port}/", timeout_s=args.timeout)
    except BaseException:
        log.error("run %d failed; last lines of %s:\n%s", run, app.log_path, app.log_tail())
        raise
    finally:
        app.stop()
    log_text = read_log(app.log_path)
    prepare = parse_prepare_seconds(log_text)
    features = parse_feature_stats(log_text)
    log.info("run %d: first page after %.2fs, ready after %.2fs (service prepare %s s)", run, app.first_page_s,
             seconds, prepare)
    return {"seconds": round(seconds, 3), "first_page_s": round(app.first_page_s, 3), "prepare_s": prepare,
            "features": features, "log": str(app.log_path)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    if args.restarts < 1:
        raise SystemExit("--restarts must be >= 1")
    temp = args.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="bench-startup-")) if temp else args.data_dir.expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    was_empty = not (data_dir / "features").exists()
    if not was_empty:
        log.warning("%s already holds a feature cache: the first run is not a cold start", data_dir)
    try:
        first = time_one_start(args, data_dir, 1)
        restarts = [time_one_start(args, data_dir, 2 + i) for i in range(args.restarts)]
    except Exception as exc:
        log.error("benchmark failed: %s (logs kept in %s)", exc, data_dir)
        return 1
    if temp and not args.keep:
        shutil.rmtree(data_dir, ignore_errors=True)
    restart_s = statistics.median(r["seconds"] for r in restarts)
    result = {
        "benchmark": "startup",
        "first_run_s": first["seconds"],
        "restart_s": round(restart_s, 3),
        "speedup": round(first["seconds"] / restart_s, 3) if restart_s > 0 else None,
        "first_run_first_page_s": first["first_page_s"],
        "restart_first_page_s": [r["first_page_s"] for r in restarts],
        "first_run_prepare_s": first["prepare_s"],
        # Cold run: every text and image encoded (none cached yet).
        "first_run_features": first["features"],
        "first_run_text_items_per_s": (first["features"] or {}).get("text_items_per_s"),
        "first_run_image_items_per_s": (first["features"] or {}).get("image_items_per_s"),
        # Catalogs with audio / video only (null otherwise).
        "first_run_audio_items_per_s": (first["features"] or {}).get("audio_items_per_s"),
        "first_run_video_items_per_s": (first["features"] or {}).get("video_items_per_s"),
        "restart_prepare_s": [r["prepare_s"] for r in restarts],
        "restart_runs_s": [r["seconds"] for r in restarts],
        "catalog": args.catalog,
        "text_encoder": args.text_encoder,
        "image_encoder": args.image_encoder,
        "data_dir": str(data_dir) + ("" if not temp or args.keep else " (deleted)"),
        "data_dir_was_empty": was_empty,
        "poll_interval_s": 0.1,
        "app_threads": args.threads,
        "machine": machine_facts(args),
    }
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
