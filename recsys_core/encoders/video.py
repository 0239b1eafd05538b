"""Video encoder: keyframes read by the image encoder, pooled over time by attention.

No video model ships in a wheel we can install offline (ARCHITECTURE.md lists what was checked), so a
clip is its keyframes: sampled at the centres of equal intervals (``recsys_core.data.media.keyframe_times``,
symmetric around the middle frame as MicroLens samples, never the first or last frame, which are often
black or a fade), each encoded by the catalog's image encoder, and pooled with parameter-free attention
(:func:`recsys_core.encoders.sequence.attention_weights`). The soundtrack goes through the audio encoder
(``recsys_core.encoders.features``), not here.
"""

from __future__ import annotations

import hashlib

import torch

from recsys_core.config import VideoEncoderConfig
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.sequence import TimeSteps, attention_weights


class VideoEncoder:
    def __init__(self, image_encoder: ImageEncoder, config: VideoEncoderConfig) -> None:
        self.image_encoder = image_encoder
        self.config = config

    @property
    def dim(self) -> int:
        return self.image_encoder.dim

    @property
    def cache_key(self) -> str:
        c = self.config
        raw = (f"video|{self.image_encoder.cache_key}|{c.frames_per_second}|{c.min_frames}|{c.max_frames}|{c.max_side}"
               f"|{c.temperature}")
        return "video-" + hashlib.sha256(raw.encode()).hexdigest()[:16]

    def decode(self, source, *, limits, name: str | None = None):
        """Keyframes of a clip (``recsys_core.data.media.VideoFrames``), as this encoder samples them."""
        from recsys_core.data.media import decode_video_frames

        c = self.config
        return decode_video_frames(source, frames_per_second=c.frames_per_second, min_frames=c.min_frames,
                                   max_frames=c.max_frames, max_side=c.max_side, limits=limits, name=name)

    def encode(self, frames) -> TimeSteps:
        """``frames``: decoded keyframes (``VideoFrames``) -> one vector per keyframe and their attention weights."""
        vectors = self.image_encoder.encode(list(frames.frames), keep_regions=False).pooled.float()
        times = torch.tensor(frames.times_s, dtype=torch.float32)
        return TimeSteps(vectors=vectors, starts_s=times, ends_s=times.clone(),
                         weights=attention_weights(vectors, self.config.temperature))

    def weights_for(self, vectors: torch.Tensor) -> torch.Tensor:
        return attention_weights(vectors, self.config.temperature)
