"""Are the explanations true to the model? Deletion tests and a model-randomisation check.

For N (profile, recommended item) pairs (profile = 1-3 random catalog items, item = one of its top-5
recommendations, seeded):

- tokens: delete (replace by PAD) the top 20% of tokens by attribution and, separately, a random 20%
  (averaged over several draws); ``token_deletion_ratio`` = mean score drop of the top-attributed
  deletions / mean drop of the random ones;
- regions: the same on a 7x7 grid of the image the CNN sees, cells replaced by the baseline (0 after
  normalisation = mid-grey), ranked by the heatmap's mean per cell: ``region_deletion_ratio``;
- timing: median seconds of a ``fast`` explanation (tokens + Grad-CAM) over all pairs and of a
  ``thorough`` one (more IG steps + occlusion) over the first ``--n-thorough`` pairs;
- sanity: re-initialise the encoders' weights (Adebayo et al., 2018) and report the Spearman rank
  correlation between the original and the randomised attributions (should be far from 1).

``--modality audio`` / ``--modality video`` run the same deletion test over time instead (a catalog
with audio or video, e.g. ``--catalog media``): profile and item are drawn among the items that have
the modality, the top 20% of the item's segments / keyframes by attribution are left out of its
pooled vector (and, separately, a random 20%), and ``deletion_ratio`` = mean score drop of the top
deletions / mean drop of the random ones. ``upload_p50_seconds_30s`` times a fast explanation of an
uploaded 30 s clip (decode + encode + attributions) against catalog items.

    python benchmarks/faithfulness.py --n 200 --json bench-out/faithfulness.json
    python benchmarks/faithfulness.py --catalog media --modality audio --n 200 --json bench-out/faithfulness-audio.json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import copy
import logging
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit  # noqa: E402
from recsys_core.cli_args import add_catalog_arguments  # noqa: E402

log = logging.getLogger("benchmarks.faithfulness")


def spearman(a, b) -> float:
    import warnings

    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # constant input (e.g. an all-zero Grad-CAM) is reported as 0 below
        value = spearmanr(a, b).statistic
    return float(value) if value == value else 0.0  # NaN (constant input) -> 0


def reinitialise(module) -> None:
    """Fresh random weights everywhere (every submodule that knows how to reset itself)."""
    import torch

    torch.manual_seed(1234)
    for sub in module.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
        if hasattr(sub, "running_mean") and sub.running_mean is not None:
            sub.running_mean.zero_()
            sub.running_var.fill_(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="number of (profile, recommended item) pairs")
    parser.add_argument("--n-thorough", type=int, default=20, help="pairs also explained with the thorough method")
    parser.add_argument("--n-sanity", type=int, default=20, help="pairs for the model-randomisation check")
    parser.add_argument("--fraction", type=float, default=0.2, help="share of tokens / regions deleted")
    parser.add_argument("--random-draws", type=int, default=5, help="random deletions averaged per pair")
    add_catalog_arguments(parser, only=("catalog", "data_root", "data_dir", "text_encoder", "image_encoder"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--modality", choices=("text-image", "audio", "video"), default="text-image",
                        help="text-image: tokens and regions; audio / video: segments / keyframes")
    parser.add_argument("--n-upload", type=int, default=10, help="audio: explanations of an uploaded 30 s clip timed")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.modality != "text-image":
        emit(media_faithfulness(args), args.json)
        return

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(args.threads)
    from recsys_core.serving.explain import explain_image, explain_text, heatmap_cells, mask_regions, pad_tokens, text_forward, \
        text_inputs

    rng = random.Random(args.seed)
    catalog, service = prepared_service(args)
    explainer = service.explainer
    text_encoder, image_encoder = explainer.text_encoder, explainer.image_encoder
    pad_id = text_encoder.tokenizer.pad_token_id
    grid = 7

    pairs = []
    while len(pairs) < args.n:
        liked = rng.sample(catalog.ids, rng.randint(1, 3))
        recs = service.recommend(liked, 5)
        pairs.append((liked, recs[rng.randrange(len(recs))].item_id))

    token_top, token_random, region_top, region_random = [], [], [], []
    fast_seconds, thorough_seconds, deltas = [], [], []
    stored = []
    for i, (liked, item_id) in enumerate(tqdm(pairs, desc="explain + delete", unit="pair")):
        explanation = service.explain(liked, item_id, "fast")
        fast_seconds.append(explanation.seconds)
        deltas.append(explanation.delta)
        inputs = service.explanation_inputs(liked, item_id)
        if i < args.n_thorough:
            thorough_seconds.append(service.explain(liked, item_id, "thorough").seconds)
        with torch.no_grad():
            # Tokens.
            tin = text_inputs(text_encoder, inputs.text)
            forward = text_forward(text_encoder, inputs.text_score_fn)
            base = float(forward(tin.input_ids, tin.attention_mask)[0])
            candidates = torch.nonzero(~tin.special).flatten().tolist()
            m = max(1, round(args.fraction * len(candidates)))
            scores = explanation.text.token_scores
            top = sorted(candidates, key=lambda p: -scores[p])[:m]
            token_top.append(base - float(forward(pad_tokens(tin, top, pad_id), tin.attention_mask)[0]))
            token_random.append(statistics.fmean(
                base - float(forward(pad_tokens(tin, rng.sample(candidates, m), pad_id), tin.attention_mask)[0])
                for _ in range(args.random_draws)))
            # Regions.
            if inputs.image is not None and explanation.image_heatmap is not None:
                pixels = image_encoder.preprocess([inputs.image])

                def image_score(px):
                    return float(inputs.image_score_fn(image_encoder(px)[1])[0])

                base_img = image_score(pixels)
                cells = heatmap_cells(explanation.image_heatmap, grid)
                k = max(1, round(args.fraction * grid * grid))
                top_cells = np.argsort(-cells)[:k].tolist()
                region_top.append(base_img - image_score(mask_regions(pixels, top_cells, grid)))
                region_random.append(statistics.fmean(
                    base_img - image_score(mask_regions(pixels, rng.sample(range(grid * grid), k), grid))
                    for _ in range(args.random_draws)))
        if i < args.n_sanity:
            stored.append((inputs, explanation))

    # Model randomisation: same inputs, re-initialised encoder weights.
    random_text, random_image = copy.deepcopy(text_encoder), copy.deepcopy(image_encoder)
    reinitialise(random_text.model)
    reinitialise(random_image.backbone)
    token_corr, region_corr = [], []
    for inputs, explanation in tqdm(stored, desc="randomisation check", unit="pair"):
        steps = explainer.config.fast_steps
        attr = explain_text(random_text, inputs.text, inputs.text_score_fn, n_steps=steps,
                            internal_batch_size=explainer.config.internal_batch_size)
        keep = [p for p, s in enumerate(explanation.text.token_scores) if s != 0.0 or attr.token_scores[p] != 0.0]
        token_corr.append(spearman([explanation.text.token_scores[p] for p in keep], [attr.token_scores[p] for p in keep]))
        if inputs.image is not None and explanation.image_heatmap is not None:
            heat, _ = explain_image(random_image, inputs.image, inputs.image_score_fn, method="fast",
                                    config=explainer.config)
            region_corr.append(spearman(heatmap_cells(explanation.image_heatmap, grid), heatmap_cells(heat, grid)))

    def ratio(top, rnd):
        return round(statistics.fmean(top) / statistics.fmean(rnd), 3) if rnd and statistics.fmean(rnd) != 0 else None

    out = {
        "catalog": catalog.name,
        "n": len(pairs),
        "fraction_deleted": args.fraction,
        "token_deletion_ratio": ratio(token_top, token_random),
        "region_deletion_ratio": ratio(region_top, region_random),
        "token_drop_top_mean": round(statistics.fmean(token_top), 5),
        "token_drop_random_mean": round(statistics.fmean(token_random), 5),
        "region_pairs": len(region_top),
        "region_drop_top_mean": round(statistics.fmean(region_top), 5) if region_top else None,
        "region_drop_random_mean": round(statistics.fmean(region_random), 5) if region_random else None,
        "p50_seconds_fast": round(statistics.median(fast_seconds), 3),
        "p95_seconds_fast": round(float(np.percentile(fast_seconds, 95)), 3),
        "p50_seconds_thorough": round(statistics.median(thorough_seconds), 3) if thorough_seconds else None,
        "n_thorough": len(thorough_seconds),
        "ig_delta_median": round(statistics.median(deltas), 6),
        "randomisation_spearman_tokens": round(statistics.fmean(token_corr), 3) if token_corr else None,
        "randomisation_spearman_regions": round(statistics.fmean(region_corr), 3) if region_corr else None,
        "n_sanity": len(stored),
        "threads": args.threads,
        "fast_method": f"LayerIntegratedGradients ({explainer.config.fast_steps} steps) + LayerGradCam",
        "thorough_method": f"LayerIntegratedGradients ({explainer.config.thorough_steps} steps) + Occlusion "
                           f"({explainer.config.occlusion_window}px patches)",
        "torch_version": torch.__version__,
    }
    emit(out, args.json)


def prepared_service(args):
    """The catalog and a prepared service with the benchmark's encoders, on the CPU (both tests share it)."""
    from recsys_core.config import ImageEncoderConfig, ServiceConfig, TextEncoderConfig
    from recsys_core.data.adapters import resolve_catalog
    from recsys_core.service import RecommenderService

    catalog = resolve_catalog(args.catalog, data_root=args.data_root)
    config = ServiceConfig(text=TextEncoderConfig(model=args.text_encoder), image=ImageEncoderConfig(model=args.image_encoder),
                           device="cpu", cache_dir=args.data_dir / "features")
    service = RecommenderService(catalog, config)
    service.prepare()
    return catalog, service


def media_faithfulness(args) -> dict:
    """The deletion test over audio segments or video keyframes (see the module docstring)."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    torch.set_num_threads(args.threads)
    from recsys_core.serving.explain_media import delete_steps

    name = args.modality
    rng = random.Random(args.seed)
    catalog, service = prepared_service(args)
    model = service.active_model
    has = [item.item_id for item in catalog.items
           if (item.audio_source if name == "audio" else item.video) is not None]
    if len(has) < 4:
        raise SystemExit(f"catalog {catalog.name!r} has {len(has)} items with {name}; the test needs at least 4")
    pairs = []
    while len(pairs) < args.n:
        liked = rng.sample(has, rng.randint(1, min(3, len(has) - 1)))
        recs = [r for r in service.recommend(liked, 20) if r.item_id in set(has)][:5]
        if recs:
            pairs.append((liked, recs[rng.randrange(len(recs))].item_id))
    top_drops, random_drops, seconds, steps_count, deltas, positive = [], [], [], [], [], []
    for liked, item_id in tqdm(pairs, desc=f"{name}: explain + delete", unit="pair"):
        explanation = service.explain(liked, item_id, "fast")
        seconds.append(explanation.seconds)
        deltas.append(explanation.steps_delta)
        values = np.array([s.attribution for s in (explanation.audio_segments if name == "audio"
                                                   else explanation.video_frames)])
        query = model.profile(catalog.check_ids(liked))
        found = model.sequence_score_fn(query, catalog.index_of(item_id), name)
        if found is None or len(values) < 2:
            continue
        fn, steps = found
        count = len(steps)
        m = max(1, round(args.fraction * count))
        base = delete_steps(fn, count, [])
        order = np.argsort(-values).tolist()
        top_drops.append(base - delete_steps(fn, count, order[:m]))
        random_drops.append(statistics.fmean(base - delete_steps(fn, count, rng.sample(range(count), m))
                                             for _ in range(args.random_draws)))
        steps_count.append(count)
        positive.append(values.sum() > 0)  # the modality raised this item's score: "why was it recommended"
    upload_seconds = _upload_timing(service, catalog, has, args) if name == "audio" and args.n_upload else []
    mean_random = statistics.fmean(random_drops) if random_drops else 0.0
    pos_top = [d for d, p in zip(top_drops, positive) if p]
    pos_random = [d for d, p in zip(random_drops, positive) if p]
    return {
        "catalog": catalog.name,
        "modality": name,
        "n": len(top_drops),
        "fraction_deleted": args.fraction,
        "deletion_ratio": round(statistics.fmean(top_drops) / mean_random, 3) if mean_random else None,
        "drop_top_mean": round(statistics.fmean(top_drops), 5),
        "drop_random_mean": round(mean_random, 5),
        # The same over the pairs whose modality part is positive (the modality helped recommend the item).
        "deletion_ratio_positive_part": round(statistics.fmean(pos_top) / statistics.fmean(pos_random), 3)
        if pos_random and statistics.fmean(pos_random) else None,
        "n_positive_part": len(pos_top),
        "steps_median": statistics.median(steps_count),
        "p50_seconds_fast": round(statistics.median(seconds), 4),
        "p95_seconds_fast": round(float(np.percentile(seconds, 95)), 4),
        "shapley_delta_median": round(statistics.median(deltas), 8),
        "upload_p50_seconds_30s": round(statistics.median(upload_seconds), 3) if upload_seconds else None,
        "upload_n": len(upload_seconds),
        "threads": args.threads,
        "method": f"ShapleyValueSampling over {'segments' if name == 'audio' else 'keyframes'} "
                  f"({service.explain_config.fast_steps} permutations), deletion = left out of the pooled vector",
        "torch_version": torch.__version__,
    }


def _upload_timing(service, catalog, has, args) -> list[float]:
    """Wall seconds of explaining an uploaded 30 s clip (a catalog track looped to 30 s, written as WAV)."""
    import tempfile
    import wave

    import numpy as np

    from recsys_core.data.media import decode_audio

    source = catalog.get(has[0]).audio_source
    clip = decode_audio(source, sample_rate=44100)
    samples = np.resize(clip.samples, 30 * 44100)
    timings = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "upload-30s.wav"
        with wave.open(str(path), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(44100)
            out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
        for item_id in has[1: 1 + args.n_upload]:
            start = time.perf_counter()
            service.explain_upload(image=None, audio=str(path), item_id=item_id, method="fast")
            timings.append(time.perf_counter() - start)
    return timings


if __name__ == "__main__":
    main()
