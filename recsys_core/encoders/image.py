"""Image encoder: a timm CNN keeping its final feature map (regions) and the pooled vector."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image
from torch import nn

from recsys_core.config import ImageEncoderConfig


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
