"""How the modality weights of the zero-shot score affect leave-one-out agreement on a catalog.

Text and image (a catalog without audio, e.g. the games catalog): for every item with genres, use it alone
as the profile and measure the share of its top-10 recommendations that share at least one genre with it
(leave-one-out), for a grid of text weights (image weight = 1 - text weight). Genre agreement favours text
(genres are part of the item text), so it undervalues the visual signal: the default takes the largest
image weight within 0.02 of the best score.

    python benchmarks/fusion_weights.py --json bench-out/fusion.json

Audio and video (a catalog with audio, e.g. ``--catalog media``): for every item with a ``collection`` (the
game a track belongs to), the share of its top-10 (leave-one-out, profile = that item alone, the whole
catalog searched) that belong to the same collection, for audio alone, text alone and image alone (one
weight > 0, the others 0), and for a grid of audio weights (``--audio-weights``) with text and image at
their defaults (``ZeroShotConfig``) and video at 0; genre agreement (as above) beside it where items have
genres. ``chance`` is the expected share for a random list (for each item, the share of the other items in
its collection, averaged), computed exactly as for genres.

    python benchmarks/fusion_weights.py --catalog media --json bench-out/fusion-media.json

Why collection agreement with the product's text cannot choose the audio weight: on the media catalog the
text *names the game* ("Music from the soundtrack of <game>, composed by <composer>"), and every track of a
game shows the game's icon as its image, so text alone and image alone find a track's collection almost by
definition. Any audio weight can then only lower the combined figure: maximising it (or staying within a
tolerance of its best) measures how little audio disturbs a label lookup, not what audio is worth. So the
weight is chosen on a **leak-free control** (``audio_weight_grid_text_blind``): the same grid, with each
item's text re-encoded after its collection name and its tags (composer, album) are removed from it, and
the image weight at 0 (the icon *is* the collection label). There text and audio both have to earn their
agreement from content (titles, genres, descriptions; the sound).

Rule (audio): the **smallest** audio weight of the grid whose collection agreement on the leak-free control
is within 0.02 (the tolerance of the image rule) of that control's best. Smallest, not
largest: this metric is not tilted against audio (the collection is partly a property of the sound: one
composer, one production), so there is no known bias to correct, and among near-ties the smaller weight
disturbs least what the control leaves out, the product's text and image, which do carry the game, a real
signal for someone who likes a game's music. ``audio_weight_grid`` (the product's text and image) shows
what the chosen weight costs in same-collection neighbours, and ``audio_weight_grid_changed_vs_0`` the share
of each top-10 that the weight brings in (items absent from the list without audio).

Rule (video): the same, with ``--video-weights`` on the items with a video only (the pool is the catalog's
clips, k = min(--k, (clips - 1) // 2) so that a list never holds every other clip), text/image at their
defaults and audio at the suggested audio weight; it is applied only when at least
``--min-video-queries`` clips have another clip of their collection. Otherwise the JSON says so, and
``suggested_video_weight`` is the image weight: the keyframes are read by the same image encoder as the
item's image (on the media catalog a clip's image is one of its own frames), so with nothing to measure a
clip's frames count as much as a still.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import dataclasses
import logging
import re
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402
from recsys_core.cli_args import add_catalog_arguments  # noqa: E402

log = logging.getLogger("benchmarks.fusion_weights")

TOLERANCE = 0.02


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="benchmarks/fusion_weights.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_catalog_arguments(parser, only=("catalog", "data_root", "data_dir", "text_encoder", "image_encoder",
                                        "device"))
    parser.add_argument("--audio-encoder", default="aisfx", choices=("aisfx", "tiny-random"),
                        help="audio encoder (a catalog with audio); tiny-random for a smoke test (default: aisfx)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--weights", default="1.0,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.0",
                        help="text weights to try (catalog without audio)")
    parser.add_argument("--audio-weights", default="0,0.25,0.5,1,2,4",
                        help="audio weights to try, text/image at their defaults (catalog with audio)")
    parser.add_argument("--video-weights", default="0,0.1,0.2,0.5,1",
                        help="video weights to try on the clips (catalog with video)")
    parser.add_argument("--min-video-queries", type=int, default=10,
                        help="clips with a same-collection clip needed before the video weight is chosen by data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()

    import torch

    torch.set_num_threads(args.threads)
    from recsys_core.config import AudioEncoderConfig, ImageEncoderConfig, ServiceConfig, TextEncoderConfig
    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.service import RecommenderService

    catalog = resolve_catalog(args.catalog, data_root=args.data_root)
    config = ServiceConfig(text=TextEncoderConfig(model=args.text_encoder),
                           image=ImageEncoderConfig(model=args.image_encoder),
                           audio=AudioEncoderConfig(model=args.audio_encoder), device=args.device,
                           cache_dir=args.data_dir / "features")
    service = RecommenderService(catalog, config)
    service.prepare()
    if service.features.audio is None:
        out = genre_mode(args, catalog, service.features)
    else:
        out = media_mode(args, catalog, service)
    out["seconds"] = round(time.perf_counter() - start, 1)
    emit(out, args.json)
    return 0


# -- text and image: genre agreement (the games catalog) ----------------------------------------------
def genre_mode(args: argparse.Namespace, catalog, features) -> dict:
    from recsys_core.config import ZeroShotConfig
    from recsys_core.serving.index import ExactIndex
    from recsys_core.serving.zeroshot import ZeroShotModel

    genres = [set(item.genres) for item in catalog.items]
    with_genre = [i for i, g in enumerate(genres) if g]
    if not with_genre:
        raise SystemExit(f"catalog {catalog.name!r} has no genres and no audio: nothing to agree on")
    # Chance level: the expected share for a random top-k list.
    chance = sum(sum(bool(genres[j] & genres[i]) for j in range(len(catalog)) if j != i) / (len(catalog) - 1)
                 for i in with_genre) / len(with_genre)
    results = {}
    for text_weight in [float(w) for w in args.weights.split(",")]:
        model = ZeroShotModel(features, ZeroShotConfig(text_weight=text_weight, image_weight=1.0 - text_weight))
        index = ExactIndex(model.item_vectors)
        shares = []
        for i in with_genre:
            found = index.search(model.profile([i]), args.k, exclude=[i]).indices.tolist()
            shares.append(sum(bool(genres[j] & genres[i]) for j in found) / args.k)
        results[f"{text_weight:.2f}"] = round(sum(shares) / len(shares), 4)
    best = max(results.values())
    chosen = min((w for w, v in results.items() if v >= best - TOLERANCE), key=float)
    return {"catalog": catalog.name, "items_with_genres": len(with_genre), "k": args.k,
            "genre_agreement_at_k_by_text_weight": results, "chance": round(chance, 4),
            "best": best, "suggested_text_weight": float(chosen)}


# -- audio and video: collection agreement (the media catalog) -----------------------------------------
Same = Callable[[int, int], bool]


def neighbours(features, config, queries: Sequence[int], k: int, pool: Sequence[int] | None = None
               ) -> dict[int, list[int]]:
    """Each query's top-k catalog rows (the query itself left out) under a ZeroShotModel with ``config``,
    searched over ``pool`` (row indices; None: the whole catalog)."""
    from recsys_core.serving.index import ExactIndex
    from recsys_core.serving.zeroshot import ZeroShotModel

    model = ZeroShotModel(features, config)
    rows = list(range(model.item_vectors.shape[0])) if pool is None else list(pool)
    position = {row: p for p, row in enumerate(rows)}
    index = ExactIndex(model.item_vectors[rows])
    return {i: [rows[j] for j in index.search(model.profile([i]), k, exclude=[position[i]]).indices.tolist()]
            for i in queries}


def agreement(lists: dict[int, list[int]], queries: Sequence[int], same: Same, k: int) -> float | None:
    """Mean share of each query's top-k that agrees with it (``same``)."""
    if not queries:
        return None
    return round(sum(sum(same(i, j) for j in lists[i]) / k for i in queries) / len(queries), 4)


def chance_level(queries: Sequence[int], pool: Sequence[int], same: Same) -> float | None:
    """Expected share for a random list drawn from ``pool`` (the query left out)."""
    if not queries:
        return None
    return round(sum(sum(same(i, j) for j in pool if j != i) / (len(pool) - 1) for i in queries) / len(queries), 4)


def choose_smallest(grid: dict[str, float]) -> tuple[float, float]:
    """(the smallest weight within TOLERANCE of the grid's best, the best)."""
    best = max(grid.values())
    return min(float(w) for w, v in grid.items() if v >= best - TOLERANCE), best


def blind_text(item) -> str:
    """The item's text with its collection name and its tags (composer, album, ...) removed: text that cannot
    name the game."""
    text = item.text
    for word in sorted({item.collection, *item.tags} - {""}, key=len, reverse=True):
        text = re.sub(re.escape(word), "", text, flags=re.IGNORECASE)
    return re.sub(r"[ \t]+", " ", text)


def weights_list(spec: str) -> list[float]:
    values = [float(w) for w in spec.split(",") if w.strip()]
    if not values or min(values) < 0:
        raise SystemExit(f"weights {spec!r}: give comma-separated values >= 0")
    return values


def media_mode(args: argparse.Namespace, catalog, service) -> dict:
    from recsys_core.config import ZeroShotConfig
    from recsys_core.encoders.features import FeatureCache, extract_text_features, file_hash

    features = service.features
    items = catalog.items
    n = len(items)
    k = max(1, min(args.k, n - 1))  # a list can hold at most the other n - 1 items
    collections = [item.collection.strip() for item in items]
    genres = [set(item.genres) for item in items]
    same_collection: Same = lambda i, j: bool(collections[i]) and collections[i] == collections[j]  # noqa: E731
    same_genre: Same = lambda i, j: bool(genres[i] & genres[j])  # noqa: E731
    with_collection = [i for i in range(n) if collections[i]]
    with_genre = [i for i in range(n) if genres[i]]
    if not with_collection:
        raise SystemExit(f"catalog {catalog.name!r} has audio but no item has a collection: nothing to agree on")
    queries = sorted(set(with_collection) | set(with_genre))
    everything = list(range(n))
    defaults = ZeroShotConfig()
    tw, iw = defaults.text_weight, defaults.image_weight

    def cfg(text=0.0, image=0.0, audio=0.0, video=0.0) -> ZeroShotConfig:
        return ZeroShotConfig(text_weight=text, image_weight=image, audio_weight=audio, video_weight=video)

    last_lists: dict[int, list[int]] = {}

    def score(feats, config) -> tuple[float | None, float | None]:
        lists = neighbours(feats, config, queries, k)
        last_lists.clear()
        last_lists.update(lists)
        return agreement(lists, with_collection, same_collection, k), agreement(lists, with_genre, same_genre, k)

    # The leak-free control: text that cannot name the game (re-encoded; cached beside the real text).
    texts = [blind_text(item) for item in items]
    encoder = service.text_encoder
    cache = FeatureCache(args.data_dir / "features" / encoder.cache_key)
    blind_vectors, _, _ = extract_text_features(texts, encoder, cache)
    blind = dataclasses.replace(features, text=blind_vectors)
    example = next((i for i in with_collection if features.audio.present[i]), with_collection[0])

    alone = {"audio": score(features, cfg(audio=1.0)), "text": score(features, cfg(text=1.0)),
             "image": score(features, cfg(image=1.0)), "text_blind": score(blind, cfg(text=1.0))}
    if features.video is not None:
        alone["video"] = score(features, cfg(video=1.0))
    log.info("alone: %s", alone)
    collection_alone = {name: c for name, (c, _) in alone.items()}
    collection_alone["chance"] = chance_level(with_collection, everything, same_collection)
    genre_alone = {name: g for name, (_, g) in alone.items()}
    genre_alone["chance"] = chance_level(with_genre, everything, same_genre)

    grid, grid_genre, grid_blind, grid_blind_genre, changed = {}, {}, {}, {}, {}
    without_audio = neighbours(features, cfg(text=tw, image=iw), queries, k)
    for w in weights_list(args.audio_weights):
        key = f"{w:.2f}"
        grid[key], grid_genre[key] = score(features, cfg(text=tw, image=iw, audio=w))
        # Does the weight change the lists at all? Share of each top-k that audio weight 0 does not have.
        changed[key] = round(sum(len(set(last_lists[i]) - set(without_audio[i])) / k for i in queries)
                             / len(queries), 4)
        grid_blind[key], grid_blind_genre[key] = score(blind, cfg(text=tw, audio=w))
        log.info("audio weight %s: collection %.4f (text blind %.4f)", key, grid[key], grid_blind[key])
    audio_weight, blind_best = choose_smallest(grid_blind)
    grid_w = [float(w) for w in grid_blind]

    # Images: how many distinct image files a collection's items show (1.0: one icon per game).
    per_collection: dict[str, set[str]] = {}
    for i in with_collection:
        image = items[i].image
        if image is not None and image.is_file():
            per_collection.setdefault(collections[i], set()).add(file_hash(image))
    images_per_collection = (round(sum(map(len, per_collection.values())) / len(per_collection), 3)
                             if per_collection else None)

    video = video_section(args, items, features, collections, same_collection, audio_weight, tw, iw, cfg)
    video_weight = video["suggested_video_weight"]
    at = f"at_{k}"
    out = {
        "catalog": catalog.name,
        "mode": "media",
        "k": k,
        "items": n,
        "items_with_collection": len(with_collection),
        "collections": len(set(collections[i] for i in with_collection)),
        "items_with_audio": int(features.audio.present.sum()),
        "items_with_video": int(features.video.present.sum()) if features.video is not None else 0,
        "items_with_genres": len(with_genre),
        f"collection_agreement_{at}": collection_alone,
        f"genre_agreement_{at}": genre_alone if with_genre else None,
        "audio_weight_grid": grid,
        "audio_weight_grid_genre_agreement": grid_genre if with_genre else None,
        "audio_weight_grid_changed_vs_0": changed,
        "audio_weight_grid_text_blind": grid_blind,
        "audio_weight_grid_text_blind_genre_agreement": grid_blind_genre if with_genre else None,
        "grid_settings": {"audio_weight_grid": {"text_weight": tw, "image_weight": iw, "video_weight": 0.0},
                          "audio_weight_grid_text_blind": {"text_weight": tw, "image_weight": 0.0, "video_weight": 0.0,
                                                           "text": "collection name and tags removed, re-encoded"}},
        "text_blind_example": {"item_id": items[example].item_id, "text": items[example].text,
                               "text_blind": texts[example]},
        "distinct_images_per_collection": images_per_collection,
        "video": video,
        "suggested_audio_weight": audio_weight,
        "audio_rule": f"smallest audio weight whose text-blind collection agreement@{k} is within {TOLERANCE} of "
                      f"that control's best ({blind_best})",
        "audio_weight_at_grid_edge": audio_weight == max(grid_w) and len(grid_w) > 1,
        "suggested_audio_weight_cost": (round(max(grid.values()) - grid[f"{audio_weight:.2f}"], 4)),
        "suggested_video_weight": video_weight,
        "video_rule": video["rule"],
    }
    return out


def video_section(args, items, features, collections, same_collection: Same, audio_weight: float, tw: float,
                  iw: float, cfg) -> dict:
    """Collection agreement among the catalog's clips (see the module docstring)."""
    fallback = {"suggested_video_weight": iw,
                "rule": f"too few clips to measure: the image weight ({iw}), the same image encoder reads the frames"}
    if features.video is None:
        return {"clips": 0, "note": "the catalog has no video", **fallback}
    clips = [i for i in range(len(items)) if bool(features.video.present[i])]
    queries = [i for i in clips if collections[i]]
    with_mate = [i for i in queries if any(j != i and same_collection(i, j) for j in clips)]
    base = {"clips": len(clips), "clips_with_collection": len(queries), "clips_with_a_same_collection_clip":
            len(with_mate), "min_video_queries": args.min_video_queries}
    if len(clips) < 4 or not queries:
        return {**base, "note": f"{len(clips)} clips (with a collection: {len(queries)}): fewer than 4, not measured",
                **fallback}
    k = max(1, min(args.k, (len(clips) - 1) // 2))

    def score(config) -> float | None:
        return agreement(neighbours(features, config, queries, k, pool=clips), queries, same_collection, k)

    alone = {"video": score(cfg(video=1.0)), "text": score(cfg(text=1.0)), "image": score(cfg(image=1.0))}
    if bool(features.audio.present[clips].any()):
        alone["audio"] = score(cfg(audio=1.0))
    alone["chance"] = chance_level(queries, clips, same_collection)
    grid = {f"{w:.2f}": score(cfg(text=tw, image=iw, audio=audio_weight, video=w))
            for w in weights_list(args.video_weights)}
    out = {**base, "k": k, f"collection_agreement_at_{k}": alone, "video_weight_grid": grid,
           "grid_settings": {"text_weight": tw, "image_weight": iw, "audio_weight": audio_weight}}
    if len(with_mate) < args.min_video_queries:
        out["note"] = (f"only {len(with_mate)} of {len(clips)} clips have another clip of their collection "
                       f"(needs {args.min_video_queries}): too few to choose the video weight; figures for reference")
        return {**out, **fallback}
    chosen, best = choose_smallest(grid)
    return {**out, "suggested_video_weight": chosen,
            "rule": f"smallest video weight within {TOLERANCE} of the best clip collection agreement@{k} ({best})"}


if __name__ == "__main__":
    sys.exit(main())
