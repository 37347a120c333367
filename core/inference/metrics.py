"""PSNR and SSIM through piq, on RGB in [0, 1] over the whole image (no border crop)."""

from __future__ import annotations

import piq
import torch


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """One image pair, (3, H, W) or (1, 3, H, W)."""
    return float(piq.psnr(_batch(pred), _batch(target), data_range=1.0))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    x, y = _batch(pred), _batch(target)
    # piq's default 11x11 window needs at least 11 pixels; tiny images get the largest odd window that fits
    side = min(x.shape[-2:])
    kernel = min(11, side if side % 2 else side - 1)
    if kernel < 1:
        return float("nan")
    return float(piq.ssim(x, y, data_range=1.0, kernel_size=kernel))


def _batch(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().float().clamp(0, 1)
    return t.unsqueeze(0) if t.dim() == 3 else t
