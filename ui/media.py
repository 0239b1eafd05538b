"""Audio and video on screen: the files the players get, and the pictures of their explanations.

Two plots, drawn from the numbers :mod:`recsys_core.serving.explain_media` returns (no model runs here):

* :func:`audio_attribution_image`: the waveform of a track, coloured by how much each moment moved the
  score, over a bar per segment (the Shapley values, which add up to the audio part);
* :func:`keyframe_strip`: the keyframes of a clip, each with a bar for its attribution and, on the one that
  moved the score most, the regions inside it.

The waveform and the keyframes are decoded here for display only, with the same safety limits as the
service's own decoding (:func:`recsys_core.data.media.decode_audio`), at a low sample rate: an outline
needs no more.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image, ImageDraw

from recsys_core.errors import InvalidInputError

if TYPE_CHECKING:
    from recsys_core.config import VideoEncoderConfig
    from recsys_core.data.catalog import Item
    from recsys_core.data.media import MediaLimits
    from recsys_core.serving.explain_media import FrameAttribution, SegmentAttribution

log = logging.getLogger(__name__)

#: Samples per second decoded for a waveform: enough for its outline (a 10-minute track is 4.8 M samples).
DISPLAY_RATE = 8000
#: Columns of the waveform's outline (min/max of the samples in each).
WAVEFORM_COLUMNS = 480
#: The same code as the word highlights and the parts chart (ui.render.EFFECT_COLORS): red raised, blue lowered.
RAISED_COLOR, LOWERED_COLOR = "#dc2626", "#2563eb"
RAISED_LABEL, LOWERED_LABEL = "raised the score", "lowered the score"
_NEUTRAL = "#9ca3af"
#: The audio plot's size in inches at 100 dpi (640 x 360 px).
FIGSIZE = (6.4, 3.6)
#: Side of a keyframe tile in the strip (the longer side; the gallery shows it scaled).
FRAME_SIDE = 240


# -- what the players and the plots read ----------------------------------------------------------
def item_audio_file(item: "Item") -> str | None:
    """The file the audio player plays: the item's own audio (its video's soundtrack plays in the video player)."""
    return str(item.audio) if item.audio is not None else None


def item_video_file(item: "Item") -> str | None:
    return str(item.video) if item.video is not None else None


def players(item: "Item | None") -> tuple:
    """(audio player, video player) values for ``item`` (None: nothing to play): each plays the item's own file
    and is hidden (and emptied) without one; a clip's soundtrack plays in the video player."""
    import gradio as gr

    audio = item_audio_file(item) if item is not None else None
    video = item_video_file(item) if item is not None else None
    return gr.Audio(value=audio, visible=audio is not None), gr.Video(value=video, visible=video is not None)


#: Below this no step is said to have moved the score: it would print as 0.000 (a part that counts for nothing,
#: e.g. the audio of an item explained for a profile without audio).
MOVED = 5e-4


def moved(steps) -> bool:
    """Whether any segment or keyframe in ``steps`` moved the score by a printed amount."""
    return any(abs(step.attribution) >= MOVED for step in steps)


#: Keyframe tiles per row of the strip, and the height of one row (tile and caption) in pixels.
STRIP_COLUMNS, STRIP_ROW_PX = 4, 130
#: Before the caption of the keyframe that moved the score most (the one with its regions drawn).
TOP_FRAME_MARK = "\u2605"


def strip_layout(count: int) -> dict:
    """``gr.Gallery`` sizes that show all ``count`` keyframes without a scroll bar."""
    rows = max(1, -(-count // STRIP_COLUMNS))
    return {"columns": STRIP_COLUMNS, "height": 40 + rows * STRIP_ROW_PX}


def segments_end(segments: Sequence["SegmentAttribution"]) -> float:
    return max((s.end_s for s in segments), default=0.0)


def waveform(source: str | Path, *, limits: "MediaLimits", seconds: float | None = None) -> np.ndarray | None:
    """Mono samples at :data:`DISPLAY_RATE` of ``source`` (audio, or a video's soundtrack), at most ``seconds``
    of it; None when it cannot be decoded (the plot then shows the segments without the waveform)."""
    from recsys_core.data.media import decode_audio

    try:
        return decode_audio(source, sample_rate=DISPLAY_RATE, limits=limits, max_seconds=seconds).samples
    except InvalidInputError as exc:  # changed or broken since its features were made: draw without it
        log.warning("no waveform for %s: %s", Path(source).name, exc)
        return None


@functools.lru_cache(maxsize=32)
def _catalog_waveform(path: str, mtime_ns: int, limits: "MediaLimits", seconds: float | None) -> np.ndarray | None:
    # Catalog files only (shared by every visitor, keyed by their modification time); uploads are not kept.
    samples = waveform(path, limits=limits, seconds=seconds)
    if samples is not None:
        samples.setflags(write=False)
    return samples


def catalog_waveform(path: str | Path, *, limits: "MediaLimits", seconds: float | None = None) -> np.ndarray | None:
    """:func:`waveform` of a catalog file, cached: the same track is explained for many profiles."""
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError:
        return None
    return _catalog_waveform(str(path), mtime, limits, None if seconds is None else round(float(seconds), 3))


def keyframes(source: str | Path, *, config: "VideoEncoderConfig", limits: "MediaLimits"
              ) -> list[tuple[float, Image.Image]]:
    """(time, frame) of the keyframes of ``source``, sampled as the video encoder samples them (``config``: the
    service's ``VideoEncoderConfig``, as in ``VideoEncoder.decode``); [] when the clip cannot be decoded (the
    strip then shows the attributions on blank tiles)."""
    from recsys_core.data.media import decode_video_frames

    try:
        decoded = decode_video_frames(source, frames_per_second=config.frames_per_second,
                                      min_frames=config.min_frames, max_frames=config.max_frames,
                                      max_side=min(config.max_side, FRAME_SIDE), limits=limits)
    except InvalidInputError as exc:
        log.warning("no keyframes for %s: %s", Path(source).name, exc)
        return []
    return list(zip(decoded.times_s, decoded.frames))


@functools.lru_cache(maxsize=16)
def _catalog_keyframes(path: str, mtime_ns: int, config: "VideoEncoderConfig", limits: "MediaLimits"
                       ) -> tuple[tuple[float, Image.Image], ...]:
    return tuple(keyframes(path, config=config, limits=limits))


def catalog_keyframes(path: str | Path, *, config: "VideoEncoderConfig", limits: "MediaLimits"
                      ) -> list[tuple[float, Image.Image]]:
    """:func:`keyframes` of a catalog clip, cached (at most 16 clips of at most 16 small frames)."""
    try:
        mtime = Path(path).stat().st_mtime_ns
    except OSError:
        return []
    return list(_catalog_keyframes(str(path), mtime, config, limits))


# -- the audio plot -------------------------------------------------------------------------------
def _density(segments: Sequence["SegmentAttribution"], times: np.ndarray) -> np.ndarray:
    """Attribution per second at ``times``: each segment's attribution spread evenly over its span, summed where
    segments overlap, so the curve's integral over the track is the sum of the attributions (the audio part)."""
    out = np.zeros_like(times)
    for s in segments:
        span = max(s.end_s - s.start_s, 1e-9)
        out[(times >= s.start_s) & (times < s.end_s)] += s.attribution / span
    return out


def _mix(color: str, weight: float) -> tuple[float, float, float]:
    """``color`` faded towards light grey as ``weight`` goes from 1 to 0 (strong evidence = strong colour)."""
    from matplotlib.colors import to_rgb

    base, grey = np.array(to_rgb(color)), np.array(to_rgb("#e5e7eb"))
    return tuple(grey + (base - grey) * float(np.clip(weight, 0.0, 1.0)))  # type: ignore[return-value]


def audio_attribution_image(samples: np.ndarray | None, segments: Sequence["SegmentAttribution"], *, part: float,
                            title: str, sample_rate: int = DISPLAY_RATE) -> Image.Image:
    """The waveform of ``samples`` (None: the segments alone), each moment coloured by the attribution per
    second of the segments covering it (red raised the score, blue lowered it, pale = little effect), over one
    bar per segment (its Shapley value). ``part``: the audio part the bars add up to, said under the bars with
    ``title`` (the item's name)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    end = segments_end(segments)
    duration = len(samples) / sample_rate if samples is not None and len(samples) else end
    duration = max(duration, 1e-3)
    # Sized for the results column (about 470 px wide on a laptop, 310 px high): the fonts stay readable there.
    fig = Figure(figsize=FIGSIZE, dpi=100)
    FigureCanvasAgg(fig)
    wave_ax, bar_ax = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1.3], "hspace": 0.08})
    edges = np.linspace(0.0, duration, WAVEFORM_COLUMNS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    density = _density(segments, centres)
    peak = float(np.abs(density).max()) or 1.0
    colors = [_mix(RAISED_COLOR if d > 0 else LOWERED_COLOR, abs(d) / peak) if d else _mix(_NEUTRAL, 0.0)
              for d in density]
    if samples is not None and len(samples):
        samples = np.asarray(samples, dtype=np.float32)
        samples = samples / (float(np.abs(samples).max()) or 1.0)  # an outline: quiet tracks fill the height too
        cols = np.array_split(samples, WAVEFORM_COLUMNS)
        low = np.array([c.min() if c.size else 0.0 for c in cols])
        high = np.array([c.max() if c.size else 0.0 for c in cols])
        high = np.maximum(high, low + 2e-3)  # silence still shows as a thin line
        # A touch wider than a column: exact widths leave hairline gaps where the rounding falls.
        wave_ax.bar(centres, high - low, bottom=low, width=(edges[1] - edges[0]) * 1.05, color=colors, linewidth=0)
        wave_ax.set_ylim(-1.05, 1.05)
    else:  # no waveform: colour the time line itself
        wave_ax.bar(centres, 2.0, bottom=-1.0, width=(edges[1] - edges[0]) * 1.05, color=colors, linewidth=0)
        wave_ax.text(duration / 2, 0, "waveform unavailable", ha="center", va="center", fontsize=10, color="#374151")
        wave_ax.set_ylim(-1.05, 1.05)
    wave_ax.set_yticks([])
    for side in ("top", "right", "left"):
        wave_ax.spines[side].set_visible(False)

    starts = sorted({round(s.start_s, 6) for s in segments})
    hop = min((b - a for a, b in zip(starts, starts[1:])), default=max(end, duration))
    # One bar per segment at its middle: segments overlap (a block every hop), their middles are a hop apart.
    for s in segments:
        centre = (s.start_s + s.end_s) / 2
        color = RAISED_COLOR if s.attribution > 0 else LOWERED_COLOR
        bar_ax.bar(centre, s.attribution, width=hop * 0.9, color=color, linewidth=0)
    bar_ax.axhline(0.0, color="#6b7280", linewidth=0.8)
    if segments:
        top = max(segments, key=lambda s: abs(s.attribution))
        centre = (top.start_s + top.end_s) / 2
        edge = "right" if centre > duration * 0.92 else "left" if centre < duration * 0.08 else "center"
        bar_ax.annotate(f"{top.attribution:+.3f}".replace("-", "\u2212"), (min(centre, duration), top.attribution),
                        textcoords="offset points", xytext=(0, 3 if top.attribution >= 0 else -10),
                        ha=edge, fontsize=9)
        lim = max(abs(s.attribution) for s in segments) * 1.3 or 1.0
        bar_ax.set_ylim(-lim if any(s.attribution < 0 for s in segments) else -lim * 0.08, lim)
    bar_ax.set_xlim(0.0, duration)
    bar_ax.set_xlabel("seconds", fontsize=10, loc="right")
    bar_ax.set_ylabel("per segment", fontsize=9)
    bar_ax.tick_params(labelsize=9)
    for side in ("top", "right"):
        bar_ax.spines[side].set_visible(False)
    legend = [Patch(color=RAISED_COLOR, label=RAISED_LABEL), Patch(color=LOWERED_COLOR, label=LOWERED_LABEL)]
    wave_ax.legend(handles=legend, loc="lower right", fontsize=9, frameon=False, ncol=2, bbox_to_anchor=(1.0, 1.0),
                   borderaxespad=0.1, handlelength=1.2, columnspacing=1.0)
    total = f"{part:+.3f}".replace("-", "\u2212")
    # The title goes with the numbers at the bottom: Gradio floats the component's label over the top left.
    name = title if len(title) <= 40 else title[:39] + "\u2026"
    bar_ax.text(0.0, -0.66, f"{name}: {len(segments)} segment(s), adding up to the audio part {total}",
                transform=bar_ax.transAxes, ha="left", fontsize=9, color="#374151")
    fig.subplots_adjust(left=0.14, right=0.98, top=0.88, bottom=0.22)
    return _to_image(fig)


def _to_image(fig) -> Image.Image:
    fig.canvas.draw()
    width, height = fig.canvas.get_width_height()
    rgba = np.asarray(fig.canvas.buffer_rgba()).reshape(height, width, 4)
    return Image.fromarray(rgba[..., :3].copy())


# -- the keyframe strip ---------------------------------------------------------------------------
def _overlay(frame: Image.Image, heatmap: np.ndarray, color: str) -> Image.Image:
    """``frame`` with ``heatmap`` ([H, W] in [0, 1], over the image encoder's centre crop) laid on it in ``color``."""
    from matplotlib.colors import to_rgb

    frame = frame.convert("RGB")
    width, height = frame.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    heat = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype("uint8")).resize((side, side), Image.BILINEAR)
    alpha = Image.new("L", (width, height), 0)
    alpha.paste(heat.point(lambda v: int(v * 0.65)), (left, top))
    tint = Image.new("RGB", (width, height), tuple(int(c * 255) for c in to_rgb(color)))
    return Image.composite(tint, frame, alpha)


def _tile(frame: Image.Image | None, attribution: float, peak: float) -> Image.Image:
    """A keyframe scaled to :data:`FRAME_SIDE` with a bar under it: its length is the attribution's size (of the
    largest in the strip), its colour the direction."""
    if frame is None:
        frame = Image.new("RGB", (FRAME_SIDE, FRAME_SIDE * 3 // 4), "#e5e7eb")
    frame = frame.convert("RGB")
    scale = FRAME_SIDE / max(frame.size)
    frame = frame.resize((max(1, round(frame.width * scale)), max(1, round(frame.height * scale))))
    bar = 14
    tile = Image.new("RGB", (frame.width, frame.height + bar + 4), "white")
    tile.paste(frame, (0, 0))
    length = int(round(frame.width * min(abs(attribution) / peak, 1.0))) if peak else 0
    color = RAISED_COLOR if attribution > 0 else LOWERED_COLOR
    draw = ImageDraw.Draw(tile)
    draw.rectangle([0, frame.height + 2, frame.width - 1, frame.height + 2 + bar], fill="#f3f4f6")
    if length:
        draw.rectangle([0, frame.height + 2, length - 1, frame.height + 2 + bar], fill=color)
    return tile


def keyframe_strip(frames: Sequence[tuple[float, Image.Image]], attributions: Sequence["FrameAttribution"]
                   ) -> list[tuple[Image.Image, str]]:
    """(tile, caption) per keyframe for a ``gr.Gallery``: the frame nearest each attribution's time, a bar for its
    share of the largest attribution (red raised, blue lowered), and on the frame with a heatmap (the one that
    moved the score most) its regions, its caption marked with :data:`TOP_FRAME_MARK`. Captions: time · attribution
    (they add up to the video part); short, so that they fit a tile."""
    peak = max((abs(a.attribution) for a in attributions), default=0.0)
    out = []
    for a in attributions:
        frame = min(frames, key=lambda tf: abs(tf[0] - a.t_s))[1] if frames else None
        color = RAISED_COLOR if a.attribution >= 0 else LOWERED_COLOR
        if frame is not None and a.heatmap is not None:
            frame = _overlay(frame, a.heatmap, color)
        value = f"{a.attribution:+.3f}".replace("-", "\u2212")
        caption = (f"{TOP_FRAME_MARK} " if a.heatmap is not None else "") + f"{a.t_s:.1f} s · {value}"
        out.append((_tile(frame, a.attribution, peak), caption))
    return out
