"""``python -m recsys_core.train``: parse the command line once, train, write the checkpoint."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import torch

from recsys_core.cli_args import add_catalog_arguments
from recsys_core.model.checkpoint import fingerprint, save_checkpoint
from recsys_core.model.fusion import FusionConfig
from recsys_core.training import loop
from recsys_core.training.config import STRATEGIES, TrainConfig
from recsys_core.training.loop import default_val_mode, fit_for_split

log = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m recsys_core.train", description=loop.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="movielens-100k", choices=["movielens-100k"])
    add_catalog_arguments(parser, required=("data_root",), defaults={"catalog": None}, helps={
        "data_root": "the dataset folder: interactions (splits/*.csv or ratings.csv) and, for MovieLens, "
                     "items.csv + posters",
        "catalog": "a catalog folder in the generic format (items.csv + images) instead of the MovieLens "
                   "items under --data-root; interactions still come from --data-root",
        "device": "auto = CUDA when available (bf16 autocast there)"})
    parser.add_argument("--protocol", default="warm", choices=["warm", "cold-item"])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint folder")
    parser.add_argument("--model", default="hybrid", choices=["hybrid", "fusion"],
                        help="hybrid (default, the product's multimodal model): content + EASE with side information, "
                             "settings chosen on the protocol's validation split; fusion: the two-tower model "
                             "trained by gradient descent (the options below)")
    parser.add_argument("--strategy", default="frozen", choices=list(STRATEGIES),
                        help="frozen: encoders frozen (fast on CPU); top-layers: also train the top --text-layers "
                             "text blocks and the CNN head; lora: LoRA adapters (peft) on the top --text-layers text blocks")
    parser.add_argument("--text-layers", type=int, default=None,
                        help="top text blocks that train (top-layers default 1, lora default 2)")
    parser.add_argument("--lora-rank", type=int, default=TrainConfig.lora_rank)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto = bf16 autocast on CUDA, fp32 on the CPU")
    parser.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    parser.add_argument("--batch-users", type=int, default=TrainConfig.batch_users,
                        help="users per step, over all processes together (each of N processes takes 1/N of the rows)")
    parser.add_argument("--patience", type=int, default=TrainConfig.patience,
                        help="epochs without a better validation NDCG@20 before stopping")
    parser.add_argument("--modalities", default="both", choices=["both", "text", "image"])
    parser.add_argument("--fusion", default="transformer", choices=["transformer", "mean"])
    parser.add_argument("--no-ids", action="store_true", help="content only, no item-ID embedding")
    parser.add_argument("--dropout", type=float, default=None, help=f"model dropout (default {FusionConfig.dropout})")
    parser.add_argument("--id-dropout", type=float, default=None,
                        help="probability of dropping an item's ID part in training "
                             f"(default {FusionConfig.id_dropout})")
    parser.add_argument("--val-mode", default=None, choices=["warm", "cold-items"],
                        help="what early stopping watches; default: cold-items for --protocol cold-item, else warm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    args = parser.parse_args(argv)
    if args.model == "hybrid":
        _train_hybrid(args)
        return
    train = TrainConfig(epochs=args.epochs, seed=args.seed, strategy=args.strategy, batch_users=args.batch_users,
                        patience=args.patience, text_layers=args.text_layers or (2 if args.strategy == "lora" else 1),
                        lora_rank=args.lora_rank, device=args.device, precision=args.precision,
                        val_mode=args.val_mode or default_val_mode(args.protocol))
    fusion_options = {name: value for name, value in (("dropout", args.dropout), ("id_dropout", args.id_dropout))
                      if value is not None}
    from recsys_core.data.catalog import load_catalog_folder
    from recsys_core.training.distributed import runtime_for
    from recsys_core.data.splits import load_split

    runtime = runtime_for(train.device, train.precision)
    # Under N processes only the main one reports; the others speak up for warnings and errors.
    tag = f" [process {runtime.process_index}]" if runtime.num_processes > 1 else ""
    logging.basicConfig(level=logging.INFO if runtime.is_main else logging.WARNING,
                        format=f"%(asctime)s %(levelname)s %(name)s{tag}: %(message)s")
    log.info("%s", runtime.describe())
    torch.set_num_threads(args.threads)
    split = load_split(args.data_root, args.protocol)
    # No --catalog: fit_for_split loads the MovieLens items under data_root (and returns the catalog it used).
    catalog = load_catalog_folder(args.catalog) if args.catalog else None
    trained, catalog = fit_for_split(split, args.data_root, args.data_dir, catalog=catalog, modalities=args.modalities,
                                     fusion_kind=args.fusion, use_ids=not args.no_ids, train=train,
                                     text_encoder=args.text_encoder, image_encoder=args.image_encoder,
                                     runtime=runtime, **fusion_options)
    best = max(h["val_ndcg@20"] for h in trained.history)
    if runtime.is_main:  # every process holds the same model; one writes it
        save_checkpoint(trained, args.out, metrics={"best_val_ndcg@20": best, "protocol": args.protocol,
                                                    "processes": runtime.num_processes},
                        fingerprint_info=fingerprint(split.train, catalog),
                        encoders={"text": args.text_encoder, "image": args.image_encoder})
        log.info("saved %s (best val NDCG@20 %.4f, %.0f s, %d process(es))", args.out, best, trained.seconds,
                 runtime.num_processes)
    runtime.wait_for_everyone()
    runtime.close()


def _train_hybrid(args: argparse.Namespace) -> None:
    import time

    from recsys_core.config import ImageEncoderConfig, TextEncoderConfig, ZeroShotConfig
    from recsys_core.data.adapters import load_movielens_100k
    from recsys_core.data.catalog import load_catalog_folder
    from recsys_core.data.splits import load_split
    from recsys_core.encoders.features import encode_catalog
    from recsys_core.model.checkpoint import save_hybrid
    from recsys_core.serving.zeroshot import ZeroShotModel
    from recsys_core.training.hybrid import fit_hybrid, select_on_validation

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    split = load_split(args.data_root, args.protocol)
    catalog = load_catalog_folder(args.catalog) if args.catalog else load_movielens_100k(Path(args.data_root))
    features = encode_catalog(catalog, TextEncoderConfig(model=args.text_encoder),
                              ImageEncoderConfig(model=args.image_encoder), Path(args.data_dir) / "features",
                              device=args.device).features
    zs_config = ZeroShotConfig()
    zeroshot = ZeroShotModel(features, zs_config)
    selection = select_on_validation(args.data_root, args.protocol, catalog, zeroshot, seed=args.seed)
    fitted = fit_hybrid(split.train, catalog, zeroshot, selection.config, selection=selection, seed=args.seed,
                        started=started)
    save_hybrid(args.out, config=fitted.config, zeroshot=zs_config.to_dict(), collab=fitted.collab,
                item_ids=catalog.ids, frame=split.train,
                metrics={"best_val_ndcg@20": selection.ndcg, "protocol": args.protocol,
                         "selection": list(selection.table), "train_seconds": fitted.seconds},
                fingerprint_info=fingerprint(split.train, catalog),
                encoders={"text": args.text_encoder, "image": args.image_encoder})
    log.info("saved %s (hybrid, validation NDCG@20 %.4f, content share %.2f, %.0f s)", args.out, selection.ndcg,
             fitted.config.content_share, fitted.seconds)


if __name__ == "__main__":
    main()
