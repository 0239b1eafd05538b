"""Audio encoder: one embedding per time segment of a clip, and their mean as the clip's vector.

The default is the CNN of Ma & Lerch, "Representation learning for the automatic indexing of sound
effects libraries" (ISMIR 2022), whose weights ship inside the ``aisfx`` 0.1.2 wheel: a 96-band
log-mel spectrogram at 44.1 kHz, cut into blocks of 100 frames (2.32 s), back to back by default
(``AudioEncoderConfig.hop_fraction``), each block -> 512-d. Those blocks are the *segments* that explanations attribute over ("which seconds
raised the score"): each segment's vector is kept, so an attribution never re-runs the CNN.

The spectrogram follows the package's own librosa path (``aisfx.spectrogram.spectrogram_librosa``)
with its time axis first (the network reads ``[time, mel]``; the package's helper returns
``[mel, time]`` and its blocking would then cut along the mel axis), normalised with the package's
"original" min/max. The vectors are ReLU outputs (non-negative): the zero-shot model centres them on
the catalog mean before any cosine, as it does for the other encoders.
"""

from __future__ import annotations

import hashlib
import numpy as np
import torch
from torch import nn

from recsys_core.config import AudioEncoderConfig
from recsys_core.encoders.sequence import TimeSteps

SAMPLE_RATE = 44_100
N_FFT = 2048  # the package's SPEC_BLOCK_LENGTH
HOP = 1024  # SPEC_HOP_LENGTH: one spectrogram frame = 23.2 ms
N_MELS = 96
BLOCK_FRAMES = 100  # EMB_BLOCK_LENGTH: one segment = 100 frames = 2.32 s
SPEC_MAX = 9.457798957824707  # aisfx.preprocessing.spectrogram_normalize(spec_norm="original")


def segment_times(count: int, hop_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Start and end (seconds) of ``count`` blocks of BLOCK_FRAMES frames every ``hop_frames`` frames."""
    frame_s = HOP / SAMPLE_RATE
    starts = torch.arange(count, dtype=torch.float32) * hop_frames * frame_s
    return starts, starts + BLOCK_FRAMES * frame_s


class AudioEncoder(nn.Module):
    """``net``: spectrogram blocks [B, BLOCK_FRAMES, N_MELS] -> vectors [B, dim]."""

    def __init__(self, net: nn.Module, config: AudioEncoderConfig, weights_id: str, dim: int) -> None:
        super().__init__()
        self.net = net.eval()
        self.config = config
        self.weights_id = weights_id
        self._dim = dim
        self.hop_frames = max(1, int(round(BLOCK_FRAMES * config.hop_fraction)))

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @property
    def cache_key(self) -> str:
        raw = f"audio|{self.weights_id}|{self.hop_frames}|{N_MELS}|{SAMPLE_RATE}"
        return "audio-" + hashlib.sha256(raw.encode()).hexdigest()[:16]

    def decode(self, source, *, limits, name: str | None = None):
        """The first audio stream of an audio or video file as this encoder reads it (``recsys_core.data.media.AudioClip``,
        mono at SAMPLE_RATE, at most ``config.max_seconds``)."""
        from recsys_core.data.media import decode_audio

        return decode_audio(source, sample_rate=SAMPLE_RATE, limits=limits, name=name, max_seconds=self.config.max_seconds)

    @staticmethod
    def spectrogram(samples: np.ndarray) -> np.ndarray:
        """Normalised log-mel spectrogram [frames, N_MELS] of mono float samples at SAMPLE_RATE."""
        import librosa  # imported here: librosa (numba) is slow to import and only audio needs it

        y = np.asarray(samples, dtype=np.float32)
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        y = y / peak if peak > 0 else y
        if y.size < N_FFT:  # a clip shorter than one FFT window still gets one (silent-padded) frame
            y = np.pad(y, (0, N_FFT - y.size))
        mel = librosa.feature.melspectrogram(y=y, sr=SAMPLE_RATE, n_mels=N_MELS, norm=1.0, fmin=0.0,
                                             fmax=SAMPLE_RATE / 2, htk=True, power=2.0, hop_length=HOP,
                                             win_length=N_FFT, n_fft=N_FFT)
        return (np.log10(mel * 10000.0 + 1.0) / SPEC_MAX).T.astype(np.float32)

    def blocks(self, spec: np.ndarray) -> torch.Tensor:
        """Blocks [S, BLOCK_FRAMES, N_MELS]: every ``hop_frames``, the last one zero-padded (a clip under
        one block, e.g. a 1 s upload, is one padded block); the package's blocking drops partial blocks."""
        frames = spec.shape[0]
        count = 1 if frames <= BLOCK_FRAMES else 1 + int(np.ceil((frames - BLOCK_FRAMES) / self.hop_frames))
        padded = np.zeros((self.hop_frames * (count - 1) + BLOCK_FRAMES, spec.shape[1]), dtype=np.float32)
        padded[:frames] = spec
        index = np.arange(count)[:, None] * self.hop_frames + np.arange(BLOCK_FRAMES)[None, :]
        return torch.from_numpy(padded[index])

    @torch.no_grad()
    def encode_blocks(self, blocks: torch.Tensor) -> torch.Tensor:
        out = []
        for begin in range(0, blocks.shape[0], self.config.batch_size):
            out.append(self.net(blocks[begin:begin + self.config.batch_size].to(self.device)).float().cpu())
        return torch.cat(out) if out else torch.empty(0, self.dim)

    def encode(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> TimeSteps:
        """Segment vectors of mono float samples (resampled by the decoder to SAMPLE_RATE), pooled uniformly."""
        if sample_rate != SAMPLE_RATE:
            raise ValueError(f"audio must be decoded at {SAMPLE_RATE} Hz for this encoder; got {sample_rate} Hz")
        limit = int(self.config.max_seconds * SAMPLE_RATE)
        blocks = self.blocks(self.spectrogram(np.asarray(samples)[:limit]))
        vectors = self.encode_blocks(blocks)
        starts, ends = segment_times(vectors.shape[0], self.hop_frames)
        return TimeSteps(vectors=vectors, starts_s=starts, ends_s=ends, weights=torch.ones(vectors.shape[0]))


def load_aisfx_net() -> tuple[nn.Module, str]:
    """The aisfx embedding CNN with the weights packaged in the ``aisfx`` wheel (no download).

    The checkpoint is a pickle of (state dict, dataset dict) whose dataset dict holds NumPy integers, so
    ``weights_only`` loading allows exactly those NumPy types and nothing else (no arbitrary code).
    """
    from aisfx.inference import get_path_modelWeights
    from aisfx.models.cnn2d import EmbeddingNet

    path = get_path_modelWeights()
    allowed = [(np._core.multiarray.scalar, "numpy.core.multiarray.scalar"), np.dtype, np.dtypes.Int64DType]
    with torch.serialization.safe_globals(allowed):
        weights, _datasets = torch.load(path, map_location="cpu", weights_only=True)
    prefix = "embedding_net."
    net = EmbeddingNet("max", 3, 1, 64)  # X-Sequential-CE, as aisfx.inference.load_bestModel builds it
    net.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)})
    # channels_last: the same numbers (to ~1e-5), about 18% faster on a 2-core CPU for a 20 s clip's 9-17 blocks.
    return net.eval().to(memory_format=torch.channels_last), "aisfx-0.1.2:checkpoint.pth"
