"""GPU check: the app's GPU work on a real device, with timings and CUDA memory, as one JSON result.

    .venv/bin/python benchmarks/gpu_check.py --json gpu_check.json              # on a CUDA machine
    .venv/bin/python benchmarks/gpu_check.py --device cpu --items 40 --repeats 3  # a dry run without a GPU

In one process, with the packaged encoders (``--text-encoder``/``--image-encoder`` to change them) on the
first ``--items`` items of the catalog (default: the bundled demo, all of it), each stage timed apart:

1. encoders loaded onto the device;
2. feature extraction (``RecommenderService.prepare``, no disk cache): text and image items/s;
3. ``recommend`` for a fixed profile (the first three items), ``--repeats`` timed calls after one warm-up;
4. ``explain`` with the fast method: the first call (Captum set-up included) and ``--repeats`` more
   recommended items (each a cache miss);
5. ``recommend_for_upload`` of a catalog image plus a title, ``--repeats`` timed calls after one warm-up;
6. one fine-tuning epoch (``--epochs``) of the fusion model with ``recsys_core.training.loop.fit`` on seeded
   synthetic interactions (``--users`` users, each drawing items mostly from one genre: the timing does not
   depend on what the interactions mean), after its inputs are built (``build_content``, timed apart).

On CUDA every timer synchronises the device, and each stage reports ``torch.cuda.max_memory_allocated``
(reset before the stage). ``bf16_autocast`` says whether the training forward passes actually ran under
bf16 autocast (observed with a forward hook, not inferred from the config). Asking for ``--device cuda``
without a usable GPU fails at once with a message saying why.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Iterator  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_app_args, add_common_args, emit, machine_facts, setup, summary_ms  # noqa: E402

log = logging.getLogger("benchmarks.gpu_check")

UPLOAD_TITLE = "Tile matching puzzle"
GENRE_SHARE = 0.8  # share of a synthetic user's items drawn from their favourite genre


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="benchmarks/gpu_check.py",
        description="Feature extraction, recommend, explain (fast), upload recommend and one training epoch "
                    "on a device; prints JSON timings and CUDA peak memory.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_app_args(p)
    p.add_argument("--items", type=int, default=0, help="use the first N catalog items (0 = all)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls of recommend, explain and upload recommend")
    p.add_argument("--epochs", type=int, default=1, help="training epochs timed")
    p.add_argument("--users", type=int, default=256, help="synthetic users for the training epoch")
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p)
    p.set_defaults(device="cuda")  # this is the GPU check; --device cpu is the dry run
    return p


def check_device(name: str) -> None:
    """Fail with the reason when CUDA is asked for but cannot be used."""
    import torch

    if name != "cuda" or torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        why = f"this torch build ({torch.__version__}) has no CUDA support"
    else:
        why = (f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU: check the driver "
               f"(nvidia-smi) and CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}")
    raise SystemExit(f"error: --device cuda was asked for but {why}; use --device cpu for a dry run")


class Stages:
    """Times named stages; on CUDA synchronises around them and records each stage's peak memory."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.seconds: dict[str, float] = {}
        self.peak_mib: dict[str, float] = {}

    def _sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        import torch

        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[name] = round(time.perf_counter() - start, 4)
        if self.cuda:
            self.peak_mib[name] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        log.info("%s: %.3fs", name, self.seconds[name])

    def timed(self, fn: Callable[[], Any], repeats: int) -> list[float]:
        runs = []
        for _ in range(repeats):
            self._sync()
            start = time.perf_counter()
            fn()
            self._sync()
            runs.append(time.perf_counter() - start)
        return runs


def subset(catalog, n: int):
    from recsys_core.data.catalog import Catalog

    if n <= 0 or n >= len(catalog):
        return catalog
    return Catalog(name=f"{catalog.name}[:{n}]", root=catalog.root, items=catalog.items[:n],
                   description=catalog.description)


def synthetic_interactions(catalog, users: int, seed: int):
    """Seeded (user_id, item_id, timestamp) rows: each user mostly likes items of one genre."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ids = np.array(catalog.ids)
    by_genre: dict[str, list[int]] = {}
    for i, item in enumerate(catalog.items):
        for genre in item.genres or ("(none)",):
            by_genre.setdefault(genre, []).append(i)
    genres = sorted(by_genre)
    rows = []
    for u in range(users):
        favourite = by_genre[genres[rng.integers(len(genres))]]
        n = int(rng.integers(5, 16))
        picks = set(rng.choice(favourite, size=min(len(favourite), round(n * GENRE_SHARE)), replace=False).tolist())
        picks |= set(rng.choice(len(ids), size=min(len(ids), n - len(picks)), replace=False).tolist())
        for t, i in enumerate(sorted(picks)):
            rows.append((f"user-{u}", ids[i], 1_700_000_000 + 60 * t))
    return pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])


@contextlib.contextmanager
def autocast_probe(device_type: str) -> Iterator[set]:
    """Record (autocast enabled, dtype) as seen by every module forward inside the block."""
    import torch

    seen: set[tuple[bool, str]] = set()

    def hook(module, args, output):
        enabled = torch.is_autocast_enabled(device_type)
        seen.add((enabled, str(torch.get_autocast_dtype(device_type)) if enabled else "-"))

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        yield seen
    finally:
        handle.remove()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    for name in ("items", "users"):
        if getattr(args, name) < 0:
            raise SystemExit(f"--{name} must be >= 0")
    if args.repeats < 1 or args.epochs < 1:
        raise SystemExit("--repeats and --epochs must be >= 1")
    check_device(args.device)

    import torch

    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.config import ImageEncoderConfig, ServiceConfig, TextEncoderConfig
    from recsys_core.model.content import build_content
    from recsys_core.model.fusion import FusionConfig
    from recsys_core.service import RecommenderService
    from recsys_core.training.config import TrainConfig
    from recsys_core.training.loop import fit

    torch.manual_seed(args.seed)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    stages = Stages(cuda)
    catalog = subset(resolve_catalog(args.catalog, data_root=args.data_root), args.items)
    if len(catalog) < 8:
        raise SystemExit(f"--items {args.items}: the check needs at least 8 items (3 liked, several to explain)")
    config = ServiceConfig(text=TextEncoderConfig(model=args.text_encoder),
                           image=ImageEncoderConfig(model=args.image_encoder), device=args.device, cache_dir=None)
    service = RecommenderService(catalog, config)

    with stages.stage("load_encoders"):
        _ = service.text_encoder, service.image_encoder
    with stages.stage("feature_extraction"):
        report = service.prepare()
    stats = report.stats

    liked = catalog.ids[:3]
    service.recommend(liked, 10)  # warm-up
    with stages.stage("recommend"):
        recommend_runs = stages.timed(lambda: service.recommend(liked, 10), args.repeats)
    targets = [r.item_id for r in service.recommend(liked, args.repeats + 1)]

    with stages.stage("explain_first"):
        first = service.explain(liked, targets[0], "fast")
    with stages.stage("explain_later"):  # other items: explanation-cache misses
        explain_runs = [stages.timed(lambda t=t: service.explain(liked, t, "fast"), 1)[0] for t in targets[1:]]

    image = next((item.image for item in catalog.items if item.image is not None), None)
    upload = lambda: service.recommend_for_upload(image=image, title=UPLOAD_TITLE, k=10)  # noqa: E731
    upload()  # warm-up
    with stages.stage("upload_recommend"):
        upload_runs = stages.timed(upload, args.repeats)

    features = service.features
    fusion = FusionConfig(n_items=len(catalog), text_dim=features.text.shape[1], image_dim=features.image.shape[1])
    frame = synthetic_interactions(catalog, args.users, args.seed)
    with stages.stage("training_inputs"):
        content = build_content(catalog, service.text_encoder, features.regions, features.has_image, fusion, None,
                                text_pooled=features.text, image_pooled=features.image, progress=False)
    train = TrainConfig(epochs=args.epochs, device=args.device, seed=args.seed, patience=args.epochs + 1)
    device_type = "cuda" if cuda else "cpu"
    with stages.stage("training"), autocast_probe(device_type) as seen:
        trained = fit(frame, catalog, content, fusion, train, progress=False)

    result: dict[str, Any] = {
        "benchmark": "gpu_check",
        "device": report.device,
        "catalog": catalog.name,
        "items": len(catalog),
        "with_image": report.with_image,
        "text_encoder": args.text_encoder,
        "image_encoder": args.image_encoder,
        "seconds": stages.seconds,
        "feature_extraction": {
            "text_items_per_s": round(stats.text_computed / stats.text_seconds, 2) if stats.text_seconds else None,
            "image_items_per_s": round(stats.image_computed / stats.image_seconds, 2) if stats.image_seconds else None,
            "text_computed": stats.text_computed, "text_s": round(stats.text_seconds, 3),
            "image_computed": stats.image_computed, "image_s": round(stats.image_seconds, 3),
        },
        "recommend": summary_ms(recommend_runs),
        "explain_fast": {"first_ms": round(stages.seconds["explain_first"] * 1000, 3),
                         "first_method": first.image_method, "later": summary_ms(explain_runs)},
        "upload_recommend": summary_ms(upload_runs),
        "training": {
            "epochs": len(trained.history),
            "epoch_s": [round(h["seconds"], 3) for h in trained.history],
            "users": args.users, "interactions": len(frame),
            "precision": train.precision,
            # What the forward passes saw; on CPU "auto" means fp32.
            "bf16_autocast": any(enabled and dtype == "torch.bfloat16" for enabled, dtype in seen),
            "val_ndcg@20": round(trained.history[-1]["val_ndcg@20"], 4) if trained.history else None,
        },
        "repeats": args.repeats,
        "seed": args.seed,
        "machine": machine_facts(args),
    }
    if cuda:
        result["cuda_peak_mib"] = stages.peak_mib
        result["cuda_max_memory_allocated_mib"] = max(stages.peak_mib.values())
    emit(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
