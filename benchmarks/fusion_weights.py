"""How the text/image weights of the zero-shot score affect genre agreement on a catalog.

For every item with genres, use it alone as the profile and measure the share of its top-10
recommendations that share at least one genre with it (leave-one-out), for a grid of weights.
Genre agreement favours text (genres are part of the item text), so it undervalues the visual
signal: the default takes the largest image weight within 0.02 of the best score.

    python benchmarks/fusion_weights.py --json bench-out/fusion.json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402
from recsys_core.cli_args import add_catalog_arguments  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_catalog_arguments(parser, only=("catalog", "data_root", "data_dir"))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--weights", default="1.0,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.0", help="text weights to try")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    torch.set_num_threads(args.threads)
    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.config import ServiceConfig, ZeroShotConfig
    from recsys_core.serving.index import ExactIndex
    from recsys_core.service import RecommenderService
    from recsys_core.serving.zeroshot import ZeroShotModel

    catalog = resolve_catalog(args.catalog, data_root=args.data_root)
    service = RecommenderService(catalog, ServiceConfig(cache_dir=args.data_dir / "features"))
    service.prepare()
    features = service.features
    genres = [set(item.genres) for item in catalog.items]
    with_genre = [i for i, g in enumerate(genres) if g]
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
    chosen = min((w for w, v in results.items() if v >= best - 0.02), key=float)
    out = {"catalog": catalog.name, "items_with_genres": len(with_genre), "k": args.k,
           "genre_agreement_at_k_by_text_weight": results, "chance": round(chance, 4),
           "best": best, "suggested_text_weight": float(chosen)}
    emit(out, args.json)


if __name__ == "__main__":
    main()
