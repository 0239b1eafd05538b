"""Audio and video encoders: segment layout, keyframe pooling, the packaged aisfx weights, the feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recsys_core.config import AudioEncoderConfig, ImageEncoderConfig, VideoEncoderConfig
from recsys_core.data.catalog import load_catalog_folder
from recsys_core.encoders.audio import BLOCK_FRAMES, HOP, SAMPLE_RATE, segment_times
from recsys_core.encoders.build import build_audio_encoder, build_image_encoder, build_video_encoder
from recsys_core.encoders.sequence import TimeSteps, attention_weights, masked_pool
from tests.conftest import make_tiny_service


def _tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_a_30_s_clip_gives_back_to_back_segments_covering_it() -> None:
    encoder = build_audio_encoder(AudioEncoderConfig(model="tiny-random"))
    steps = encoder.encode(_tone(30.0))
    assert len(steps) == 13  # 1292 spectrogram frames in blocks of 100
    assert steps.starts_s[1] == pytest.approx(100 * HOP / SAMPLE_RATE)
    assert float(steps.ends_s[0] - steps.starts_s[0]) == pytest.approx(BLOCK_FRAMES * HOP / SAMPLE_RATE)
    assert float(steps.ends_s[-1]) >= 30.0  # the last block is padded, never dropped
    assert torch.equal(steps.weights, torch.ones(13))


def test_half_overlapping_segments_as_the_package_cuts_them() -> None:
    encoder = build_audio_encoder(AudioEncoderConfig(model="tiny-random", hop_fraction=0.5))
    steps = encoder.encode(_tone(30.0))
    assert len(steps) == 25 and steps.starts_s[1] == pytest.approx(50 * HOP / SAMPLE_RATE)


def test_a_clip_shorter_than_one_block_is_one_padded_segment() -> None:
    encoder = build_audio_encoder(AudioEncoderConfig(model="tiny-random"))
    for seconds in (0.01, 1.0):
        steps = encoder.encode(_tone(seconds))
        assert len(steps) == 1 and torch.isfinite(steps.vectors).all()


def test_audio_must_be_decoded_at_the_encoder_rate() -> None:
    encoder = build_audio_encoder(AudioEncoderConfig(model="tiny-random"))
    with pytest.raises(ValueError, match="44100 Hz"):
        encoder.encode(_tone(1.0), sample_rate=22050)


def test_segment_times_follow_the_hop() -> None:
    starts, ends = segment_times(3, 25)
    assert starts.tolist() == pytest.approx([0.0, 25 * HOP / SAMPLE_RATE, 50 * HOP / SAMPLE_RATE])
    assert (ends - starts).tolist() == pytest.approx([BLOCK_FRAMES * HOP / SAMPLE_RATE] * 3)


def test_masked_pool_is_the_weighted_mean_of_the_kept_steps_and_zero_when_none_are() -> None:
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 3.0]])
    weights = torch.tensor([1.0, 1.0, 2.0])
    pooled = masked_pool(vectors, weights, torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]))
    assert pooled[0].tolist() == pytest.approx([7 / 4, 7 / 4])
    assert pooled[1].tolist() == [1.0, 0.0]
    assert pooled[2].tolist() == [0.0, 0.0]


def test_attention_gives_an_odd_frame_out_less_weight() -> None:
    frames = torch.tensor([[1.0, 0.1], [1.0, 0.0], [0.9, 0.1], [-1.0, 0.0]])  # the last one: a black/fade frame
    weights = attention_weights(frames, temperature=0.1)
    assert float(weights.sum()) == pytest.approx(1.0)
    assert int(weights.argmin()) == 3


def test_video_encoder_reads_keyframes_through_the_image_encoder(tmp_path: Path) -> None:
    from recsys_core.data.media import MediaLimits
    from tests.media_fixtures import write_clip

    clip = write_clip(tmp_path / "c.webm", 3.0, fps=8, with_audio=False)
    image = build_image_encoder(ImageEncoderConfig(model="tiny-random", image_size=64))
    video = build_video_encoder(VideoEncoderConfig(min_frames=4, max_frames=6), image)
    steps = video.encode(video.decode(clip, limits=MediaLimits()))
    assert isinstance(steps, TimeSteps) and len(steps) == 4  # 3 s at 1 frame/s, at least 4
    assert steps.vectors.shape[1] == image.dim
    assert steps.starts_s.tolist() == pytest.approx([0.375, 1.125, 1.875, 2.625], abs=0.07)
    assert float(steps.weights.sum()) == pytest.approx(1.0)


def test_media_features_are_cached_by_file_content(tiny_media_catalog_dir: Path, tmp_path: Path) -> None:
    catalog = load_catalog_folder(tiny_media_catalog_dir)
    first = make_tiny_service(catalog, tmp_path / "f")
    report = first.prepare()
    assert (report.stats.audio_computed, report.stats.video_computed) == (5, 1)  # 4 tracks + the clip's soundtrack
    assert report.with_audio == 5 and report.with_video == 1
    again = make_tiny_service(catalog, tmp_path / "f").prepare()
    assert (again.stats.audio_computed, again.stats.audio_cached, again.stats.video_cached) == (0, 5, 1)
    a, b = first.features, make_tiny_service(catalog, tmp_path / "f")
    b.prepare()
    assert torch.equal(a.audio.pooled, b.features.audio.pooled)
    assert a.audio.steps[0] is not None and a.audio.steps[5] is None  # "plain" has no audio


def test_an_undecodable_track_leaves_the_item_without_audio(tiny_media_catalog_dir: Path, tmp_path: Path) -> None:
    track = tiny_media_catalog_dir / "media" / "t1.ogg"
    data = track.read_bytes()
    catalog = load_catalog_folder(tiny_media_catalog_dir)  # its header was fine when the catalog loaded
    track.write_bytes(data[: len(data) // 3])  # then the file broke
    service = make_tiny_service(catalog, tmp_path / "f")
    report = service.prepare()
    assert report.stats.audio_failed == 1
    assert not bool(service.features.audio.present[1]) and bool(service.features.audio.present[0])


def test_packaged_aisfx_weights_load_offline_and_tell_sounds_apart() -> None:
    """Integration: the real encoder from the aisfx wheel (weights_only loading, no network)."""
    pytest.importorskip("aisfx")
    encoder = build_audio_encoder(AudioEncoderConfig())
    assert encoder.dim == 512 and encoder.weights_id.startswith("aisfx")
    low, low2, noise = encoder.encode(_tone(5.0, 220.0)), encoder.encode(_tone(5.0, 233.0)), \
        encoder.encode(np.random.default_rng(0).uniform(-0.5, 0.5, 5 * SAMPLE_RATE).astype(np.float32))
    assert low.vectors.shape == (3, 512) and (low.vectors >= 0).all()  # 5 s = 3 blocks; ReLU outputs
    cos = torch.nn.functional.cosine_similarity
    assert float(cos(low.pooled, low2.pooled, dim=0)) > float(cos(low.pooled, noise.pooled, dim=0))
