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
