"""Audio and video fixtures written with PyAV itself, shared by the tests that need real media files.

Everything is tiny (1-3 s, 64x48, low sample rates where the codec allows) and deterministic: a sine tone,
and a clip whose frames differ over time (a background that brightens frame by frame and a white square
moving left to right), so a test can tell which frame it got back.

Which encoders a PyAV wheel carries varies (the PyPI wheel has no Theora encoder, for one), so each writer
picks the first available encoder for the container and :func:`missing_encoder` says what a test lacks;
tests skip that one case with the reason instead of failing.
"""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import numpy as np

# Per suffix: (FFmpeg muxer, audio encoders in order of preference).
AUDIO_CONTAINERS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".wav": ("wav", ("pcm_s16le",)),
    ".flac": ("flac", ("flac",)),
    ".mp3": ("mp3", ("libmp3lame",)),
    ".ogg": ("ogg", ("libvorbis", "vorbis")),
    ".oga": ("ogg", ("flac", "libvorbis", "vorbis")),
    ".opus": ("opus", ("libopus", "opus")),
    ".webm": ("webm", ("libopus", "libvorbis", "vorbis")),  # audio-only WebM: "an audio file passed as video"
}
# Per suffix: (FFmpeg muxer, video encoders, soundtrack encoders), in order of preference.
VIDEO_CONTAINERS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    ".webm": ("webm", ("libvpx", "libvpx-vp9"), ("libopus", "libvorbis", "vorbis")),
    # Ogg carries Theora classically; wheels without a Theora encoder get VP8 in Ogg (FFmpeg muxes and
    # demuxes both), which exercises the same .ogv path through the demuxer.
    ".ogv": ("ogg", ("libtheora", "libvpx"), ("libvorbis", "vorbis", "libopus")),
    ".mp4": ("mp4", ("libx264", "mpeg4"), ("aac",)),
}
# Encoders that are experimental in FFmpeg (need strict=-2) and their constraints.
_EXPERIMENTAL = {"vorbis", "opus"}
_STEREO_ONLY = {"vorbis"}  # FFmpeg's native Vorbis encoder writes two channels only
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


def has_encoder(codec: str) -> bool:
    """Whether this PyAV build can encode ``codec`` (``av.codecs_available`` lists decoders too)."""
    import av

    try:
        av.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - UnknownCodecError and friends: not in this build
        return False
    return True


def first_encoder(candidates: tuple[str, ...]) -> str | None:
    return next((c for c in candidates if has_encoder(c)), None)


def missing_encoder(suffix: str, *, video: bool = False, with_audio: bool = True) -> str | None:
    """Why a file of ``suffix`` cannot be written here (for ``pytest.skip``), or None when it can."""
    if video:
        _muxer, vcodecs, acodecs = VIDEO_CONTAINERS[suffix]
        if first_encoder(vcodecs) is None:
            return f"this PyAV build has no video encoder for {suffix} (tried {', '.join(vcodecs)})"
        if with_audio and first_encoder(acodecs) is None:
            return f"this PyAV build has no soundtrack encoder for {suffix} (tried {', '.join(acodecs)})"
        return None
    _muxer, acodecs = AUDIO_CONTAINERS[suffix]
    if first_encoder(acodecs) is None:
        return f"this PyAV build has no audio encoder for {suffix} (tried {', '.join(acodecs)})"
    return None


def tone(seconds: float, sample_rate: int, frequency: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A sine tone, float32 mono."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def write_tone(
    path: str | Path,
    seconds: float = 1.0,
    fmt: str | None = None,
    *,
    sample_rate: int = 22050,
    frequency: float = 440.0,
    amplitude: float = 0.5,
    channels: int = 1,
) -> Path:
    """A sine tone in the container of ``fmt`` (a suffix such as ".mp3"; default: ``path``'s suffix).

    Opus only runs at 48/24/16/12/8 kHz, so ``sample_rate`` moves to the nearest of those for .opus
    (the file's real rate is what :func:`recsys_core.data.media.probe_media` reports).
    """
    import av

    path = Path(path)
    suffix = (fmt or path.suffix).lower()
    muxer, candidates = AUDIO_CONTAINERS[suffix]
    codec = first_encoder(candidates)
    if codec is None:
        raise RuntimeError(missing_encoder(suffix))
    if codec in ("libopus", "opus"):
        sample_rate = min(_OPUS_RATES, key=lambda r: abs(r - sample_rate))
    if codec in _STEREO_ONLY:
        channels = 2
    layout = "mono" if channels == 1 else "stereo"
    samples = tone(seconds, sample_rate, frequency, amplitude)
    with av.open(str(path), "w", format=muxer) as container:
        stream = container.add_stream(codec, rate=sample_rate, layout=layout)
        for frame in _audio_frames(stream, samples, sample_rate, codec):
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def write_clip(
    path: str | Path,
    seconds: float = 2.0,
    fps: int = 8,
    size: tuple[int, int] = (64, 48),
    with_audio: bool = True,
    *,
    fmt: str | None = None,
    video_codec: str | None = None,
    frequency: float = 330.0,
) -> Path:
    """A clip of ``seconds`` at ``fps``: frame ``i`` has background grey level ``_level(i, n)`` (rising over the
    clip) and a white 16x16 square moving left to right; with ``with_audio``, a stereo sine soundtrack of the
    same length at 48 kHz. ``video_codec`` overrides the encoder (e.g. "libvpx-vp9").
    """
    import av

    path = Path(path)
    suffix = (fmt or path.suffix).lower()
    muxer, vcodecs, acodecs = VIDEO_CONTAINERS[suffix]
    vcodec = video_codec or first_encoder(vcodecs)
    acodec = first_encoder(acodecs) if with_audio else None
    if vcodec is None or (with_audio and acodec is None):
        raise RuntimeError(missing_encoder(suffix, video=True, with_audio=with_audio))
    width, height = size
    n = int(round(seconds * fps))
    with av.open(str(path), "w", format=muxer) as container:
        video = container.add_stream(vcodec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if vcodec == "libx264":
            video.codec_context.options = {"preset": "ultrafast"}
        audio = None
        sound: list = []
        if acodec is not None:
            audio = container.add_stream(acodec, rate=48000, layout="stereo")
            sound = list(_audio_frames(audio, tone(seconds, 48000, frequency, 0.3), 48000, acodec))
        k = 0
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(clip_frame(i, n, size), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(video.encode(frame))
            # Interleave: the soundtrack up to the end of this frame, as a real recorder writes it.
            while k < len(sound) and sound[k].pts / 48000 <= (i + 1) / fps:
                container.mux(audio.encode(sound[k]))
                k += 1
        container.mux(video.encode(None))
        if audio is not None:
            for frame in sound[k:]:
                container.mux(audio.encode(frame))
            container.mux(audio.encode(None))
    return path


def clip_frame(i: int, n: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    """Frame ``i`` of ``n`` of :func:`write_clip` as RGB uint8 [height, width, 3]."""
    width, height = size
    image = np.full((height, width, 3), level(i, n), dtype=np.uint8)
    side = max(2, min(16, width // 4, height // 3))
    x = int(round(i * (width - side) / max(n - 1, 1)))
    y = (height - side) // 2
    image[y:y + side, x:x + side] = 255
    return image


def level(i: int, n: int) -> int:
    """Background grey of frame ``i`` of ``n``: 20 at the start, 200 at the end."""
    return int(round(20 + 180 * i / max(n - 1, 1)))


def _audio_frames(stream, samples: np.ndarray, sample_rate: int, codec: str):
    """Mono float ``samples`` as AudioFrames in the sample format and layout ``stream``'s encoder takes."""
    import av

    if codec in _EXPERIMENTAL:
        stream.codec_context.options = {"strict": "experimental"}
    if not stream.codec_context.is_open:
        stream.codec_context.open()  # frame_size is only known once the encoder is open
    ctx = stream.codec_context
    channels = ctx.layout.nb_channels
    fmt = ctx.format
    step = ctx.frame_size or 1024
    for start in range(0, len(samples), step):
        chunk = samples[start:start + step]
        if fmt.is_planar:
            data = np.tile(chunk, (channels, 1))
        else:
            data = np.repeat(chunk, channels)[None, :]
        if fmt.name.startswith("s16"):
            data = np.round(data * 32767).astype(np.int16)
        elif fmt.name.startswith("s32"):
            data = np.round(data.astype(np.float64) * 2147483647).astype(np.int32)
        elif fmt.name.startswith("dbl"):
            data = data.astype(np.float64)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt.name, layout=ctx.layout.name)
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        yield frame


# -- hostile files ---------------------------------------------------------------------------------------------


def write_raw_mp4_claiming(path: str | Path, width: int, height: int, *, frames: int = 2) -> Path:
    """An MP4 (QuickTime) file of ``frames`` real 16x16 raw frames whose stream header claims ``width`` x
    ``height``: the decompression-bomb shape (a few KB that promise 30000 x 30000 pixels per frame).

    Raw video has no bitstream header of its own that FFmpeg could correct the size from, so the sample
    description's size is all a reader sees before decoding.
    """
    import av

    path = Path(path)
    with av.open(str(path), "w", format="mov") as container:
        stream = container.add_stream("rawvideo", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "rgb24"
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = bytearray(path.read_bytes())
    entry = data.find(b"raw ", data.find(b"stsd"))
    # Visual sample entry: type, 6 reserved, data-reference index (2), 16 bytes of version/vendor/quality,
    # then width and height (16 bits each, big-endian).
    offset = entry + 4 + 6 + 2 + 16
    assert struct.unpack(">HH", data[offset:offset + 4]) == (16, 16), "unexpected MP4 layout"
    data[offset:offset + 4] = struct.pack(">HH", width, height)
    path.write_bytes(bytes(data))
    return path


def y4m_header_claiming(width: int, height: int) -> bytes:
    """A YUV4MPEG2 stream header claiming ``width`` x ``height`` and one tiny 'frame': FFmpeg opens it (it is
    a real demuxer), so only the container whitelist keeps it out."""
    return f"YUV4MPEG2 W{width} H{height} F10:1 Ip A1:1 C420jpeg\n".encode() + b"FRAME\n" + b"\x80" * 64


def with_mp3_frame_count(data: bytes, frames: int) -> bytes:
    """An MP3 whose Xing/Info header claims ``frames`` MPEG frames (its real audio untouched): a header that
    understates the length, so the duration FFmpeg reports before decoding is short and the decode is long."""
    out = bytearray(data)
    tag = max(out.find(b"Xing"), out.find(b"Info"))
    if tag < 0:
        raise ValueError("no Xing/Info header in this MP3")
    flags = struct.unpack(">I", out[tag + 4:tag + 8])[0]
    if not flags & 1:
        raise ValueError("the Xing/Info header carries no frame count")
    out[tag + 8:tag + 12] = struct.pack(">I", frames)
    return bytes(out)
