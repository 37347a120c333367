"""Pictures for people: 8-bit conversion, the crop that shows a degradation best, which pairs to show.

Crops: a window of at most `CROP` pixels a side where the degraded input differs most from its
target (the window with the largest summed absolute error), or the centre when they agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from colora.core.errors import InvalidInputError

CROP = 256


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 float in [0, 1] -> uint8, rounded."""
    return (np.clip(np.asarray(rgb, dtype=np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def error_crop(degraded: np.ndarray, target: np.ndarray, size: int = CROP) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the size x size window (clipped to the image) with the largest
    summed absolute error between `degraded` and `target`; the centred window when they agree."""
    if degraded.shape != target.shape:
        raise InvalidInputError(f"cannot compare images of shapes {degraded.shape} and {target.shape}")
    h, w = degraded.shape[:2]
    ch, cw = min(size, h), min(size, w)
    err = np.abs(np.asarray(degraded, np.float64) - np.asarray(target, np.float64))
    err = err.mean(axis=2) if err.ndim == 3 else err
    if not np.any(err > 0):
        return (h - ch) // 2, (w - cw) // 2, ch, cw
    integral = np.zeros((h + 1, w + 1))
    integral[1:, 1:] = err.cumsum(0).cumsum(1)
    sums = integral[ch:, cw:] - integral[:-ch, cw:] - integral[ch:, :-cw] + integral[:-ch, :-cw]
    top, left = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return int(top), int(left), ch, cw


def pick_examples(per_pair: Sequence[Sequence]) -> list[tuple[list[str], str]]:
    """Best, median and worst of [[stem, psnr, ssim], ...] by PSNR: [(kinds, stem)], best first;
    a pair that is several of them (fewer than 3 pairs) appears once with all its kinds."""
    ranked = sorted(per_pair, key=lambda r: (r[1] if math.isfinite(r[1]) else -math.inf, r[0]))
    if not ranked:
        return []
    picks = [("best", ranked[-1][0]), ("median", ranked[(len(ranked) - 1) // 2][0]), ("worst", ranked[0][0])]
    out: list[tuple[list[str], str]] = []
    for kind, stem in picks:
        for kinds, seen in out:
            if seen == stem:
                kinds.append(kind)
                break
        else:
            out.append(([kind], stem))
    return out
