"""Feature-extraction throughput (items/s) of the text, image, audio and video encoders over a whole catalog, in-process.

    .venv/bin/python benchmarks/feature_throughput.py --json features.json
    .venv/bin/python benchmarks/feature_throughput.py --catalog media --json throughput-media.json
    .venv/bin/python benchmarks/feature_throughput.py --text-encoder tiny-random --image-encoder tiny-random --repeats 1

Loads the catalog and the encoders (timed), warms each encoder up with one batch, then runs the app's own
``extract_text_features`` / ``extract_image_features`` over every item with an empty in-memory cache
(``FeatureCache(None)``) ``--repeats`` times and reports the median rate (distinct texts / image files
encoded per second; duplicates are encoded once, as in the app). Image timings include hashing,
reading and decoding the files, as in the app.

A catalog with audio (items' own audio, else their video's soundtrack) or video (e.g. ``--catalog media``)
also gets ``audio`` / ``video``: the app's ``extract_sequence_features`` over the catalog's audio sources /
clips, the same way (empty in-memory cache, one untimed warm-up file, median of ``--repeats``), timed with
hashing, decoding (PyAV, resampling to 44.1 kHz; keyframe seeking) and encoding. ``items_per_s`` counts
distinct files encoded, ``audio_s_per_wall_s`` / ``video_s_per_wall_s`` the seconds of media they hold
(what the encoder read: at most ``AudioEncoderConfig.max_seconds`` of a track; a clip's duration) per
second of wall time. Both are null when the catalog has none. The video encoder is the image encoder on
keyframes, so its figures depend on ``--image-encoder``.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_app_args, add_common_args, emit, machine_facts, setup  # noqa: E402

log = logging.getLogger("benchmarks.feature_throughput")


def build_parser() -> argparse.ArgumentParser:
    from recsys_core.config import ImageEncoderConfig, ServiceConfig, TextEncoderConfig

    p = argparse.ArgumentParser(
        prog="benchmarks/feature_throughput.py",
        description="Text, image, audio and video feature-extraction throughput over a catalog, cold cache, in-process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_app_args(p)
    p.add_argument("--repeats", type=int, default=3, help="timed passes over the catalog (median reported)")
    p.add_argument("--text-batch-size", type=int, default=TextEncoderConfig.batch_size)
    p.add_argument("--image-batch-size", type=int, default=ImageEncoderConfig.batch_size)
    p.add_argument("--max-length", type=int, default=TextEncoderConfig.max_length, help="text tokenizer max_length")
    p.add_argument("--no-regions", dest="keep_regions", action="store_false",
                   default=ServiceConfig.cache_feature_maps,
                   help="do not keep the image feature maps (the app keeps them by default)")
    p.add_argument("--audio-encoder", default="aisfx", choices=("aisfx", "tiny-random"),
                   help="audio encoder for a catalog with audio (tiny-random for a smoke test)")
    add_common_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup(args)
    if args.repeats < 1:
        raise SystemExit("--repeats must be >= 1")

    t0 = time.perf_counter()
    import timm  # noqa: F401  (imports timed apart from model loading)
    import torch  # noqa: F401
    import torchvision  # noqa: F401
    import transformers  # noqa: F401

    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.config import ImageEncoderConfig, LimitsConfig, TextEncoderConfig
    from recsys_core.device import resolve_device
    from recsys_core.encoders.build import build_image_encoder, build_text_encoder
    from recsys_core.encoders.features import FeatureCache, extract_image_features, extract_text_features
    from recsys_core.data.images import load_image

    import_s = time.perf_counter() - t0

    max_pixels = LimitsConfig.max_image_pixels
    t0 = time.perf_counter()
    catalog = resolve_catalog(args.catalog, data_root=args.data_root, max_image_pixels=max_pixels)
    catalog_s = time.perf_counter() - t0
    texts = [item.text for item in catalog.items]
    paths = [item.image for item in catalog.items]
    image_paths = [p for p in paths if p is not None and p.is_file()]
    log.info("catalog %s: %d items, %d with an image file (%.2fs)", catalog.name, len(texts), len(image_paths), catalog_s)

    device = resolve_device(args.device)
    text_cfg = TextEncoderConfig(model=args.text_encoder, max_length=args.max_length, batch_size=args.text_batch_size)
    image_cfg = ImageEncoderConfig(model=args.image_encoder, batch_size=args.image_batch_size)
    t0 = time.perf_counter()
    text_encoder = build_text_encoder(text_cfg, device)
    text_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    image_encoder = build_image_encoder(image_cfg, device)
    image_load_s = time.perf_counter() - t0
    log.info("models loaded on %s: text %.2fs, image %.2fs (imports %.2fs)", device, text_load_s, image_load_s, import_s)

    # Token lengths (after truncation) explain most of the text speed.
    lengths = [len(ids) for ids in text_encoder.tokenizer(texts, truncation=True, max_length=text_cfg.max_length)["input_ids"]]
    truncated = sum(
        len(ids) > text_cfg.max_length for ids in text_encoder.tokenizer(texts, truncation=False)["input_ids"]
    )

    # Warm-up: one batch each (allocator, kernels, lazy init), not timed.
    t0 = time.perf_counter()
    text_encoder.encode(texts[: text_cfg.batch_size])
    if image_paths:
        image_encoder.encode([load_image(p, max_pixels=max_pixels, max_bytes=1 << 30)
                              for p in image_paths[: image_cfg.batch_size]], keep_regions=args.keep_regions)
    warmup_s = time.perf_counter() - t0

    text_runs, image_runs = [], []
    text_computed = image_computed = image_failed = 0
    for r in range(args.repeats):
        t0 = time.perf_counter()
        _, text_computed, _ = extract_text_features(texts, text_encoder, FeatureCache(None))
        text_runs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, _, _, image_computed, _, image_failed, _ = extract_image_features(
            paths, image_encoder, FeatureCache(None), args.keep_regions, max_pixels=max_pixels
        )
        image_runs.append(time.perf_counter() - t0)
        log.info("repeat %d/%d: text %.2fs, images %.2fs", r + 1, args.repeats, text_runs[-1], image_runs[-1])

    text_s = statistics.median(text_runs)
    image_s = statistics.median(image_runs)
    result = {
        "benchmark": "feature_throughput",
        "catalog": catalog.name,
        "items": len(texts),
        "text": {
            "encoder": args.text_encoder,
            "items_per_s": round(text_computed / text_s, 2) if text_s > 0 else None,
            "median_s": round(text_s, 3),
            "runs_s": [round(s, 3) for s in text_runs],
            "computed": text_computed,  # distinct texts actually encoded per pass
            "batch_size": text_cfg.batch_size,
            "max_length": text_cfg.max_length,
            "tokens_mean": round(statistics.fmean(lengths), 1) if lengths else None,
            "truncated_texts": truncated,
            "dim": text_encoder.dim,
        },
        "image": {
            "encoder": args.image_encoder,
            "items_per_s": round(image_computed / image_s, 2) if image_s > 0 else None,
            "median_s": round(image_s, 3),
            "runs_s": [round(s, 3) for s in image_runs],
            "computed": image_computed,  # distinct image files encoded per pass
            "failed": image_failed,
            "with_image": len(image_paths),
            "batch_size": image_cfg.batch_size,
            "image_size": image_cfg.image_size,
            "keep_regions": args.keep_regions,
            "dim": image_encoder.dim,
        },
        "model_load_s": round(text_load_s + image_load_s, 3),
        "text_load_s": round(text_load_s, 3),
        "image_load_s": round(image_load_s, 3),
        "import_s": round(import_s, 3),
        "catalog_load_s": round(catalog_s, 3),
        "warmup_s": round(warmup_s, 3),
        "repeats": args.repeats,
        "machine": machine_facts(args),
    }
    result.update(media_throughput(args, catalog, device, image_encoder))
    emit(result, args.json)
    return 0


def media_throughput(args: argparse.Namespace, catalog, device, image_encoder) -> dict:
    """``audio`` and ``video`` throughput (None where the catalog has none); see the module docstring."""
    from recsys_core.config import AudioEncoderConfig, VideoEncoderConfig
    from recsys_core.data.media import MediaLimits
    from recsys_core.encoders.build import build_audio_encoder, build_video_encoder
    from recsys_core.encoders.features import FeatureCache, extract_sequence_features

    limits = MediaLimits()
    out: dict = {"audio": None, "video": None}
    audio_sources = [item.audio_source for item in catalog.items]
    videos = [item.video for item in catalog.items]
    if any(p is not None for p in audio_sources):
        t0 = time.perf_counter()
        encoder = build_audio_encoder(AudioEncoderConfig(model=args.audio_encoder), device)
        load_s = time.perf_counter() - t0
        seconds_read: dict[Path, float] = {}

        def read_audio(path: Path):
            clip = encoder.decode(path, limits=limits)
            seconds_read[path] = min(len(clip.samples) / clip.sample_rate, encoder.config.max_seconds)
            return encoder.encode(clip.samples, clip.sample_rate)

        out["audio"] = time_sequence(args, "audio", audio_sources, read_audio, encoder.dim, seconds_read,
                                     extract_sequence_features, FeatureCache)
        out["audio"].update({"encoder": args.audio_encoder, "load_s": round(load_s, 3),
                             "hop_s": round(encoder.hop_frames * 1024 / 44100, 3), "dim": encoder.dim,
                             "with_own_audio": sum(item.audio is not None for item in catalog.items),
                             "from_video_soundtrack": sum(item.audio is None and item.audio_source is not None
                                                          for item in catalog.items)})
    if any(p is not None for p in videos):
        video_encoder = build_video_encoder(VideoEncoderConfig(), image_encoder)
        seconds_read = {}
        frame_counts: dict[Path, int] = {}

        def read_video(path: Path):
            frames = video_encoder.decode(path, limits=limits)
            seconds_read[path] = frames.duration_s
            frame_counts[path] = len(frames.frames)
            return video_encoder.encode(frames)

        out["video"] = time_sequence(args, "video", videos, read_video, video_encoder.dim, seconds_read,
                                     extract_sequence_features, FeatureCache)
        out["video"].update({"encoder": f"keyframes through {args.image_encoder}",
                             "keyframes_total": sum(frame_counts.values()),
                             "keyframes_per_s": (round(sum(frame_counts.values()) / out["video"]["median_s"], 2)
                                                 if out["video"]["median_s"] else None)})
    return out


def time_sequence(args: argparse.Namespace, kind: str, sources, read, dim: int, seconds_read: dict,
                  extract_sequence_features, FeatureCache) -> dict:
    """One untimed warm-up file, then ``--repeats`` cold passes of ``extract_sequence_features`` over ``sources``."""
    files = [p for p in sources if p is not None]
    t0 = time.perf_counter()
    try:
        read(files[0])
    except Exception as exc:  # an unreadable first file: the timed passes report it as failed
        log.warning("%s warm-up on %s failed: %s", kind, files[0], exc)
    warmup_s = time.perf_counter() - t0
    runs, computed, failed = [], 0, 0
    for r in range(args.repeats):
        seconds_read.clear()
        t0 = time.perf_counter()
        _, computed, _, failed, _ = extract_sequence_features(sources, read, dim, FeatureCache(None), kind)
        runs.append(time.perf_counter() - t0)
        log.info("repeat %d/%d: %s %.2fs (%d files)", r + 1, args.repeats, kind, runs[-1], computed)
    median_s = statistics.median(runs)
    media_s = sum(seconds_read.values())
    return {
        "items_per_s": round(computed / median_s, 2) if median_s > 0 else None,
        f"{kind}_s_per_wall_s": round(media_s / median_s, 2) if median_s > 0 else None,
        "median_s": round(median_s, 3),
        "runs_s": [round(s, 3) for s in runs],
        "computed": computed,  # distinct files encoded per pass
        "failed": failed,
        "with_" + kind: len(files),
        f"{kind}_seconds_total": round(media_s, 1),
        "warmup_s": round(warmup_s, 3),
    }


if __name__ == "__main__":
    sys.exit(main())
