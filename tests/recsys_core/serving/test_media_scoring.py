"""Audio and video in the zero-shot score and its explanations: masking, exact splits, step attributions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_core.config import ZeroShotConfig
from recsys_core.data.catalog import load_catalog_folder
from recsys_core.encoders.features import CatalogFeatures, ExtractionStats, SequenceFeatures
from recsys_core.encoders.sequence import TimeSteps, attention_weights
from recsys_core.errors import InvalidInputError
from recsys_core.serving.explain_media import attribute_steps, delete_steps
from recsys_core.serving.zeroshot import ZeroShotModel
from tests.conftest import make_tiny_service
from tests.media_fixtures import write_tone

STATS = ExtractionStats(0, 0, 0, 0, 0, 0.0, 0.0)


def _steps(vectors: torch.Tensor, weights: torch.Tensor | None = None) -> TimeSteps:
    n = vectors.shape[0]
    times = torch.arange(n, dtype=torch.float32)
    return TimeSteps(vectors, times, times + 1, weights if weights is not None else torch.ones(n))


def _features(n: int = 5, *, audio_steps=None, video_steps=None, seed: int = 0) -> CatalogFeatures:
    g = torch.Generator().manual_seed(seed)

    def seq(steps):
        if steps is None:
            return None
        dim = next(s for s in steps if s is not None).vectors.shape[1]
        pooled = torch.stack([s.pooled if s is not None else torch.zeros(dim) for s in steps])
        return SequenceFeatures(pooled, torch.tensor([s is not None for s in steps]), tuple(steps), "k")

    return CatalogFeatures(item_ids=tuple(f"i{i}" for i in range(n)), text=torch.randn(n, 6, generator=g),
                           image=torch.randn(n, 4, generator=g), has_image=torch.ones(n, dtype=torch.bool),
                           regions=None, text_key="t", image_key="i", stats=STATS, audio=seq(audio_steps),
                           video=seq(video_steps))


def _random_steps(n_items: int, dim: int, missing: set[int], seed: int = 1) -> list[TimeSteps | None]:
    g = torch.Generator().manual_seed(seed)
    return [None if i in missing else _steps(torch.randn(3, dim, generator=g) + 2.0) for i in range(n_items)]


def test_a_text_and_image_catalog_keeps_its_layout_and_version() -> None:
    plain = ZeroShotModel(_features(), ZeroShotConfig())
    assert plain.modalities == ("text", "image") and plain.dim == 10
    # The new weights do not enter the version of a catalog without audio/video: caches stay valid.
    assert ZeroShotModel(_features(), ZeroShotConfig(audio_weight=0.3)).version == plain.version


def test_missing_audio_is_masked_not_zero_filled() -> None:
    steps = _random_steps(5, 8, missing={3})
    with_audio = ZeroShotModel(_features(audio_steps=steps), ZeroShotConfig())
    plain = ZeroShotModel(_features(), ZeroShotConfig())
    # The catalog mean is taken over the items that have audio, not over a zero placeholder.
    present = torch.stack([s.pooled for s in steps if s is not None])
    assert torch.allclose(with_audio.means["audio"], present.mean(0))
    # The item without audio: its audio block is exactly zero, so its score is its text + image score.
    block = with_audio.blocks["audio"]
    assert torch.count_nonzero(with_audio.item_vectors[3, block]) == 0
    query = with_audio.profile([0, 1])
    parts = with_audio.modality_scores(query, torch.tensor([3]))
    assert float(parts.audio[0]) == 0.0
    assert float(with_audio.item_vectors[3] @ query) == pytest.approx(
        float(plain.item_vectors[3] @ plain.profile([0, 1])))
    # A profile of items without audio has no audio direction: audio then counts for nobody.
    assert torch.count_nonzero(with_audio.profile([3])[block]) == 0


def test_the_parts_add_up_to_the_score_with_every_modality() -> None:
    audio = _random_steps(5, 8, missing={4})
    video = _random_steps(5, 4, missing={0, 1}, seed=2)
    model = ZeroShotModel(_features(audio_steps=audio, video_steps=video), ZeroShotConfig())
    query = model.profile([0, 2], disliked=[1])
    parts = model.modality_scores(query, torch.arange(5))
    total = parts.text + parts.image + parts.audio + parts.video
    assert torch.allclose(total, model.item_vectors @ query, atol=1e-6)
    # history_contributions still split the (like-only) score exactly over the liked items.
    query = model.profile([0, 2, 3])
    split = model.history_contributions([0, 2, 3], 4)
    assert float(split.sum()) == pytest.approx(float(model.item_vectors[4] @ query), abs=1e-6)


def test_an_upload_with_audio_only_is_scored_on_audio_alone() -> None:
    audio = _random_steps(5, 8, missing=set())
    model = ZeroShotModel(_features(audio_steps=audio), ZeroShotConfig())
    query = model.embed_new(None, None, audio=audio[2].pooled)
    scores = model.item_vectors @ query
    parts = model.modality_scores(query, torch.arange(5))
    assert torch.allclose(scores, parts.audio) and int(scores.argmax()) == 2
    assert float(scores[2]) == pytest.approx(ZeroShotConfig().audio_weight, rel=1e-5)


def test_the_one_segment_the_score_depends_on_gets_the_top_attribution() -> None:
    """A clip whose segments are all the catalog's average sound except one: only that one moves the score."""
    dim = 8
    mean_sound = torch.full((dim,), 2.0)
    signal = torch.zeros(dim)
    signal[3] = 5.0
    target = _steps(torch.stack([mean_sound] * 6 + [mean_sound + signal] + [mean_sound] * 5))
    liked = _steps(torch.stack([mean_sound + signal] * 3))
    # A third item that puts the catalog's mean sound exactly at mean_sound (the centre of every cosine).
    other = _steps((3 * mean_sound - liked.pooled - target.pooled)[None])
    model = ZeroShotModel(_features(3, audio_steps=[liked, target, other]), ZeroShotConfig())
    query = model.profile([0])
    fn, steps = model.sequence_score_fn(query, 1, "audio")
    attr = attribute_steps(fn, len(steps), samples=8)
    assert int(np.argmax(attr.values)) == 6
    part = float(model.modality_scores(query, torch.tensor([1])).audio[0])
    assert attr.values.sum() == pytest.approx(part, abs=1e-5)  # Shapley values add up to the audio part
    assert attr.part == pytest.approx(part, abs=1e-6) and abs(attr.delta) < 1e-5
    # Deleting it masks the audio part out of the score entirely; deleting any other segment changes nothing.
    full = float(model.item_vectors[1] @ query)
    assert delete_steps(fn, len(steps), [6]) == pytest.approx(full - part, abs=1e-5)
    assert delete_steps(fn, len(steps), [0, 1]) == pytest.approx(full, abs=1e-5)


def test_a_scorer_that_sees_only_one_keyframe_gives_it_the_whole_video_part() -> None:
    dim = 4
    mean_frame = torch.ones(dim)
    distinct = torch.tensor([1.0, 4.0, 1.0, -2.0])
    frames = torch.stack([mean_frame, mean_frame, distinct, mean_frame])
    target = TimeSteps(frames, torch.arange(4.0), torch.arange(4.0), attention_weights(frames, 0.1))
    liked = _steps(torch.stack([distinct, distinct]))
    filler = _steps((3 * mean_frame - liked.pooled - target.pooled)[None])  # the catalog mean: the average frame
    model = ZeroShotModel(_features(3, video_steps=[liked, target, filler]), ZeroShotConfig())
    query = model.profile([0])
    fn, steps = model.sequence_score_fn(query, 1, "video")
    attr = attribute_steps(fn, len(steps), samples=8)
    part = float(model.modality_scores(query, torch.tensor([1])).video[0])
    assert int(np.argmax(np.abs(attr.values))) == 2
    assert attr.values[2] == pytest.approx(part, abs=1e-5)
    assert np.abs(np.delete(attr.values, 2)).max() < 1e-5


def test_attributions_are_reproducible() -> None:
    audio = _random_steps(4, 8, missing=set())
    model = ZeroShotModel(_features(4, audio_steps=audio), ZeroShotConfig())
    fn, steps = model.sequence_score_fn(model.profile([0]), 1, "audio")
    first, second = attribute_steps(fn, len(steps), samples=5), attribute_steps(fn, len(steps), samples=5)
    assert np.array_equal(first.values, second.values)


def test_no_steps_to_attribute_where_the_item_or_the_catalog_lacks_the_modality() -> None:
    model = ZeroShotModel(_features(3, audio_steps=_random_steps(3, 8, missing={2})), ZeroShotConfig())
    query = model.profile([0])
    assert model.sequence_score_fn(query, 2, "audio") is None
    assert model.sequence_score_fn(query, 1, "video") is None


# -- through the service (tiny encoders, a real media catalog folder) --------------------------------------------
@pytest.fixture
def media_service(tiny_media_catalog_dir: Path, tmp_path: Path):
    service = make_tiny_service(load_catalog_folder(tiny_media_catalog_dir), tmp_path / "features")
    service.prepare()
    return service


def test_explanations_of_audio_and_video_add_up(media_service) -> None:
    explanation = media_service.explain(["t0"], "t1")
    assert explanation.audio_segments and not explanation.video_frames
    assert sum(s.attribution for s in explanation.audio_segments) == pytest.approx(explanation.audio_score, abs=1e-5)
    assert explanation.other_score == pytest.approx(0.0, abs=1e-5)  # text + image + audio + video = score
    api = explanation.to_api()
    assert sum(api["score_parts"].values()) == pytest.approx(api["score"], abs=1e-4)
    assert set(api["audio_segments"][0]) == {"start_s", "end_s", "attribution"}
    # t2 has no video: nothing to attribute over, however much the profile has.
    assert media_service.explain(["clip"], "t2").to_api()["video_frames"] == []


def test_a_video_item_gets_frame_attributions_and_a_heatmap_in_its_top_frame(tiny_media_catalog_dir: Path,
                                                                             tmp_path: Path) -> None:
    from tests.media_fixtures import write_clip

    write_clip(tiny_media_catalog_dir / "media" / "clip2.webm", 2.0, fps=8, size=(48, 64), with_audio=False)  # other frames
    rows = (tiny_media_catalog_dir / "items.jsonl").read_text()
    rows += '{"item_id": "clip2", "title": "Clip two", "video": "media/clip2.webm"}\n'
    (tiny_media_catalog_dir / "items.jsonl").write_text(rows)
    service = make_tiny_service(load_catalog_folder(tiny_media_catalog_dir), tmp_path / "features")
    service.prepare()
    explanation = service.explain(["clip"], "clip2")
    frames = explanation.video_frames
    assert len(frames) == 4
    assert sum(f.attribution for f in frames) == pytest.approx(explanation.video_score, abs=1e-5)
    with_heat = [f for f in frames if f.heatmap is not None]
    assert len(with_heat) == 1 and with_heat[0] is max(frames, key=lambda f: abs(f.attribution))
    assert with_heat[0].heatmap.min() >= 0 and with_heat[0].heatmap.max() <= 1


def test_an_audio_upload_finds_its_own_track_first_and_explains_which_seconds_matched(media_service,
                                                                                      tiny_media_catalog_dir) -> None:
    track = tiny_media_catalog_dir / "media" / "t2.ogg"
    found = media_service.recommend_for_upload(image=None, audio=str(track), k=3)
    assert found[0].item_id == "t2" and found[0].has_audio
    explanation = media_service.explain_upload(image=None, audio=str(track), item_id="t3")
    assert explanation.upload_audio_segments and explanation.audio_segments
    assert sum(s.attribution for s in explanation.upload_audio_segments) == pytest.approx(explanation.audio_score,
                                                                                        abs=1e-5)


def test_a_bad_audio_upload_is_refused_with_the_reason(media_service, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("not a sound")
    with pytest.raises(InvalidInputError, match="suffix"):
        media_service.recommend_for_upload(image=None, audio=str(bad))
    broken = write_tone(tmp_path / "b.ogg", 2.0)
    broken.write_bytes(broken.read_bytes()[:200])
    with pytest.raises(InvalidInputError):
        media_service.recommend_for_upload(image=None, audio=str(broken))


def test_an_audio_upload_on_a_catalog_without_audio_says_so(tiny_service, tmp_path: Path) -> None:
    clip = write_tone(tmp_path / "x.ogg", 1.0)
    with pytest.raises(InvalidInputError, match="has no audio"):
        tiny_service.recommend_for_upload(image=None, audio=str(clip))
    # With a title too, the title is used and the clip is checked but matches nothing.
    assert tiny_service.recommend_for_upload(image=None, audio=str(clip), title="chess", k=2)
