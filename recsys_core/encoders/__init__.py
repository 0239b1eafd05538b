"""Pretrained encoders: text (Hugging Face AutoModel) and image (timm CNN), their trainable tops, and
feature extraction with its on-disk cache.

Neither ``forward`` runs under ``no_grad``: Captum needs gradients through them. Batch helpers
(`encode`) switch to inference mode themselves.
"""
