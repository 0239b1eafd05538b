"""Pretrained encoders: text (Hugging Face AutoModel) and image (timm CNN).

Neither ``forward`` runs under ``no_grad``: Captum needs gradients through them. Batch helpers
(`encode`) switch to inference mode themselves.
"""

from recsys_core.encoders.image import ImageEncoder, ImageFeatures, build_image_encoder
from recsys_core.encoders.text import TextEncoder, build_text_encoder

__all__ = ["ImageEncoder", "ImageFeatures", "TextEncoder", "build_image_encoder", "build_text_encoder"]
