"""Safe audio and video decoding: every audio or video file the app touches (catalog or upload) goes through here.

Decoding uses PyAV (``import av``): FFmpeg's libraries shipped in a wheel, so one well-kept library demuxes
and decodes every format we accept, audio and video alike, in-process with no shell-out to an ``ffmpeg``
binary. The alternatives fall short: torchaudio would pin another torch version than the one the encoders
need, and soundfile (libsndfile) cannot read mp4 or webm at all.

FFmpeg will open almost anything, which is exactly what an upload must not be allowed to exploit, so the
same rules as :mod:`recsys_core.data.images` apply -- check the header before decoding, refuse with an
:class:`InvalidInputError` that says what was wrong and what is allowed:

* only the containers behind :data:`AUDIO_SUFFIXES` / :data:`VIDEO_SUFFIXES` may be opened (FFmpeg's
  ``format_whitelist``): playlist and concat demuxers such as HLS would otherwise follow references to
  other files or URLs named inside an upload;
* files are handed to FFmpeg as Python file objects, never as URL strings, so no path is read as a protocol;
* size, duration, frame size, channel count and sample rate are checked on the header
  (:func:`probe_media`, cheap enough to run on every catalog row);
* decoders run with FFmpeg's ``max_pixels`` cap (from the first probe on), so a frame larger than
  :attr:`MediaLimits.max_video_pixels` is never allocated even when the header understates it;
* decoded audio is capped at 1.05 x the duration limit, so a header that claims one second of a
  file that decodes to hours cannot exhaust memory;
* audio that decodes to much less than its stream header declares (FLAC, MP3 with a Xing/Info header,
  MP4 tracks) is refused as truncated; where the header holds no length of its own (WebM, Ogg, WAV cut
  short, whose length FFmpeg takes from the bytes present) what decodes is what the file is;
* no raw FFmpeg error leaves this module: each becomes an :class:`InvalidInputError`.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from recsys_core.errors import InvalidInputError

if TYPE_CHECKING:  # PIL is imported by the functions that make frames; the type is only for annotations
    from PIL import Image

logger = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".ogg", ".oga", ".opus", ".mp3", ".wav", ".flac")
VIDEO_SUFFIXES = (".webm", ".ogv", ".mp4")

# FFmpeg demuxer names behind those suffixes (Ogg covers .ogg/.oga/.opus/.ogv, Matroska covers .webm,
# mov covers .mp4). FFmpeg refuses to open anything else, whatever the bytes look like.
_ALLOWED_DEMUXERS = "ogg,matroska,webm,mov,mp4,mp3,wav,flac"
_CONTAINER_NAMES = "Ogg, WebM, MP4, MP3, WAV, FLAC"

# Decoding may overshoot the duration limit by this much (encoder delay, padding, rounding of the header's
# duration) before a file counts as lying about its length.
_DECODE_SLACK = 1.05
# A stream whose own header declares its length but which decodes to less than this share of it (and at
# least _TRUNCATED_MIN_GAP_S less) is truncated: a half-finished download or upload, refused rather than
# silently encoded from whatever part arrived.
_TRUNCATED_SHARE = 0.9
_TRUNCATED_MIN_GAP_S = 0.25
# Corrupt packets tolerated in one file (a damaged frame or two in a long file is common and harmless; a
# stream of errors is not media): audio past this is refused, video keeps the keyframes found so far.
_MAX_BAD_PACKETS = 16
# Clips longer than this are sampled by seeking to each keyframe time; shorter ones are decoded in one
# forward pass. Typical encoders put a keyframe every 2-10 s, and a seek restarts decoding at the keyframe
# before the target, so on a clip of a few GOPs, 4-16 seeks decode about as many frames as one pass (and
# some of them several times); only on longer clips does seeking skip most of the file.
_SEEK_ABOVE_S = 30.0
# Upper bound on frames decoded for one clip (fps ceiling x duration limit): stops a clip whose timestamps
# never advance from being decoded to the end of a 200 MB file while looking for its keyframe times.
_MAX_FPS = 240


@dataclass(frozen=True)
class MediaLimits:
    """What an audio or video file may be: per file, checked on the header before any decoding."""

    max_audio_seconds: float = 600.0
    max_video_seconds: float = 300.0
    max_bytes: int = 200 * 1024 * 1024
    # Per frame, width * height from the stream header (and enforced by the decoder itself).
    max_video_pixels: int = 3840 * 2160
    max_channels: int = 16
    max_sample_rate: int = 384_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"MediaLimits.{f.name} must be a number, got {value!r}")
            if f.type in ("int", int) and not isinstance(value, int):
                raise ValueError(f"MediaLimits.{f.name} must be a whole number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"MediaLimits.{f.name} must be > 0, got {value!r}")


@dataclass(frozen=True)
class MediaInfo:
    """What the header says about a file that passed :func:`probe_media`."""

    kind: str  # "audio" or "video"
    duration_s: float
    has_audio: bool
    has_video: bool
    width: int = 0  # video frame size (0 for audio)
    height: int = 0
    sample_rate: int = 0  # of the first audio stream (0 when there is none)


@dataclass(frozen=True)
class AudioClip:
    """Decoded audio: mono float32 samples in [-1, 1]."""

    samples: np.ndarray  # float32, mono, shape [n]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class VideoFrames:
    """Keyframes of a clip, in presentation order."""

    frames: tuple[Image.Image, ...]  # RGB, longer side <= max_side
    times_s: tuple[float, ...]  # presentation time of each frame, seconds from the start of the video stream
    duration_s: float
    has_audio: bool
    width: int  # the source frame size (before resizing), as MediaInfo reports it
    height: int


# -- public functions --------------------------------------------------------------------------------------------


def probe_media(
    source: str | Path | bytes,
    kind: str,
    limits: MediaLimits = MediaLimits(),
    *,
    name: str | None = None,
) -> MediaInfo:
    """Header-only check, cheap enough for every row of a catalog as it loads.

    Suffix allowed for ``kind`` (paths; bytes only when ``name`` is given), file exists, not empty, at most
    ``limits.max_bytes``, the container opens as one of the allowed formats, it has the stream ``kind``
    needs, its duration is known, > 0 and within the kind's limit, the video frame size is within
    ``limits.max_video_pixels`` and the audio's channels and sample rate are sane.
    Raises :class:`InvalidInputError` naming the problem and the limit.
    """
    _check_kind(kind)
    suffixes = AUDIO_SUFFIXES if kind == "audio" else VIDEO_SUFFIXES
    with _open_checked(source, kind, suffixes, limits, name) as opened:
        return opened.info


def decode_audio(
    source: str | Path | bytes,
    *,
    sample_rate: int = 44100,
    limits: MediaLimits = MediaLimits(),
    name: str | None = None,
    max_seconds: float | None = None,
) -> AudioClip:
    """The first audio stream of an audio or video file as mono float32 at ``sample_rate`` (channels averaged).

    Checks as :func:`probe_media` (a video file is fine when it has an audio stream; its duration limit is
    then ``max_video_seconds``). Decoding stops with a refusal once it passes 1.05 x the duration limit,
    whatever the header said, and a stream that decodes to much less than its header declares is refused
    as truncated. ``max_seconds`` decodes only the start of the file (no error for longer files within the
    limit). Silence is a valid result.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 1:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise ValueError(f"max_seconds must be > 0 (or None for the whole file), got {max_seconds!r}")
    import av

    with _open_checked(source, "audio", AUDIO_SUFFIXES + VIDEO_SUFFIXES, limits, name) as opened:
        container, info, label = opened.container, opened.info, opened.label
        stream = container.streams.audio[0]
        word = opened.word  # "video" when the soundtrack of a video is read: its messages and limit are a video's
        limit_s = limits.max_video_seconds if word == "video" else limits.max_audio_seconds
        flag = f"--max-{word}-seconds"
        not_audio = "truncated or not an audio file" if word == "audio" else "truncated, or its audio is damaged"
        cap = int(limit_s * sample_rate * _DECODE_SLACK) + 1
        wanted = round(max_seconds * sample_rate) if max_seconds is not None else None
        # Resample to planar float at the target rate but keep the channels, then average them: FFmpeg's own
        # downmix to layout "mono" weights each stereo channel by 1/sqrt(2), so in-phase stereo comes out
        # 3 dB louder than either channel and a full-scale track clips.
        resampler = av.AudioResampler(format="fltp", layout=None, rate=sample_rate)
        chunks: list[np.ndarray] = []
        total = 0
        stopped_early = False
        bad = 0

        def take(frames: list[Any]) -> bool:
            """Append resampled frames; True once enough samples are in (max_seconds)."""
            nonlocal total
            for out in frames:
                planes = out.to_ndarray()  # [channels, n]
                data = planes[0] if planes.shape[0] == 1 else planes.mean(axis=0, dtype=np.float32)
                chunks.append(data)
                total += data.size
                if total > cap:
                    raise InvalidInputError(
                        f"{word} {label!r} decodes to more than {cap / sample_rate:.1f} s though its header says "
                        f"{info.duration_s:.1f} s; the limit is {limit_s:g} s ({flag})"
                    )
                if wanted is not None and total >= wanted:
                    return True
            return False

        try:
            for packet in _packets(container, stream, label):
                try:
                    decoded = packet.decode()
                except (av.error.FFmpegError, ValueError) as exc:
                    bad += 1
                    logger.debug("audio %r: packet at %s not decoded (%s)", label, packet.pts, exc)
                    if bad > _MAX_BAD_PACKETS:
                        raise InvalidInputError(
                            f"{word} {label!r} could not be decoded (more than {_MAX_BAD_PACKETS} damaged packets: "
                            f"{not_audio})"
                        )
                    continue
                if any(take(resampler.resample(frame)) for frame in decoded):
                    stopped_early = True
                    break
            if not stopped_early:
                take(resampler.resample(None))  # flush what the resampler still holds
        except InvalidInputError:
            raise
        except (av.error.FFmpegError, OSError, ValueError, MemoryError) as exc:
            # Resampler setup refused the stream (no usable layout/format) or it changed format mid-stream.
            if not total:
                raise InvalidInputError(
                    f"{word} {label!r} could not be decoded ({type(exc).__name__}: {not_audio})"
                ) from exc
            logger.warning("audio %r: decoding stopped after %.1f s (%s)", label, total / sample_rate, exc)
        if bad:
            logger.warning("audio %r: %d packet(s) could not be decoded and were skipped", label, bad)
        if not total:
            raise InvalidInputError(f"{word} {label!r} could not be decoded ({not_audio})")
        samples = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        if wanted is not None:
            samples = samples[:wanted]
        decoded_s = total / sample_rate
        declared = _stream_duration(stream)
        if (
            not stopped_early
            and declared is not None
            and decoded_s < declared * _TRUNCATED_SHARE
            and declared - decoded_s > _TRUNCATED_MIN_GAP_S
        ):
            raise InvalidInputError(
                f"{word} {label!r} is truncated or damaged: its header says {declared:.1f} s but only "
                f"{decoded_s:.1f} s could be decoded"
            )
        samples = np.clip(samples.astype(np.float32, copy=False), -1.0, 1.0)
        logger.debug("audio %r: %.2f s decoded at %d Hz", label, samples.size / sample_rate, sample_rate)
        return AudioClip(samples=samples, sample_rate=sample_rate)


def keyframe_times(duration_s: float, count: int) -> list[float]:
    """``count`` times at the centres of ``count`` equal intervals of the clip: ``(i + 0.5) * duration / count``.

    Symmetric around the middle of the clip (as MicroLens samples its frames) and never the very first or
    last frame, which are often black or a fade.
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a whole number >= 1, got {count!r}")
    return [(i + 0.5) * duration_s / count for i in range(count)]


def decode_video_frames(
    source: str | Path | bytes,
    *,
    frames_per_second: float = 1.0,
    min_frames: int = 4,
    max_frames: int = 16,
    max_side: int = 320,
    limits: MediaLimits = MediaLimits(),
    name: str | None = None,
) -> VideoFrames:
    """Keyframes of a clip: ``clamp(round(duration * frames_per_second), min_frames, max_frames)`` frames, each
    the decoded frame nearest one of :func:`keyframe_times`, resized so the longer side is <= ``max_side``.

    Checks as :func:`probe_media` with ``kind="video"``. Clips up to 30 s are decoded in one forward pass,
    longer ones by seeking to each time (see ``_SEEK_ABOVE_S``). A clip with fewer distinct frames than asked
    returns the ones it has (at least one, else :class:`InvalidInputError`).
    """
    if not (math.isfinite(frames_per_second) and frames_per_second > 0):
        raise ValueError(f"frames_per_second must be > 0, got {frames_per_second!r}")
    if not (isinstance(min_frames, int) and isinstance(max_frames, int) and 1 <= min_frames <= max_frames):
        raise ValueError(
            f"need 1 <= min_frames <= max_frames, got min_frames={min_frames!r}, max_frames={max_frames!r}"
        )
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise ValueError(f"max_side must be a whole number >= 1, got {max_side!r}")

    with _open_checked(source, "video", VIDEO_SUFFIXES, limits, name) as opened:
        container, info, label = opened.container, opened.info, opened.label
        count = min(max(round(info.duration_s * frames_per_second), min_frames), max_frames)
        targets = keyframe_times(info.duration_s, count)
        budget = [int(limits.max_video_seconds * _MAX_FPS)]
        if info.duration_s <= _SEEK_ABOVE_S:
            images = _distinct_images(_one_pass(container, targets, label, limits, budget), max_side)
        else:
            picks = _frames_by_seeking(container, _video_stream(container), targets, label, limits, budget)
            if picks is not None:
                images = _distinct_images(picks, max_side)
            else:  # the file cannot seek (a damaged index): one pass from the start on a fresh container
                logger.info("video %r: seeking failed; decoding it in one pass instead", label)
                with _open_checked(source, "video", VIDEO_SUFFIXES, limits, name) as fresh:
                    images = _distinct_images(_one_pass(fresh.container, targets, label, limits, budget), max_side)
        if not images:
            raise InvalidInputError(
                f"video {label!r} could not be decoded (truncated, damaged, or frames over the limit of "
                f"{limits.max_video_pixels:,} pixels)"
            )
        if len(images) < count:
            logger.debug("video %r: %d distinct frame(s) for %d keyframe times", label, len(images), count)
        return VideoFrames(frames=tuple(img for _t, img in images), times_s=tuple(t for t, _img in images),
                           duration_s=info.duration_s, has_audio=info.has_audio, width=info.width,
                           height=info.height)


# -- opening and header checks ---------------------------------------------------------------------------------


def _check_kind(kind: str) -> None:
    if kind not in ("audio", "video"):
        raise ValueError(f"kind must be 'audio' or 'video', got {kind!r}")


def _label(source: str | Path | bytes, name: str | None) -> str:
    if name:
        return name
    if isinstance(source, (str, Path)):
        return Path(source).name or str(source)
    return "upload"


@dataclass(frozen=True)
class _Opened:
    container: Any  # av.container.InputContainer
    info: MediaInfo
    label: str
    # How messages name the file and which duration limit applies: "video" for a video file even when it is
    # read for its soundtrack (video suffix, or for bytes without a name, a real video stream).
    word: str


@contextmanager
def _open_checked(
    source: str | Path | bytes, kind: str, suffixes: tuple[str, ...], limits: MediaLimits, name: str | None
) -> Iterator[_Opened]:
    """Open ``source`` after the cheap checks (suffix, size) and run the header checks on it.

    ``kind`` is the stream that must be there ("audio" or "video"); ``suffixes`` the ones allowed.
    Closes the container and file when the block ends; FFmpeg errors inside the block become
    :class:`InvalidInputError`.
    """
    import av

    label = _label(source, name)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        suffix = Path(name).suffix.lower() if name else None
        word = _word(kind, suffix)
        if suffix is not None:
            _check_suffix(word, label, suffix, suffixes)
        if len(data) > limits.max_bytes:
            raise InvalidInputError(f"{word} {label!r} is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes")
        if not data:
            raise InvalidInputError(f"{word} {label!r} is empty (0 bytes)")
        handle: Any = io.BytesIO(data)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        suffix = path.suffix.lower()
        word = _word(kind, suffix)
        _check_suffix(word, label, suffix, suffixes)
        try:
            if not path.is_file():
                raise InvalidInputError(f"{word} {label!r} not found")
            size = path.stat().st_size
            if size > limits.max_bytes:
                raise InvalidInputError(f"{word} {label!r} is {size:,} bytes; the limit is {limits.max_bytes:,} bytes")
            if size == 0:
                raise InvalidInputError(f"{word} {label!r} is empty (0 bytes)")
            handle = path.open("rb")
        except (OSError, ValueError) as exc:  # unreadable, or a path the OS cannot even look up
            if isinstance(exc, InvalidInputError):
                raise
            raise InvalidInputError(f"{word} {label!r} could not be read ({type(exc).__name__})") from exc
    else:
        raise TypeError(f"source must be a path or bytes, got {type(source).__name__}")

    pixels = str(limits.max_video_pixels)
    try:
        try:
            # options reach the decoders FFmpeg opens while probing (avformat_find_stream_info), so the
            # pixel cap holds from the first frame it ever decodes.
            container = av.open(
                handle,
                mode="r",
                container_options={"format_whitelist": _ALLOWED_DEMUXERS},
                options={"max_pixels": pixels},
            )
        except (av.error.FFmpegError, OSError, ValueError, RuntimeError, MemoryError) as exc:
            raise InvalidInputError(
                f"{word} {label!r} could not be opened ({type(exc).__name__}): not a media file, truncated, "
                f"or a container other than {_CONTAINER_NAMES}; allowed suffixes: {', '.join(suffixes)}"
            ) from exc
        try:
            info, word = _header_info(container, kind, suffix, label, limits)
            for stream in container.streams.video:
                if stream.codec_context is not None:  # the decoders PyAV opens for us get the cap too
                    stream.codec_context.options = {"max_pixels": pixels}
            yield _Opened(container=container, info=info, label=label, word=word)
        except InvalidInputError:
            raise
        except (av.error.FFmpegError, OSError, ValueError, RuntimeError, MemoryError) as exc:
            raise InvalidInputError(
                f"{word} {label!r} could not be decoded ({type(exc).__name__}): truncated or damaged"
            ) from exc
        finally:
            container.close()
    finally:
        handle.close()


def _word(kind: str, suffix: str | None) -> str:
    """How messages name a file before it is open: a video file read for its soundtrack is still a "video"."""
    return "video" if kind == "video" or suffix in VIDEO_SUFFIXES else "audio"


def _check_suffix(word: str, label: str, suffix: str, allowed: tuple[str, ...]) -> None:
    if suffix not in allowed:
        found = f"suffix {suffix!r}" if suffix else "no suffix"
        raise InvalidInputError(f"{word} {label!r} has {found}; allowed: {', '.join(allowed)}")


def _header_info(
    container: Any, kind: str, suffix: str | None, label: str, limits: MediaLimits
) -> tuple[MediaInfo, str]:
    """The header checks of :func:`probe_media` on an open container; returns the info and the file's word."""
    audio = container.streams.audio[0] if container.streams.audio else None
    video = _video_stream(container)
    # A video file read for its soundtrack keeps a video's name and duration limit.
    is_video = suffix in VIDEO_SUFFIXES if suffix else video is not None
    word = "video" if kind == "video" or is_video else "audio"  # bytes without a name: what the file holds
    if kind == "audio" and audio is None:
        what = " (it has only video)" if video is not None else ""
        raise InvalidInputError(f"{word} {label!r} has no audio stream{what}; an audio stream is required")
    if kind == "video" and video is None:
        what = " (it has only audio)" if audio is not None else ""
        raise InvalidInputError(f"{word} {label!r} has no video stream{what}; a video stream is required")

    main = audio if kind == "audio" else video
    if main.codec_context is None:
        raise InvalidInputError(f"{word} {label!r} has a {kind} stream in a codec this build cannot decode")
    duration = _stream_duration(main)
    if duration is None and container.duration is not None and container.duration > 0:
        duration = container.duration / 1_000_000  # AV_TIME_BASE
    limit = limits.max_video_seconds if word == "video" else limits.max_audio_seconds
    if duration is None or not math.isfinite(duration) or duration <= 0:
        raise InvalidInputError(
            f"{word} {label!r} does not declare a duration; a known duration of at most {limit:g} s is required"
        )
    if duration > limit:
        raise InvalidInputError(
            f"{word} {label!r} is {duration:.1f} s long; the limit is {limit:g} s (--max-{word}-seconds)"
        )

    width = height = 0
    if video is not None and kind == "video":
        width, height = int(video.codec_context.width or 0), int(video.codec_context.height or 0)
        if width * height > limits.max_video_pixels:
            raise InvalidInputError(
                f"video {label!r} is {width}x{height} = {width * height:,} pixels per frame; "
                f"the limit is {limits.max_video_pixels:,} pixels"
            )
        if width < 1 or height < 1:
            # FFmpeg zeroes the size when its own decoder refused it under our max_pixels cap, so a 0x0 here
            # is usually a frame size over the limit, sometimes a header that declares none.
            raise InvalidInputError(
                f"video {label!r} has no usable frame size ({width}x{height}): its header declares none, or more "
                f"than the limit of {limits.max_video_pixels:,} pixels per frame"
            )

    sample_rate = 0
    if audio is not None and audio.codec_context is not None:
        sample_rate = int(audio.codec_context.sample_rate or 0)
    if kind == "audio":  # a video's soundtrack is checked when it is decoded (decode_audio asks for "audio")
        channels = int(audio.codec_context.channels or 0)
        if not 1 <= sample_rate <= limits.max_sample_rate:
            raise InvalidInputError(
                f"{word} {label!r} has a sample rate of {sample_rate:,} Hz; "
                f"allowed: 1 to {limits.max_sample_rate:,} Hz"
            )
        if not 1 <= channels <= limits.max_channels:
            raise InvalidInputError(
                f"{word} {label!r} has {channels} audio channels; allowed: 1 to {limits.max_channels}"
            )
    info = MediaInfo(kind=kind, duration_s=float(duration), has_audio=audio is not None,
                     has_video=video is not None, width=width, height=height, sample_rate=sample_rate)
    logger.debug("%s %r: %s", kind, label, info)
    return info, word


def _video_stream(container: Any) -> Any | None:
    """The first real video stream: cover art in an audio file (an attached picture) does not count."""
    import av

    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            return stream
    return None


def _stream_start(stream: Any) -> float:
    """When the stream's first frame is presented, in seconds (keyframe times count from there)."""
    if stream.start_time is None or not stream.time_base:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _stream_duration(stream: Any) -> float | None:
    """The length the stream's own header declares, in seconds; None where only the container knows."""
    if stream is None or stream.duration is None or stream.time_base is None or stream.duration <= 0:
        return None
    return float(stream.duration * stream.time_base)


def _packets(container: Any, stream: Any, label: str) -> Iterator[Any]:
    """Packets of one stream; a demuxer error ends the stream (what was read so far is judged by the caller)."""
    import av

    demuxer = container.demux(stream)
    while True:
        try:
            packet = next(demuxer)
        except StopIteration:
            return
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            logger.warning("%r: reading stopped at a damaged part of the file (%s)", label, exc)
            return
        yield packet  # the last one is empty: decoding it flushes the decoder's delayed frames


# -- keyframes ------------------------------------------------------------------------------------------------


def _frame_pixels_ok(frame: Any, label: str, limits: MediaLimits) -> None:
    if frame.width * frame.height > limits.max_video_pixels:
        raise InvalidInputError(
            f"video {label!r} decodes to {frame.width}x{frame.height} = {frame.width * frame.height:,} pixels per "
            f"frame; the limit is {limits.max_video_pixels:,} pixels"
        )


def _decoded_frames(
    container: Any, stream: Any, label: str, limits: MediaLimits, budget: list[int]
) -> Iterator[tuple[float, Any]]:
    """``(time_s, frame)`` in presentation order from the current position, ``time_s`` from the stream start.

    Skips packets the decoder refuses (up to _MAX_BAD_PACKETS) and stops when ``budget[0]`` frames were
    decoded (shared between seeks).
    """
    import av

    start = _stream_start(stream)
    rate = float(stream.average_rate) if stream.average_rate else 25.0
    last = None
    bad = 0
    for packet in _packets(container, stream, label):
        try:
            decoded = packet.decode()
        except (av.error.FFmpegError, ValueError) as exc:
            bad += 1
            logger.debug("video %r: packet at %s not decoded (%s)", label, packet.pts, exc)
            if bad > _MAX_BAD_PACKETS:
                logger.warning("video %r: too many damaged packets; decoding stopped", label)
                return
            continue
        for frame in decoded:
            _frame_pixels_ok(frame, label, limits)
            budget[0] -= 1
            if budget[0] < 0:
                logger.warning("video %r: frame budget spent; decoding stopped", label)
                return
            if frame.time is not None:
                time_s = frame.time - start
            else:  # no timestamp (rare, broken muxers): one frame period after the previous one
                time_s = last + 1.0 / rate if last is not None else 0.0
            last = time_s
            yield time_s, frame


def _nearest(targets: list[float], frames: Iterator[tuple[float, Any]]) -> list[tuple[float, Any]]:
    """For each target time in order, the frame nearest it (frames come in presentation order)."""
    picks: list[tuple[float, Any]] = []
    previous: tuple[float, Any] | None = None
    j = 0
    for time_s, frame in frames:
        while j < len(targets) and time_s >= targets[j]:
            if previous is not None and targets[j] - previous[0] < time_s - targets[j]:
                picks.append(previous)
            else:
                picks.append((time_s, frame))
            j += 1
        if j == len(targets):
            return picks
        previous = (time_s, frame)
    if previous is not None:  # the clip ended before the last targets: its last frame is the nearest
        picks.extend([previous] * (len(targets) - j))
    return picks


def _one_pass(container: Any, targets: list[float], label: str, limits: MediaLimits,
              budget: list[int]) -> list[tuple[float, Any]]:
    """Decode forward from the start, keeping the frame nearest each target."""
    return _nearest(targets, _decoded_frames(container, _video_stream(container), label, limits, budget))


def _frames_by_seeking(container: Any, stream: Any, targets: list[float], label: str, limits: MediaLimits,
                       budget: list[int]) -> list[tuple[float, Any]] | None:
    """Seek to the keyframe before each target and decode forward to it; None when the file cannot seek."""
    import av

    start = _stream_start(stream)
    picks: list[tuple[float, Any]] = []
    for target in targets:
        try:
            container.seek(int((start + target) / stream.time_base), stream=stream, backward=True)
        except (av.error.FFmpegError, OSError, ValueError, OverflowError) as exc:
            logger.debug("video %r: seek to %.2f s failed (%s)", label, target, exc)
            return None
        found = _nearest([target], _decoded_frames(container, stream, label, limits, budget))
        picks.extend(found)
    return picks


def _distinct_images(picks: list[tuple[float, Any]], max_side: int) -> list[tuple[float, Image.Image]]:
    """``(time, image)`` per distinct picked frame, in time order: a short clip may have the same frame nearest
    to two keyframe times, and it is returned once."""
    out: list[tuple[float, Image.Image]] = []
    for time_s, frame in sorted(picks, key=lambda p: p[0]):
        if out and abs(time_s - out[-1][0]) < 1e-9:
            continue
        out.append((time_s, _to_image(frame, max_side)))
    return out


def _to_image(frame: Any, max_side: int) -> Image.Image:
    """An RGB PIL image whose longer side is at most ``max_side`` (aspect kept)."""
    from PIL import Image

    image = frame.to_image()
    if image.mode != "RGB":
        image = image.convert("RGB")
    width, height = image.size
    longer = max(width, height)
    if longer > max_side:
        scale = max_side / longer
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
    return image
