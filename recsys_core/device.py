"""Device selection: ``auto`` takes CUDA when present, CPU otherwise."""

from __future__ import annotations

import torch

from recsys_core.errors import InvalidInputError


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
    if name not in ("cpu", "cuda"):
        raise InvalidInputError(f"device {name!r} is not allowed; use auto, cpu or cuda")
    return torch.device(name)


def extraction_autocast(device: torch.device):
    """bf16 autocast for batched feature extraction on a CUDA GPU that supports it; a no-op on CPU.

    Only extraction (``encode``) uses it: explanations differentiate through the encoders and keep
    fp32. bf16 features differ from fp32 ones by well under 1% relative, far below what separates
    neighbours, and are cached like any others (the cache key names the weights, not the precision).
    """
    import contextlib

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
