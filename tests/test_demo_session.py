"""The demo labelling session (benchmarks/demo_session.py) and the fine-tune it measures.

The benchmark itself starts the app and runs for minutes; these tests check its parts that need
no app (the annotators' rule, the command line), and the property it relies on, with tiny encoders:
labels that follow a genre rule give a hybrid candidate that ranks held-out likes better than the
zero-shot base, and labels that are pure noise leave the base's settings in place.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys

import numpy as np
import pandas as pd

from recsys_core.training.finetune import FinetuneConfig, finetune
from recsys_core.training.finetune_hybrid import CVGrid
from tests.conftest import REPO_ROOT, load_benchmark


def _genres(catalog) -> dict[str, set[str]]:
    return {item.item_id: set(item.genres) for item in catalog.items}


def _session(catalog, like, contexts) -> pd.DataFrame:
    """Every other item judged for every context, ``like(context, item)`` deciding (aggregated labels)."""
    rows = []
    for context in contexts:
        for item in catalog.ids:
            if item not in context:
                rows.append({"context_ids": tuple(sorted(context)), "item_id": item,
                             "label": 1.0 if like(context, item) else 0.0})
    return pd.DataFrame(rows)


def _split(catalog, seed: int = 0) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Every one- and two-item profile of the tiny catalog, dealt (seeded) into 20 to train on and the rest held out."""
    contexts = [(i,) for i in catalog.ids] + list(itertools.combinations(catalog.ids, 2))
    random.Random(seed).shuffle(contexts)
    return contexts[:20], contexts[20:]


def _finetune(service, tmp_path, examples, heldout, name: str):
    result = finetune(examples=examples, heldout=heldout, catalog=service.catalog, features=service.features,
                      text_encoder=service.text_encoder, image_encoder=service.image_encoder,
                      base_model=service.active_model, base_dir=None, out_dir=tmp_path / name, cache_dir=None,
                      config=FinetuneConfig(min_labels=10, min_heldout=5))
    return result, json.loads((tmp_path / name / "metrics.json").read_text()), \
        json.loads((tmp_path / name / "config.json").read_text())


def test_labels_that_follow_a_genre_rule_beat_the_zero_shot_base_on_held_out_likes(tiny_service, tmp_path) -> None:
    genres = _genres(tiny_service.catalog)
    train, held = _split(tiny_service.catalog)

    def rule(context, item):  # the benchmark's annotators' rule, without their noise
        return bool(set().union(*(genres[i] for i in context)) & genres[item])

    result, metrics, config = _finetune(tiny_service, tmp_path, _session(tiny_service.catalog, rule, train),
                                        _session(tiny_service.catalog, rule, held), "genre")
    base, cand = result.gate.base["likes_ndcg@20"], result.gate.candidate["likes_ndcg@20"]
    # Tiny random encoders rank by noise; the genre rule is learnable from the labels (and the genre Gram).
    assert cand >= 1.05 * base, (base, cand)
    assert result.gate.passed, result.gate.reason
    chosen = [row for row in metrics["selection"] if row["chosen"]]
    assert len(chosen) == 1 and not chosen[0]["base_settings"] and chosen[0]["paired_t_vs_base"] >= CVGrid().min_t
    assert config["hybrid"]["content_share"] < 1.0
    assert config["hybrid"]["selected_on"] == "labels (cross-validation)"


def test_labels_that_are_pure_noise_keep_the_base_settings(tiny_service, tmp_path) -> None:
    """A few dozen random likes must not move the candidate away from the zero-shot model's settings."""
    train, held = _split(tiny_service.catalog)
    for seed in range(2):
        rng = np.random.default_rng(seed)
        noise = {}

        def coin(context, item):
            return noise.setdefault((context, item), bool(rng.random() < 0.5))

        result, metrics, config = _finetune(tiny_service, tmp_path, _session(tiny_service.catalog, coin, train),
                                            _session(tiny_service.catalog, coin, held), f"noise-{seed}")
        chosen = [row for row in metrics["selection"] if row["chosen"]]
        assert len(chosen) == 1 and chosen[0]["base_settings"], (seed, chosen)
        assert config["hybrid"]["content_share"] == 1.0
        assert (config["zeroshot"]["text_weight"], config["zeroshot"]["image_weight"]) == (0.8, 0.2)
        # Content share 1: the candidate ranks exactly as the base, so it cannot be worse on any held-out profile.
        assert result.gate.candidate["likes_ndcg@20"] == result.gate.base["likes_ndcg@20"]
        assert result.gate.passed


def test_the_annotators_rule_reads_genres_only() -> None:
    session = load_benchmark("demo_session")

    class Items:  # what /item answers: the genres shown on the task card
        def predict(self, item_id, api_name):
            assert api_name == "/item"
            return {"genres": {"a": ["BoardGame"], "b": ["BoardGame", "LogicGame"], "c": ["LogicGame"],
                               "d": ["ArcadeGame"], "e": []}[item_id]}

    genres = session.Genres(Items())
    assert session.rule_likes(genres, ["a"], "b")  # shares BoardGame
    assert session.rule_likes(genres, ["a", "c"], "b")
    assert not session.rule_likes(genres, ["a", "c"], "d")
    assert not session.rule_likes(genres, ["a"], "e")  # no genre: a dislike


def test_demo_session_help() -> None:
    result = subprocess.run([sys.executable, "benchmarks/demo_session.py", "--help"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for option in ("--profiles", "--overlap", "--noise", "--features-cache", "Protocol"):
        assert option in result.stdout


def test_the_ceilings_rule_scores_shared_genres_and_breaks_ties_below_one_genre() -> None:
    """benchmarks/demo_ceiling.py's ``rule``: score = genres shared with the profile's items (plus a tie-break < 1e-3)."""
    ceiling = load_benchmark("demo_ceiling")
    genres = np.asarray([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32)
    rule = ceiling._GenreRule(genres, seed=0)
    scores = (rule.item_vectors @ rule.profile([0, 2])).numpy()  # the profile has genres 0 and 1
    assert np.floor(scores).tolist() == [1, 2, 1, 0, 0]
    assert (scores - np.floor(scores) < 1e-3).all() and len(set(scores.round(8))) == 5


def test_demo_draws_simulates_the_campaign_and_the_rule(tiny_service) -> None:
    """benchmarks/demo_draws.py's sessions: the campaign's tasks, answered by the genre rule (or a coin), in the
    frame the aggregation reads."""
    from recsys_core.labels.aggregation import aggregate

    draws = load_benchmark("demo_draws")
    assert draws.parse_draws("1-3,7") == [1, 2, 3, 7]
    genres = _genres(tiny_service.catalog)
    frame = draws.simulate(tiny_service, draw=0, profiles=4, noise=0.0)
    assert frame["is_control"].sum() == 4 and len(frame) > 4  # one control per profile, the rest to judge
    assert all(item not in context for context, item, control in
               zip(frame["context_ids"], frame["item_id"], frame["is_control"]) if not control)
    assert set(frame["annotator"]) == set(draws.ANNOTATORS)
    for context, item, label in zip(frame["context_ids"], frame["item_id"], frame["label"]):
        shares = bool(set().union(*(genres[i] for i in context)) & genres[item])
        assert label == ("like" if shares else "dislike")
    assert 0 < len(aggregate(frame).examples) <= len(frame) - 4  # controls score annotators, never become labels
    # A coin on every task but the controls, which stay right; another draw is another campaign.
    coin = draws.simulate(tiny_service, draw=0, profiles=4, noise=0.0, rule="random")
    assert (coin.loc[coin["is_control"], "label"] == "like").all()
    assert list(coin["item_id"]) == list(frame["item_id"])
    assert list(draws.simulate(tiny_service, draw=1, profiles=4, noise=0.0)["context_ids"]) != list(frame["context_ids"])
