"""`--task auto`'s second look: of the nearest candidates, the restoration the backbone would change least.

The degradation signature (`core.recycle.signature`) tells kinds of degradation apart but not their
strengths: rain against synthetic rain, Gaussian blur against defocus look alike to it, and their
adapters differ in how much they take away (most of `bench/auto_choice.py`'s misses). The frozen
backbone was pre-trained to undo every kind of degradation (PROD), so one more backbone pass over a
candidate's output measures what is left to undo, or what the adapter invented: the candidate it
would change least is kept. Measured on the central crop the signature reads (at most CROP px a
side), so the choice costs a few crop-sized passes whatever the photo's size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from colora.core.data.crops import center_crop
from colora.core.recycle.signature import CROP

TOP = 3  # the candidates bench/auto_choice.py's "settle" arms score (`restore --auto-candidates`, default 1)


@torch.no_grad()
def backbone_change(backbone: nn.Module, restored: torch.Tensor) -> float:
    """Mean squared change one more backbone pass makes to a restored (3, H, W) image in [0, 1]."""
    return float((backbone(restored[None])[0].clamp(0, 1) - restored).pow(2).mean())


@torch.no_grad()
def settle(
    image: torch.Tensor,
    candidates: Sequence[str],
    restore: Callable[[str, torch.Tensor], torch.Tensor],
    backbone: nn.Module,
) -> tuple[str, dict[str, float]]:
    """(the candidate whose restoration of `image`'s central crop the backbone changes least, every
    candidate's change). `restore(name, crop)` is that candidate's output on the crop."""
    if not candidates:
        raise ValueError("settle needs at least one candidate")
    crop = center_crop(image.float(), CROP)
    changes = {name: backbone_change(backbone, restore(name, crop).clamp(0, 1)) for name in candidates}
    return min(changes, key=changes.get), changes
