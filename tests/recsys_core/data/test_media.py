"""``recsys_core.data.media``: decoding every accepted audio/video format, keyframe sampling, and refusal of
anything that is not a safe, readable media file -- always as an ``InvalidInputError`` naming the file, the
problem and what is allowed, never a raw FFmpeg error.

All media are written by ``tests.media_fixtures`` with PyAV itself (tiny, deterministic); a format whose
encoder this PyAV build lacks is skipped with the reason.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recsys_core.data import media
from recsys_core.data.media import (
    AUDIO_SUFFIXES,
    VIDEO_SUFFIXES,
    AudioClip,
    MediaLimits,
    decode_audio,
    decode_video_frames,
    keyframe_times,
    probe_media,
)
from recsys_core.errors import InvalidInputError
from tests.media_fixtures import (
    has_encoder,
    level,
    missing_encoder,
    with_mp3_frame_count,
    write_clip,
    write_raw_mp4_claiming,
    write_tone,
    y4m_header_claiming,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
TONE_HZ = 440.0
SOUNDTRACK_HZ = 330.0
CLIP_FPS = 8  # frame times are multiples of 1/8 s, so keyframe times of a 2 s clip fall exactly on frames


def _refused(fn, *args, **kwargs) -> str:
    """The message of the InvalidInputError ``fn`` raises (exactly that type: no raw FFmpeg error gets out)."""
    with pytest.raises(InvalidInputError) as caught:
        fn(*args, **kwargs)
    assert type(caught.value) is InvalidInputError, type(caught.value)
    return str(caught.value)


def _dominant_hz(clip: AudioClip) -> float:
    spectrum = np.abs(np.fft.rfft(clip.samples * np.hanning(len(clip.samples))))
    return float(np.argmax(spectrum) * clip.sample_rate / len(clip.samples))


def _grey(image: Image.Image) -> int:
    """Background level of a fixture frame (its top-left corner, away from the moving square)."""
    return int(np.asarray(image.convert("L"))[1, 1])


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def tones(media_dir: Path) -> dict[str, Path]:
    """A 1 s 440 Hz tone in every audio format this build can write."""
    return {s: write_tone(media_dir / f"tone{s}", 1.0, sample_rate=22050, frequency=TONE_HZ)
            for s in AUDIO_SUFFIXES if missing_encoder(s) is None}


@pytest.fixture(scope="module")
def clips(media_dir: Path) -> dict[str, Path]:
    """A 2 s, 8 fps, 64x48 clip with a 330 Hz soundtrack in every video format this build can write."""
    return {s: write_clip(media_dir / f"clip{s}", 2.0, CLIP_FPS, (64, 48), True, frequency=SOUNDTRACK_HZ)
            for s in VIDEO_SUFFIXES if missing_encoder(s, video=True) is None}


def _tone(tones: dict[str, Path], suffix: str) -> Path:
    if suffix not in tones:
        pytest.skip(missing_encoder(suffix) or f"no {suffix} tone")
    return tones[suffix]


def _clip(clips: dict[str, Path], suffix: str) -> Path:
    if suffix not in clips:
        pytest.skip(missing_encoder(suffix, video=True) or f"no {suffix} clip")
    return clips[suffix]


# -- decoding every accepted format ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", AUDIO_SUFFIXES)
def test_decodes_each_audio_format(tones: dict[str, Path], suffix: str) -> None:
    path = _tone(tones, suffix)
    info = probe_media(path, "audio")
    assert info.kind == "audio" and info.has_audio and not info.has_video
    assert info.duration_s == pytest.approx(1.0, abs=0.05)
    assert info.sample_rate == (48000 if suffix == ".opus" else 22050)  # Opus only runs at 48 kHz and fractions

    clip = decode_audio(path, sample_rate=16000)
    assert clip.sample_rate == 16000
    assert clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert clip.duration_s == pytest.approx(1.0, abs=0.05)
    assert float(np.abs(clip.samples).max()) <= 1.0
    assert float(np.abs(clip.samples).max()) == pytest.approx(0.5, abs=0.1)  # stereo Vorbis averaged, not summed
    assert _dominant_hz(clip) == pytest.approx(TONE_HZ, abs=3)


def test_decode_audio_from_bytes_and_default_rate(tones: dict[str, Path]) -> None:
    path = tones[".wav"]
    clip = decode_audio(path.read_bytes(), name="song.wav")
    assert clip.sample_rate == 44100 and len(clip.samples) == pytest.approx(44100, abs=10)
    assert probe_media(path.read_bytes(), "audio").duration_s == pytest.approx(1.0)  # no name: no suffix check


@pytest.mark.parametrize("suffix", VIDEO_SUFFIXES)
def test_decodes_each_video_format(clips: dict[str, Path], suffix: str) -> None:
    path = _clip(clips, suffix)
    info = probe_media(path, "video")
    assert (info.kind, info.width, info.height, info.has_video, info.has_audio) == ("video", 64, 48, True, True)
    assert info.duration_s == pytest.approx(2.0, abs=0.05)

    frames = decode_video_frames(path, frames_per_second=2.0)  # round(2 s * 2) = 4 keyframes
    assert len(frames.frames) == 4 and (frames.width, frames.height) == (64, 48) and frames.has_audio
    assert frames.times_s == pytest.approx(keyframe_times(2.0, 4), abs=0.5 / CLIP_FPS)
    assert all(img.mode == "RGB" and img.size == (64, 48) for img in frames.frames)
    # Each keyframe is the frame at its time (frame index = time * fps), in order.
    expected = [level(round(t * CLIP_FPS), 16) for t in frames.times_s]
    assert [_grey(img) for img in frames.frames] == pytest.approx(expected, abs=12)


@pytest.mark.parametrize("suffix", VIDEO_SUFFIXES)
def test_soundtrack_of_a_video_through_decode_audio(clips: dict[str, Path], suffix: str) -> None:
    clip = decode_audio(_clip(clips, suffix), sample_rate=16000)
    assert clip.duration_s == pytest.approx(2.0, abs=0.05)
    assert _dominant_hz(clip) == pytest.approx(SOUNDTRACK_HZ, abs=3)
    # A video's soundtrack has a video's duration limit, not an audio file's.
    limits = MediaLimits(max_audio_seconds=0.5, max_video_seconds=10)
    assert decode_audio(clips[suffix], limits=limits).duration_s == pytest.approx(2.0, abs=0.05)


@pytest.mark.parametrize("codec", ["libvpx-vp9", "mpeg4"])
def test_other_video_codecs(media_dir: Path, codec: str) -> None:
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    suffix = ".webm" if codec.startswith("libvpx") else ".mp4"
    path = write_clip(media_dir / f"{codec}{suffix}", 1.0, CLIP_FPS, (64, 48), False, video_codec=codec)
    frames = decode_video_frames(path)
    assert len(frames.frames) == 4 and not frames.has_audio


def test_silence_is_fine(media_dir: Path) -> None:
    clip = decode_audio(write_tone(media_dir / "silence.flac", 0.5, amplitude=0.0))
    assert clip.duration_s == pytest.approx(0.5, abs=0.02) and not clip.samples.any()


def test_stereo_is_averaged_to_mono_without_clipping(media_dir: Path) -> None:
    """FFmpeg's own downmix adds 3 dB to in-phase stereo; averaging keeps a loud track in range and unclipped."""
    clip = decode_audio(write_tone(media_dir / "loud.wav", 0.5, amplitude=0.9, channels=2))
    assert float(np.abs(clip.samples).max()) == pytest.approx(0.9, abs=0.01)


def test_channels_and_sample_rate_are_checked(tones: dict[str, Path], media_dir: Path) -> None:
    stereo = write_tone(media_dir / "stereo.wav", 0.2, channels=2)
    assert _refused(probe_media, stereo, "audio", MediaLimits(max_channels=1)) == (
        "audio 'stereo.wav' has 2 audio channels; allowed: 1 to 1")
    assert _refused(decode_audio, tones[".wav"], limits=MediaLimits(max_sample_rate=16000)) == (
        "audio 'tone.wav' has a sample rate of 22,050 Hz; allowed: 1 to 16,000 Hz")


def test_max_seconds_decodes_only_the_start(tones: dict[str, Path]) -> None:
    clip = decode_audio(tones[".flac"], sample_rate=8000, max_seconds=0.25)
    assert len(clip.samples) == 2000
    assert len(decode_audio(tones[".flac"], sample_rate=8000, max_seconds=5).samples) == 8000  # past the end: all


# -- keyframes ---------------------------------------------------------------------------------------------------


def test_keyframe_times_are_interval_centres() -> None:
    assert keyframe_times(10.0, 4) == pytest.approx([1.25, 3.75, 6.25, 8.75])
    assert keyframe_times(3.0, 1) == [1.5]
    times = keyframe_times(7.3, 5)
    assert times[2] == pytest.approx(7.3 / 2)  # symmetric around the middle frame ...
    assert [a + b for a, b in zip(times, reversed(times))] == pytest.approx([7.3] * 5)
    assert 0 < times[0] and times[-1] < 7.3  # ... and never the first or last frame
    for bad in [(0.0, 4), (-1.0, 4), (float("nan"), 4), (5.0, 0)]:
        with pytest.raises(ValueError):
            keyframe_times(*bad)


def test_frame_count_is_clamped(clips: dict[str, Path]) -> None:
    path = _clip(clips, ".webm")
    assert len(decode_video_frames(path).frames) == 4  # 1 fps * 2 s = 2, raised to min_frames
    few = decode_video_frames(path, frames_per_second=8.0, min_frames=1, max_frames=3)
    assert len(few.frames) == 3 and few.times_s == pytest.approx(keyframe_times(few.duration_s, 3), abs=0.07)
    # More keyframes asked than the clip has frames: each distinct frame once, in order.
    many = decode_video_frames(path, frames_per_second=30.0, min_frames=40, max_frames=40)
    assert 1 <= len(many.frames) <= 16
    assert list(many.times_s) == sorted(set(many.times_s))
    greys = [_grey(img) for img in many.frames]
    assert greys == sorted(greys)


def test_frames_are_resized_keeping_aspect(clips: dict[str, Path]) -> None:
    path = _clip(clips, ".mp4")
    assert {img.size for img in decode_video_frames(path, max_side=32).frames} == {(32, 24)}
    small = decode_video_frames(path, max_side=10)
    assert {img.size for img in small.frames} == {(10, 8)} and (small.width, small.height) == (64, 48)


@pytest.mark.parametrize("suffix", VIDEO_SUFFIXES)
def test_long_clip_by_seeking_matches_one_pass(media_dir: Path, suffix: str, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """Past 30 s the frames are found by seeking; they must be the ones a full decode finds."""
    if missing_encoder(suffix, video=True, with_audio=False):
        pytest.skip(missing_encoder(suffix, video=True, with_audio=False))
    path = write_clip(media_dir / f"long{suffix}", 32.0, 2, (32, 24), False)
    with caplog.at_level("INFO", logger="recsys_core.data.media"):
        seeked = decode_video_frames(path.read_bytes(), name=path.name, frames_per_second=0.25)  # seeks a BytesIO
    assert "seeking failed" not in caplog.text
    monkeypatch.setattr(media, "_SEEK_ABOVE_S", 1e9)
    one_pass = decode_video_frames(path, frames_per_second=0.25)
    assert len(seeked.frames) == 8
    assert seeked.times_s == pytest.approx(one_pass.times_s)
    assert seeked.times_s == pytest.approx(keyframe_times(32.0, 8), abs=0.26)
    assert [_grey(i) for i in seeked.frames] == pytest.approx([_grey(i) for i in one_pass.frames], abs=2)
    assert [_grey(i) for i in seeked.frames] == pytest.approx([level(round(t * 2), 64) for t in seeked.times_s],
                                                              abs=12)


def test_truncated_video_returns_the_frames_it_has(clips: dict[str, Path]) -> None:
    data = _clip(clips, ".webm").read_bytes()
    frames = decode_video_frames(data[: len(data) // 2], name="half.webm")  # header (2 s) intact, half the clusters
    assert 1 <= len(frames.frames) < 4
    assert list(frames.times_s) == sorted(frames.times_s)


# -- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".flac", ".mp3", ".opus"])
def test_truncated_audio_is_refused(tones: dict[str, Path], suffix: str) -> None:
    data = _tone(tones, suffix).read_bytes()
    message = _refused(decode_audio, data[: len(data) // 2], name=f"half{suffix}")
    assert f"'half{suffix}'" in message and "truncated" in message


def test_truncated_mp4_is_refused(clips: dict[str, Path]) -> None:
    data = _clip(clips, ".mp4").read_bytes()  # PyAV writes the index (moov) last: the first half has none
    for fn in (decode_audio, decode_video_frames):
        message = _refused(fn, data[: len(data) // 2], name="half.mp4")
        assert "'half.mp4'" in message and "truncated" in message


def test_wrong_suffix_is_refused(tones: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "a.txt"
    text.write_bytes(tones[".wav"].read_bytes())
    assert _refused(probe_media, text, "audio") == (
        "audio 'a.txt' has suffix '.txt'; allowed: .ogg, .oga, .opus, .mp3, .wav, .flac")
    assert "allowed: .ogg" in _refused(decode_audio, text)
    assert "has no suffix" in _refused(decode_audio, tones[".wav"].read_bytes(), name="noext")
    # Bytes: the suffix check uses the name when there is one.
    assert "suffix '.txt'" in _refused(probe_media, text.read_bytes(), "audio", name="a.txt")


def test_png_renamed_ogg_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "a.ogg"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(fake, "PNG")
    message = _refused(decode_audio, fake)
    assert message.startswith("audio 'a.ogg' could not be opened") and "not a media file" in message


@pytest.mark.parametrize("junk", [
    b"hello, this is a text file\n" * 40,
    np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    b"OggS" + bytes(200),
    b"RIFF\xff\xff\xff\x7fWAVEfmt " + bytes(64),
    b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(300),
    b"\x1aE\xdf\xa3" + bytes(300),  # an EBML (WebM) magic and nothing else
    b"\x00\x00\x00\x18ftypmp42" + bytes(300),
])
def test_not_media_at_all_is_refused(junk: bytes) -> None:
    for fn, name in ((decode_audio, "x.ogg"), (decode_video_frames, "x.webm")):
        message = _refused(fn, junk, name=name)
        assert f"'{name}'" in message
    assert "'upload'" in _refused(probe_media, junk, "audio")  # no name: the file is "upload"


def test_y4m_is_not_an_allowed_container() -> None:
    """FFmpeg has a demuxer for a great many formats (playlists among them); only ours may be opened."""
    message = _refused(probe_media, y4m_header_claiming(30000, 30000), "video", name="bomb.mp4")
    assert "could not be opened" in message and "Ogg, WebM, MP4" in message


def test_zero_length_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    assert _refused(decode_audio, empty) == "audio 'empty.mp3' is empty (0 bytes)"
    assert _refused(decode_video_frames, b"", name="e.webm") == "video 'e.webm' is empty (0 bytes)"


def test_missing_and_oversized_files_are_refused(tones: dict[str, Path], tmp_path: Path) -> None:
    assert _refused(probe_media, tmp_path / "gone.wav", "audio") == "audio 'gone.wav' not found"
    message = _refused(probe_media, tones[".wav"], "audio", MediaLimits(max_bytes=1000))
    assert "bytes; the limit is 1,000 bytes" in message


def test_too_long_is_refused(tones: dict[str, Path], clips: dict[str, Path]) -> None:
    short = MediaLimits(max_audio_seconds=0.5, max_video_seconds=1.0)
    assert _refused(decode_audio, tones[".flac"], limits=short, name="x.flac") == (
        "audio 'x.flac' is 1.0 s long; the limit is 0.5 s (--max-audio-seconds)")
    message = _refused(decode_video_frames, _clip(clips, ".webm"), limits=short)
    assert message.startswith("video 'clip.webm' is 2.0 s long; the limit is 1 s (--max-video-seconds)")
    assert "--max-video-seconds" in _refused(decode_audio, clips[".webm"], limits=short)


def test_video_without_audio_passed_to_decode_audio(media_dir: Path) -> None:
    if missing_encoder(".webm", video=True, with_audio=False):
        pytest.skip(missing_encoder(".webm", video=True, with_audio=False))
    silent = write_clip(media_dir / "silent.webm", 1.0, CLIP_FPS, (64, 48), False)
    assert probe_media(silent, "video").has_audio is False
    assert _refused(decode_audio, silent) == (
        "video 'silent.webm' has no audio stream (it has only video); an audio stream is required")


def test_audio_passed_as_video(tones: dict[str, Path], media_dir: Path) -> None:
    assert "allowed: .webm, .ogv, .mp4" in _refused(decode_video_frames, tones[".wav"])  # suffix first
    if missing_encoder(".webm"):
        pytest.skip(missing_encoder(".webm"))
    audio_only = write_tone(media_dir / "music.webm", 1.0)  # a WebM with nothing but sound
    assert _refused(probe_media, audio_only, "video") == (
        "video 'music.webm' has no video stream (it has only audio); a video stream is required")
    assert "no video stream" in _refused(decode_video_frames, audio_only.read_bytes())


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_frame_size_over_the_limit_is_refused(clips: dict[str, Path], suffix: str) -> None:
    tight = MediaLimits(max_video_pixels=1000)  # the clips are 64x48 = 3,072 pixels
    for fn, args in ((probe_media, ("video", tight)), (decode_video_frames, ())):
        kwargs = {} if args else {"limits": tight}
        message = _refused(fn, _clip(clips, suffix), *args, **kwargs)
        # H.264 keeps the header's size under FFmpeg's own pixel cap (so the message gives it); VP8 may not.
        assert f"'clip{suffix}'" in message and "1,000 pixels" in message
        if suffix == ".mp4":
            assert "is 64x48 = 3,072 pixels per frame; the limit is 1,000 pixels" in message


def test_header_claiming_a_huge_frame_is_refused_before_decoding(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A decompression bomb: 2 KB of file whose stream header promises 30000 x 30000 pixels per frame."""
    bomb = write_raw_mp4_claiming(tmp_path / "bomb.mp4", 30000, 30000)
    assert bomb.stat().st_size < 5000

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoding started")

    monkeypatch.setattr(media, "_decoded_frames", no_decoding)
    for fn, args in ((probe_media, ("video",)), (decode_video_frames, ())):
        message = _refused(fn, bomb, *args)
        assert message.startswith("video 'bomb.mp4' has no usable frame size") and "8,294,400 pixels" in message


def test_header_understating_the_length_is_capped(media_dir: Path) -> None:
    """An MP3 whose header says 0.5 s of what decodes to 8 s: decoding stops at 1.05 x the limit."""
    if missing_encoder(".mp3"):
        pytest.skip(missing_encoder(".mp3"))
    real = write_tone(media_dir / "long.mp3", 8.0, sample_rate=8000).read_bytes()
    liar = with_mp3_frame_count(real, 10)  # 10 frames of 576 samples at 8 kHz = 0.72 s
    limits = MediaLimits(max_audio_seconds=2.0)
    assert probe_media(liar, "audio", limits, name="liar.mp3").duration_s < 1.0  # the header passes the check
    message = _refused(decode_audio, liar, name="liar.mp3", limits=limits, sample_rate=8000)
    assert message.startswith("audio 'liar.mp3' decodes to more than 2.1 s though its header says 0.")
    assert message.endswith("the limit is 2 s (--max-audio-seconds)")
    # Asking for less than the limit is no error: the first max_seconds come back.
    start = decode_audio(liar, name="liar.mp3", limits=limits, sample_rate=8000, max_seconds=1.0)
    assert len(start.samples) == 8000


def test_limits_are_validated() -> None:
    for field, bad in [("max_audio_seconds", 0), ("max_video_seconds", -1.0), ("max_bytes", 1.5),
                       ("max_video_pixels", 0), ("max_channels", True), ("max_sample_rate", float("nan"))]:
        with pytest.raises(ValueError, match=f"MediaLimits.{field}"):
            MediaLimits(**{field: bad})
    with pytest.raises(ValueError, match="kind"):
        probe_media(b"x", "image")
    with pytest.raises(ValueError, match="max_seconds"):
        decode_audio(b"x", max_seconds=0)


def test_module_import_is_cheap() -> None:
    """Importing the module loads neither PyAV nor Pillow (the catalog imports it on every start)."""
    code = "import sys, recsys_core.data.media; print('av' in sys.modules, 'PIL.Image' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]



def test_corrupted_files_decode_or_are_refused(tones: dict[str, Path], clips: dict[str, Path]) -> None:
    """Seeded byte flips across every format: each either decodes within the contract or is an InvalidInputError."""
    rng = np.random.default_rng(0)
    cases = [(p, decode_audio) for p in tones.values()] + [(p, decode_video_frames) for p in clips.values()]
    for path, fn in cases:
        data = np.frombuffer(path.read_bytes(), dtype=np.uint8)
        for _ in range(4):
            broken = data.copy()
            where = rng.integers(0, len(broken), max(1, len(broken) // 200))
            broken[where] = rng.integers(0, 256, len(where), dtype=np.uint8)
            try:
                out = fn(broken.tobytes(), name=path.name)
            except InvalidInputError as exc:
                assert type(exc) is InvalidInputError and f"'{path.name}'" in str(exc)
                continue
            if fn is decode_audio:
                assert out.samples.dtype == np.float32 and float(np.abs(out.samples).max(initial=0)) <= 1.0
            else:
                assert 1 <= len(out.frames) <= 16 and all(img.mode == "RGB" for img in out.frames)
