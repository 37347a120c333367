"""Choosing where tensors live."""

from __future__ import annotations

import torch

from colora.core.choices import DEVICES
from colora.core.errors import InvalidInputError


def resolve_device(name: str = "auto") -> torch.device:
    if name not in DEVICES:
        raise InvalidInputError(f"unknown device {name!r}; use one of {', '.join(DEVICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError("--device cuda was asked for, but no CUDA GPU is available", hint="use --device cpu")
    return torch.device(name)
