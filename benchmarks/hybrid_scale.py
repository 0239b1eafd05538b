"""The hybrid model's collaborative solve at catalog sizes beyond MovieLens: dense EASE with side information vs
the low-rank solve (recsys_core/model/hybrid.py ``fit_collaborative``), on synthetic data.

    .venv/bin/python benchmarks/hybrid_scale.py --json hybrid_scale.json       # 1682, 10000, 20000 items
    .venv/bin/python benchmarks/hybrid_scale.py --items 1682,5000 --skip-dense-above 5000   # quick check

For each size in ``--items`` and each method (``lowrank`` first, then ``dense``), in a fresh process, so
that the memory figure belongs to that solve alone: the same seeded data, ``fit_collaborative`` with the
default ``HybridConfig`` (``max_dense_items`` set to force the method, ``rank`` = ``--rank``), and

- ``seconds``: wall time of ``fit_collaborative`` (Gram or randomized SVD, solve, content prior; not the
  import of scikit-learn, done before),
- ``peak_mib``: the process's peak resident memory during the solve less what was resident before it
  (``/proc/self/clear_refs`` resets the high-water mark first; ``ru_maxrss`` where that is refused),
- ``rows_mib``: what the serving model keeps of the solve (``right``, plus ``left`` for low-rank), float32,
- ``latency_ms_p50``: median over ``--repeats`` held-out profiles of ``--profile-size`` items of the
  serving path's collaborative block, ``right @ query(weights)`` (an exact dot product over every item, as
  the app's exact index computes it) plus the top-20; ``scores_ms_p50`` the same for
  ``CollaborativePart.scores`` on a one-row matrix (the training/evaluation path),
- ``top20_overlap``: mean |dense top-20 & low-rank top-20| / 20 over ``--held-out`` users who are not in the
  training matrix (their profile items excluded), on both rows of a size where both methods ran;
  ``recall_at_20`` each method's recall of the users' hidden 20% of items (context for the overlap).

A dense solve is skipped, with the reason in its row, above ``--skip-dense-above`` or when its estimated
peak (``DENSE_PEAK_FLOATS`` n x n float64 arrays) exceeds ``--max-ram-fraction`` of MemAvailable. The
``recommendation`` field is derived from the dense rows: the largest size that stays within
``--practical-seconds`` and ``--practical-ram`` of MemTotal, and where the measured trends (time ~ n^3,
memory ~ n^2, fitted on the largest measured dense size) cross those limits.

Data
----
``3 n`` training users plus ``--held-out`` users, each with their first ``--per-user`` distinct items out of
``OVERSAMPLE`` x as many draws (fewer only for a user whose draws repeat that much). Items have power-law popularity (``POWER_LAW``: the i-th most popular has weight
1 / i^POWER_LAW, in random order) and one of 19 genres; each user has a favourite genre and draws
``TASTE`` of their items from it (by popularity within the genre), the rest from everything. Without that
taste there is nothing item-item to learn beyond popularity, and both solves would trivially agree.
Content rows are random unit vectors of dimension 384 (the zero-shot vectors' width); genre rows one-hot.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from concurrent.futures.process import BrokenProcessPool  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, doc_parser, emit, machine_facts, percentile, setup  # noqa: E402

log = logging.getLogger("benchmarks.hybrid_scale")

K = 20
DIM = 384  # the zero-shot item vectors' width
N_GENRES = 19  # MovieLens' genre count
POWER_LAW = 1.0  # Zipf exponent of item popularity
TASTE = 0.5  # share of a user's draws from their favourite genre
HOLDOUT_SHARE = 0.2  # of a held-out user's items hidden for recall@20; the rest is the profile
WARMUP = 3  # untimed queries before each latency series
OVERSAMPLE = 3  # draws per kept interaction (see synthetic)
# fit_collaborative's dense path holds at most about five n x n float64 arrays at once: the Gram, its shifted
# copy in ease_weights, numpy's inv (LAPACK's copy of the input, the identity it solves against, the inverse)
# while the Gram and the copy are still alive. Checked against the measured peaks (the JSON keeps both).
DENSE_PEAK_FLOATS = 5


@dataclass(frozen=True)
class HybridScaleConfig:
    rank: int = 256
    per_user: int = 100
    held_out: int = 200
    profile_size: int = 50
    repeats: int = 20
    seed: int = 0
    threads: int = 2
    query_threads: int = 1
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if min(self.rank, self.per_user, self.held_out, self.profile_size, self.repeats) < 1:
            raise ValueError("--rank, --per-user, --held-out, --profile-size and --repeats must be >= 1")
        if self.threads < 1 or self.query_threads < 1:
            raise ValueError("--threads and --query-threads must be >= 1")
        if self.repeats > self.held_out:
            raise ValueError(f"--repeats {self.repeats} > --held-out {self.held_out}: one profile per timed query")


def build_parser() -> argparse.ArgumentParser:
    p = doc_parser("benchmarks/hybrid_scale.py", __doc__, "For each size")
    p.add_argument("--items", default="1682,10000,20000", help="comma-separated catalog sizes")
    p.add_argument("--rank", type=int, default=HybridScaleConfig.rank, help="HybridConfig.rank of the low-rank solve")
    p.add_argument("--skip-dense-above", type=int, default=20000, help="no dense solve above this many items")
    p.add_argument("--max-ram-fraction", type=float, default=0.8,
                   help="skip a dense solve whose estimated peak exceeds this share of MemAvailable")
    p.add_argument("--practical-seconds", type=float, default=60.0, help="a dense solve slower than this is impractical")
    p.add_argument("--practical-ram", type=float, default=0.25,
                   help="a dense solve whose peak exceeds this share of MemTotal is impractical")
    p.add_argument("--per-user", type=int, default=HybridScaleConfig.per_user, help="interaction draws per user")
    p.add_argument("--held-out", type=int, default=HybridScaleConfig.held_out, help="users outside the training matrix")
    p.add_argument("--profile-size", type=int, default=HybridScaleConfig.profile_size,
                   help="items in each timed profile")
    p.add_argument("--repeats", type=int, default=HybridScaleConfig.repeats, help="timed profiles per latency figure")
    p.add_argument("--query-threads", type=int, default=HybridScaleConfig.query_threads,
                   help="BLAS threads during the timed queries (the app answers one query per request; see "
                        "recommend_scale.py on why 2 threads on one query mostly measure hand-off)")
    p.add_argument("--seed", type=int, default=HybridScaleConfig.seed)
    add_common_args(p)  # --threads: BLAS threads of the solves; --device is unused (numpy/scipy only)
    return p


def parse_items(text: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--items {text!r}: give comma-separated whole numbers, e.g. 1682,10000") from None
    if not sizes or min(sizes) <= 2 * K:
        raise SystemExit(f"--items {text!r}: each size must be > {2 * K}")
    return sizes


def meminfo_mib() -> dict[str, float]:
    """MemTotal and MemAvailable of /proc/meminfo in MiB."""
    out: dict[str, float] = {}
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            key, value = line.split(":", 1)
            if key in ("MemTotal", "MemAvailable"):
                out[key] = int(value.split()[0]) / 1024  # kB
    return out


# -- synthetic data ---------------------------------------------------------------------------------
def synthetic(n: int, cfg: HybridScaleConfig):
    """(training matrix [3n, n], content [n, 384], genres [n, 19], held-out profiles [h, n], hidden items per user)."""
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng([cfg.seed, n])
    genre = rng.integers(0, N_GENRES, n)
    popularity = 1.0 / (1.0 + rng.permutation(n)) ** POWER_LAW
    users = 3 * n + cfg.held_out
    favourite = rng.integers(0, N_GENRES, users)
    # Popular items come up again and again: draw OVERSAMPLE x per_user, keep each user's first per_user distinct.
    m = OVERSAMPLE * cfg.per_user
    from_favourite = rng.random((users, m)) < TASTE
    u = rng.random((users, m))
    draws = np.empty((users, m), dtype=np.int64)

    def inverse_cdf(items, where):
        cdf = np.cumsum(popularity[items])
        draws[where] = items[np.minimum(np.searchsorted(cdf / cdf[-1], u[where]), len(items) - 1)]

    inverse_cdf(np.arange(n), ~from_favourite)
    for g in range(N_GENRES):
        members = np.flatnonzero(genre == g)
        pick = from_favourite & (favourite == g)[:, None]
        if len(members):
            inverse_cdf(members, pick)
        else:  # an empty genre (only in tiny catalogs): fall back to everything
            inverse_cdf(np.arange(n), pick)
    del u, from_favourite
    user = np.repeat(np.arange(users), m)
    item, position = draws.ravel(), np.tile(np.arange(m), users)
    del draws
    order = np.lexsort((position, item, user))  # by user, item, then draw order
    first = np.ones(order.size, dtype=bool)
    first[1:] = (user[order][1:] != user[order][:-1]) | (item[order][1:] != item[order][:-1])
    keep = order[first]
    keep = keep[np.lexsort((position[keep], user[keep]))]  # distinct items per user, in draw order
    starts = np.searchsorted(user[keep], np.arange(users))
    keep = keep[np.arange(keep.size) - starts[user[keep]] < cfg.per_user]
    x = sp.csr_matrix((np.ones(keep.size), (user[keep], item[keep])), shape=(users, n))
    del user, item, position, order, first, keep

    content = rng.standard_normal((n, DIM), dtype=np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    genres = np.zeros((n, N_GENRES), dtype=np.float32)
    genres[np.arange(n), genre] = 1.0

    train, rest = x[: 3 * n], x[3 * n:]
    profiles, hidden = [], []
    for r in range(rest.shape[0]):
        items = rng.permutation(rest.indices[rest.indptr[r]:rest.indptr[r + 1]])
        cut = max(1, int(round(len(items) * HOLDOUT_SHARE)))
        hidden.append(items[:cut])
        profiles.append(np.sort(items[cut:]))
    p_rows = np.repeat(np.arange(len(profiles)), [len(p) for p in profiles])
    profile_matrix = sp.csr_matrix((np.ones(p_rows.size), (p_rows, np.concatenate(profiles))),
                                   shape=(len(profiles), n))
    return sp.csr_matrix(train), content, genres, profile_matrix, hidden


# -- memory of this process -------------------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0); False where refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


# -- one (size, method) in a fresh process ----------------------------------------------------------
def run_one(n: int, method: str, cfg: HybridScaleConfig) -> dict[str, Any]:
    logging.basicConfig(level=cfg.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import numpy as np
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    import sklearn.utils.extmath  # noqa: F401  _lowrank's lazy import (2-3 s): a running app has paid it already

    from recsys_core.model.hybrid import HybridConfig, fit_collaborative

    t0 = time.perf_counter()
    train, content, genres, profiles, hidden = synthetic(n, cfg)
    per_user = train.nnz / train.shape[0]
    log.info("%d items: %d x %d training matrix (%.1f items/user) in %.1fs", n, *train.shape, per_user,
             time.perf_counter() - t0)
    config = HybridConfig(max_dense_items=n if method == "dense" else n - 1, rank=cfg.rank)

    gc.collect()
    before_kib = _status_kib("VmRSS")
    reset = _reset_peak() and before_kib is not None
    with threadpool_limits(limits=cfg.threads):
        t0 = time.perf_counter()
        part = fit_collaborative(train, content, genres, config, seed=cfg.seed)
        seconds = time.perf_counter() - t0
    peak_kib = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base_kib = before_kib if reset else 0  # ru_maxrss cannot be reset: then the figure is the process peak
    assert part.dense == (method == "dense")
    rows_bytes = part.right.nbytes + (part.left.nbytes if part.left is not None else 0)
    log.info("%d items, %s: %.1fs, peak +%.0f MiB", n, method, seconds, ((peak_kib or 0) - (base_kib or 0)) / 1024)

    # Held-out users' top-20 (profile items excluded) and recall of their hidden items.
    scores = part.scores(profiles)
    scores[profiles.nonzero()] = -np.inf
    top = np.argpartition(-scores, K, axis=1)[:, :K]
    top = np.take_along_axis(top, np.argsort(-np.take_along_axis(scores, top, 1), axis=1), 1)
    recall = float(np.mean([len(set(t.tolist()) & set(h.tolist())) / min(K, len(h)) for t, h in zip(top, hidden)]))
    del scores

    # One profile of --profile-size items per timed query (held-out users' items, padded by popular ones
    # where a profile is shorter).
    popular = np.argsort(-np.asarray(train.sum(0)).ravel())
    timed = []
    for r in range(cfg.repeats):
        own = profiles.indices[profiles.indptr[r]:profiles.indptr[r + 1]]
        extra = popular[~np.isin(popular, own)][: max(0, cfg.profile_size - len(own))]
        timed.append(np.concatenate([own, extra])[: cfg.profile_size])

    def serve(liked):
        weights = np.zeros(n)
        weights[liked] = 1.0
        s = part.right @ part.query(weights)
        s[liked] = -np.inf
        return np.argpartition(-s, K)[:K]

    def score_call(liked):
        return part.scores(sp.csr_matrix((np.ones(len(liked)), (np.zeros(len(liked), dtype=int), liked)),
                                         shape=(1, n)))

    latency: dict[str, list[float]] = {"serve": [], "scores": []}
    with threadpool_limits(limits=cfg.query_threads):
        for liked in timed[:WARMUP]:
            serve(liked), score_call(liked)
        for liked in timed:  # interleaved, so a burst of load slows both series alike
            for name, fn in (("serve", serve), ("scores", score_call)):
                start = time.perf_counter()
                fn(liked)
                latency[name].append(time.perf_counter() - start)
    return {
        "row": {
            "items": n, "method": method, "seconds": round(seconds, 2),
            "peak_mib": round(((peak_kib or 0) - (base_kib or 0)) / 1024, 1),
            "rows_mib": round(rows_bytes / 2 ** 20, 1),
            "latency_ms_p50": round(percentile([t * 1000 for t in latency["serve"]], 50), 3),
            "top20_overlap": None,  # filled in by the parent, which has both methods' lists
            "scores_ms_p50": round(percentile([t * 1000 for t in latency["scores"]], 50), 3),
            "recall_at_20": round(recall, 4),
            "rank": part.left.shape[1] if part.left is not None else None,
            "peak_measure": "VmHWM after clear_refs, less VmRSS before" if reset else "ru_maxrss (process peak)",
            "estimated_peak_mib": round(DENSE_PEAK_FLOATS * n * n * 8 / 2 ** 20, 1) if method == "dense" else None,
            "users": train.shape[0], "interactions_per_user": round(per_user, 1),
        },
        "top": top,
    }


def dense_skip_reason(n: int, args: argparse.Namespace) -> str | None:
    if n > args.skip_dense_above:
        return f"{n} items > --skip-dense-above {args.skip_dense_above}"
    need = DENSE_PEAK_FLOATS * n * n * 8 / 2 ** 20
    available = meminfo_mib().get("MemAvailable")
    if available is not None and need > args.max_ram_fraction * available:
        return (f"estimated peak {need:.0f} MiB ({DENSE_PEAK_FLOATS} n x n float64) > {args.max_ram_fraction:.0%} "
                f"of MemAvailable {available:.0f} MiB")
    return None


def recommendation(rows: list[dict[str, Any]], args: argparse.Namespace, mem_total: float) -> dict[str, Any]:
    """Where dense stops being practical, from the measured dense rows (largest within limits, trend crossing)."""
    ram_limit = args.practical_ram * mem_total
    dense = sorted((r for r in rows if r["method"] == "dense" and r.get("seconds") is not None),
                   key=lambda r: r["items"])
    low = {r["items"]: r for r in rows if r["method"] == "lowrank" and r.get("seconds") is not None}
    if not dense:
        return {"text": "no dense solve ran: nothing to derive a limit from", "crossover_items": None}

    def practical(r):
        return r["seconds"] <= args.practical_seconds and r["peak_mib"] <= ram_limit

    ok = [r["items"] for r in dense if practical(r)]
    over = [r for r in dense if not practical(r)]
    ref = dense[-1]  # the largest measured size: the trends' least extrapolated anchor
    n_time = ref["items"] * (args.practical_seconds / ref["seconds"]) ** (1 / 3)
    n_mem = ref["items"] * (ram_limit / max(ref["peak_mib"], 1e-9)) ** 0.5
    crossover = int(round(min(n_time, n_mem), -2))
    binding = "time" if n_time <= n_mem else "memory"
    parts = [f"dense EASE with side information stops being practical above about {crossover} items on this "
             f"machine ({binding} binds first: limits {args.practical_seconds:g} s and {args.practical_ram:.0%} of "
             f"{mem_total / 1024:.1f} GiB RAM = {ram_limit:.0f} MiB; trends time ~ n^3, memory ~ n^2 from the "
             f"{ref['items']}-item solve: {ref['seconds']} s, {ref['peak_mib']:.0f} MiB)"]
    parts.append(f"largest measured size within the limits: {max(ok) if ok else 'none'}")
    if over:
        first = over[0]
        parts.append(f"first measured size over them: {first['items']} ({first['seconds']} s, "
                     f"{first['peak_mib']:.0f} MiB)")
    if over and over[0]["items"] in low:
        lr = low[over[0]["items"]]
        parts.append(f"low-rank (rank {lr['rank']}) at that size: {lr['seconds']} s, {lr['peak_mib']:.0f} MiB, "
                     f"top-20 overlap with dense {lr['top20_overlap']}")
    parts.append(f"HybridConfig.max_dense_items is 4000 ({'within' if 4000 <= crossover else 'above'} that limit)")
    return {"text": "; ".join(parts), "crossover_items": crossover, "crossover_by_time": int(round(n_time, -2)),
            "crossover_by_memory": int(round(n_mem, -2)), "binding": binding,
            "largest_practical_measured": max(ok) if ok else None,
            "limits": {"seconds": args.practical_seconds, "ram_mib": round(ram_limit, 1)}}


def main(argv: list[str] | None = None) -> int:
    wall0 = time.perf_counter()
    args = build_parser().parse_args(argv)
    setup(args)
    sizes = parse_items(args.items)
    try:
        cfg = HybridScaleConfig(rank=args.rank, per_user=args.per_user, held_out=args.held_out,
                                profile_size=args.profile_size, repeats=args.repeats, seed=args.seed,
                                threads=args.threads, query_threads=args.query_threads, log_level=args.log_level)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    import numpy as np

    memory = meminfo_mib()
    rows: list[dict[str, Any]] = []
    # spawn, not fork: a fresh interpreter per solve, so its memory is that solve's alone.
    context = multiprocessing.get_context("spawn")
    for n in sizes:
        tops: dict[str, np.ndarray] = {}
        for method in ("lowrank", "dense"):
            reason = dense_skip_reason(n, args) if method == "dense" else None
            if reason is None:
                log.info("%d items: %s solve", n, method)
                try:
                    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
                        out = pool.submit(run_one, n, method, cfg).result()
                    rows.append(out["row"])
                    tops[method] = out["top"]
                    continue
                except BrokenProcessPool:  # e.g. killed for memory: record it, go on with the other sizes
                    reason = "the solve's process died (killed, probably for memory)"
            log.warning("%d items: %s skipped: %s", n, method, reason)
            rows.append({"items": n, "method": method, "seconds": None, "peak_mib": None, "rows_mib": None,
                         "latency_ms_p50": None, "top20_overlap": None, "skipped": reason})
        if len(tops) == 2:
            overlap = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / K
                                     for a, b in zip(tops["dense"], tops["lowrank"])]))
            for r in rows[-2:]:
                r["top20_overlap"] = round(overlap, 4)
    result = {
        "rows": rows,
        "recommendation": None,
        "data": {"users_per_item": 3, "per_user_items": cfg.per_user, "oversample": OVERSAMPLE, "power_law": POWER_LAW, "taste": TASTE,
                 "content_dim": DIM, "genres": N_GENRES, "held_out_users": cfg.held_out, "k": K},
        "memory_mib": {k: round(v, 1) for k, v in memory.items()},
        "dense_peak_floats": DENSE_PEAK_FLOATS,
    }
    detail = recommendation(rows, args, memory["MemTotal"])
    result["recommendation"] = detail.pop("text")
    result["recommendation_detail"] = detail
    result["_meta"] = {**machine_facts(args), "config": dataclasses.asdict(cfg),
                       "skip_dense_above": args.skip_dense_above, "max_ram_fraction": args.max_ram_fraction,
                       "items": sizes}
    result["wall_s"] = round(time.perf_counter() - wall0, 1)
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
