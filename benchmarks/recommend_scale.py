"""Top-20 retrieval latency and recall at catalog sizes far beyond the demo (synthetic item vectors).

    .venv/bin/python benchmarks/recommend_scale.py --sizes 10000,100000,1000000 --json scale.json
    .venv/bin/python benchmarks/recommend_scale.py --sizes 20000 --queries 50        # quick check

Vectors: rows as the fine-tuned fusion model serves them (recsys_core/serving/finetuned.py), ``[s * unit(item),
bias]`` with width ``--dim`` 129 = FusionConfig.width (128; recsys_core.training keeps that
default) + 1 bias column, and ``s`` = 7.37, the learned score scale of our MovieLens checkpoint. Queries are
``[unit(user), 1]``. Directions are a mixture of ``--clusters`` Gaussian clusters of uneven sizes
(log-normal weights, like genres) with about cos 0.7 between an item and its cluster centre; the bias
column is N(0, ``--bias-std``). Why not i.i.d. noise: random 128-d vectors are all nearly orthogonal,
so they have no neighbourhood structure for an approximate index to exploit (or to get wrong): recall
and speed measured on them say nothing about real embeddings, which are strongly clustered.

For each size, in a fresh process (so ``rss_mb``, the process's peak resident memory, belongs to that
size alone): the index ``recsys_core.serving.index.build_index`` chooses with the default ``IndexConfig`` (or
``--kind``), built with a temporary on-disk cache (``build_s``, including hashing and writing the
cache) and read back from it (``cached_load_s``); then ``--queries`` single queries, one at a time
as the app serves them, after ``--warmup`` untimed ones, the three contenders taking turns per
query: p50/p95 of our ``search(q, 20)``, p50 of a plain numpy baseline (``vectors @ q`` +
``argpartition``) and of the exact torch index, and recall@20 of ours against exact search.
``speedup`` = numpy p50 / ours p50.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_common_args, emit, machine_facts, percentile, setup  # noqa: E402

log = logging.getLogger("benchmarks.recommend_scale")

K = 20
# exp(log_scale) of the MovieLens checkpoint (it starts at e^2 = 7.39 and barely moves in training).
SCALE = 7.37
# An item's cosine to its cluster centre is about 1 / sqrt(1 + SPREAD^2) = 0.7.
SPREAD = 1.0
CHUNK = 65_536  # rows generated at a time, so temporaries never hold a second copy of the catalog


@dataclass(frozen=True)
class ScaleConfig:
    dim: int = 129
    queries: int = 200
    warmup: int = 10
    clusters: int = 1000
    bias_std: float = 0.5
    seed: int = 0
    threads: int = 2
    kind: str = "auto"
    nprobe: int | None = None
    nlist: int | None = None
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        if self.dim < 2:
            raise ValueError(f"--dim is {self.dim}; it needs at least one direction column and the bias column")
        if self.queries < 1 or self.warmup < 0 or self.clusters < 1 or self.threads < 1:
            raise ValueError("--queries, --clusters and --threads must be >= 1 and --warmup >= 0")
        if self.bias_std < 0:
            raise ValueError(f"--bias-std is {self.bias_std}; it must be >= 0")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/recommend_scale.py",
        description="Top-20 latency (p50/p95) and recall@20 of the index build_index chooses vs a numpy "
                    "brute-force baseline, on synthetic clustered item vectors of several catalog sizes. "
                    "See the module docstring for how the vectors are drawn. --threads limits every thread "
                    "pool (numpy, torch, FAISS) during the timed queries; --device is unused (CPU only).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated catalog sizes")
    p.add_argument("--dim", type=int, default=ScaleConfig.dim,
                   help="row width: FusionConfig.width 128 + 1 bias column")
    p.add_argument("--queries", type=int, default=ScaleConfig.queries, help="timed single queries per size")
    p.add_argument("--warmup", type=int, default=ScaleConfig.warmup, help="untimed queries before each series")
    p.add_argument("--clusters", type=int, default=ScaleConfig.clusters, help="Gaussian clusters of item directions")
    p.add_argument("--bias-std", type=float, default=ScaleConfig.bias_std, help="std of the bias column")
    p.add_argument("--seed", type=int, default=ScaleConfig.seed)
    p.add_argument("--kind", choices=("auto", "exact", "faiss"), default=ScaleConfig.kind,
                   help="IndexConfig.kind (auto = what the service would choose)")
    p.add_argument("--nprobe", type=int, default=None, help="override IndexConfig.nprobe")
    p.add_argument("--nlist", type=int, default=None, help="override IndexConfig.nlist (0 = 4 * sqrt(N))")
    add_common_args(p)
    # One thread by default: the app answers one query per request, and on a shared 2-core machine a
    # 2-thread BLAS call on a single query mostly measures thread hand-off (numpy's 20k-item product
    # took 21 ms p50 with 2 threads under load, 1.5 ms with 1).
    p.set_defaults(threads=1)
    return p


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s.replace("_", "")) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"--sizes {text!r}: give comma-separated whole numbers, e.g. 10000,100000") from None
    if not sizes or min(sizes) < K + 1:
        raise SystemExit(f"--sizes {text!r}: each size must be > {K}")
    return sizes


# -- synthetic data ---------------------------------------------------------------------------------
def clustered_rows(n: int, cfg: ScaleConfig, rng, centres, weights, bias: bool):
    """``n`` rows ``[s * unit(direction), bias]`` (or queries ``[unit(direction), 1]`` with bias=False)."""
    import numpy as np

    d = cfg.dim - 1
    out = np.empty((n, cfg.dim), dtype=np.float32)
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        which = rng.choice(len(centres), size=hi - lo, p=weights)
        noise = rng.standard_normal((hi - lo, d), dtype=np.float32) * np.float32(SPREAD / np.sqrt(d))
        v = centres[which] + noise
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        if bias:
            out[lo:hi, :d] = SCALE * v
            out[lo:hi, d] = rng.normal(0.0, cfg.bias_std, size=hi - lo)
        else:
            out[lo:hi, :d] = v
            out[lo:hi, d] = 1.0
    return out


def synthetic(n: int, cfg: ScaleConfig):
    import numpy as np

    rng = np.random.default_rng([cfg.seed, n])
    centres = rng.standard_normal((cfg.clusters, cfg.dim - 1), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.lognormal(0.0, 1.0, size=cfg.clusters)
    weights /= weights.sum()
    items = clustered_rows(n, cfg, rng, centres, weights, bias=True)
    queries = clustered_rows(cfg.warmup + cfg.queries, cfg, rng, centres, weights, bias=False)
    return items, queries


def time_queries(ours, exact, items, queries, cfg: ScaleConfig) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """Seconds per single query of our index, the numpy baseline and the exact index, and the results."""
    import numpy as np
    import torch

    q_torch = [torch.from_numpy(q) for q in queries]

    def numpy_top(q):
        scores = items @ q
        top = np.argpartition(-scores, K)[:K]
        return top[np.argsort(-scores[top])]

    contenders = {"ours": lambda i: ours.search(q_torch[i], K), "numpy": lambda i: numpy_top(queries[i]),
                  "exact": lambda i: exact.search(q_torch[i], K)}
    for i in range(cfg.warmup):
        for fn in contenders.values():
            fn(i)
    times: dict[str, list[float]] = {name: [] for name in contenders}
    found: dict[str, list[Any]] = {"ours": [], "exact": []}
    # Interleaved, query by query: on a shared machine a burst of load then slows all three alike
    # instead of whichever series happened to run during it.
    for i in range(cfg.warmup, len(queries)):
        for name, fn in contenders.items():
            start = time.perf_counter()
            out = fn(i)
            times[name].append(time.perf_counter() - start)
            if name in found:
                found[name].append(out)
    return times, found


# -- one size (runs in a fresh process) -------------------------------------------------------------
def run_size(n: int, cfg: ScaleConfig) -> dict[str, Any]:
    logging.basicConfig(level=cfg.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import numpy as np
    import torch

    from threadpoolctl import threadpool_limits

    from recsys_core.config import IndexConfig
    from recsys_core.serving.index import ExactIndex, build_index

    torch.set_num_threads(cfg.threads)
    # Its "could not load AVX2 module" INFO lines are noise: the wheel dispatches AVX2/AVX-512 itself.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    index_cfg = IndexConfig(kind=cfg.kind)  # type: ignore[arg-type]
    overrides = {name: value for name, value in (("nprobe", cfg.nprobe), ("nlist", cfg.nlist)) if value is not None}
    index_cfg = dataclasses.replace(index_cfg, **overrides)

    t0 = time.perf_counter()
    items, queries = synthetic(n, cfg)
    log.info("%d x %d synthetic rows in %.1fs", n, cfg.dim, time.perf_counter() - t0)
    vectors = torch.from_numpy(items)  # shares memory: the numpy baseline reads the same rows

    with tempfile.TemporaryDirectory(prefix="recommend_scale-") as cache:
        t0 = time.perf_counter()
        ours = build_index(vectors, index_cfg, Path(cache))
        build_s = time.perf_counter() - t0
        del ours  # a restart holds one index, not two: keep rss_mb honest
        t0 = time.perf_counter()
        ours = build_index(vectors, index_cfg, Path(cache))  # the restart path: read from the cache
        load_s = time.perf_counter() - t0
    exact = ExactIndex(vectors)

    # Queries run with every thread pool in the process (numpy's OpenBLAS, torch's and FAISS'
    # OpenMP) limited to --threads, so the baseline and our index share one limit; the build above
    # is offline work and uses all cores. threadpoolctl comes with scikit-learn.
    with threadpool_limits(limits=cfg.threads):
        times, found = time_queries(ours, exact, items, queries, cfg)
    ours_t, numpy_t, exact_t = times["ours"], times["numpy"], times["exact"]
    ours_r, exact_r = found["ours"], found["exact"]
    recall = float(np.mean([len(set(a.indices.tolist()) & set(b.indices.tolist())) / K
                            for a, b in zip(ours_r, exact_r)]))
    ours_ms = [t * 1000 for t in ours_t]
    ours_p50, numpy_p50 = percentile(ours_ms, 50), percentile([t * 1000 for t in numpy_t], 50)
    result = {
        "ours_p50_ms": round(ours_p50, 4),
        "ours_p95_ms": round(percentile(ours_ms, 95), 4),
        "numpy_p50_ms": round(numpy_p50, 4),
        "exact_torch_p50_ms": round(percentile([t * 1000 for t in exact_t], 50), 4),
        "recall_at_20": round(recall, 4),
        "speedup": round(numpy_p50 / ours_p50, 1),
        "index_kind": ours.kind,
        "build_s": round(build_s, 2),
        "cached_load_s": round(load_s, 2),
        # ru_maxrss is in KiB on Linux
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if ours.kind == "faiss":
        import faiss

        ivf = faiss.extract_index_ivf(ours.index)  # type: ignore[attr-defined]
        result.update({"nlist": int(ivf.nlist), "nprobe": int(ivf.nprobe)})
    log.info("%d items: %s", n, result)
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    sizes = parse_sizes(args.sizes)
    try:
        cfg = ScaleConfig(dim=args.dim, queries=args.queries, warmup=args.warmup, clusters=args.clusters,
                          bias_std=args.bias_std, seed=args.seed, threads=args.threads, kind=args.kind,
                          nprobe=args.nprobe, nlist=args.nlist, log_level=args.log_level)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    results: dict[str, Any] = {}
    # spawn, not fork: a fresh interpreter per size, so its peak RSS is that size's alone.
    context = multiprocessing.get_context("spawn")
    for n in sizes:
        log.info("size %d", n)
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            results[str(n)] = pool.submit(run_size, n, cfg).result()
    results["_meta"] = {**machine_facts(args), "config": dataclasses.asdict(cfg), "k": K}
    emit(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
