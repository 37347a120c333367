"""Inference: whole images of any size, in overlapping tiles so memory stays bounded.

The network pads each tile to its multiple and crops back; tiles overlap by `overlap`
pixels and are blended with a linear ramp, so seams do not show.
"""

from __future__ import annotations

import torch
from torch import nn

from colora.core.choices import MIN_TILE
from colora.core.defaults import TILE
from colora.core.errors import InvalidInputError

DEFAULT_TILE = TILE
DEFAULT_OVERLAP = 32


def _starts(size: int, tile: int, step: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, step))
    return starts + [size - tile]


def _ramp(length: int, overlap: int, at_start: bool, at_end: bool, device, dtype) -> torch.Tensor:
    w = torch.ones(length, device=device, dtype=dtype)
    ramp = torch.linspace(0, 1, overlap + 2, device=device, dtype=dtype)[1:-1]
    if overlap and not at_start:
        w[:overlap] = ramp
    if overlap and not at_end:
        w[-overlap:] = ramp.flip(0)
    return w


@torch.no_grad()
def check_tile(tile: int) -> int:
    """0 (the whole image) or a tile of at least MIN_TILE pixels: smaller tiles would run one
    forward pass per few pixels for hours."""
    if tile < 0 or 0 < tile < MIN_TILE:
        raise InvalidInputError(
            f"--tile must be 0 (the whole image) or at least {MIN_TILE}, got {tile}",
            hint="leave it out: the default (512) keeps memory bounded on any image",
        )
    return tile


def restore_tensor(
    model: nn.Module,
    image: torch.Tensor,
    tile: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    *,
    self_ensemble: bool = False,
) -> torch.Tensor:
    """(3, H, W) in [0, 1] -> restored (3, H, W) in [0, 1], on the model's device.

    tile <= 0 means the whole image in one pass. `model` may also be a callable that is no torch
    module (an ONNX engine, core/inference/engines.py): it computes on the CPU. `self_ensemble`:
    each tile is restored as the average over its 8 flips and quarter turns (8x the time).
    """
    check_tile(tile)
    if self_ensemble:
        from colora.core.inference.ensemble import SelfEnsemble

        model = SelfEnsemble(model)
    device = _device_of(model)
    x = image.to(device).unsqueeze(0)
    _, _, h, w = x.shape
    if tile <= 0 or (h <= tile and w <= tile):
        return model(x)[0].clamp(0, 1)
    overlap = max(0, min(overlap, tile // 4))
    step = tile - overlap
    out = torch.zeros_like(x)
    weight = torch.zeros((1, 1, h, w), device=device, dtype=x.dtype)
    ys, xs = _starts(h, tile, step), _starts(w, tile, step)
    for top in ys:
        for left in xs:
            patch = x[:, :, top : top + tile, left : left + tile]
            ph, pw = patch.shape[-2:]
            wy = _ramp(ph, overlap, top == 0, top + ph >= h, device, x.dtype)
            wx = _ramp(pw, overlap, left == 0, left + pw >= w, device, x.dtype)
            mask = (wy[:, None] * wx[None, :])[None, None]
            out[:, :, top : top + ph, left : left + pw] += model(patch) * mask
            weight[:, :, top : top + ph, left : left + pw] += mask
    return out.div_(weight)[0].clamp_(0, 1)  # in place: on a 50 MP photo each copy is 600 MB


def _device_of(model) -> torch.device:
    params = model.parameters() if isinstance(model, nn.Module) else iter(())
    return next(params, torch.empty(0)).device


def restore_array(model: nn.Module, rgb, tile: int = DEFAULT_TILE):
    """Restore one H x W x 3 float image in [0, 1] (numpy) with `model`; returns the same kind."""
    import numpy as np

    from colora.core.data.crops import to_numpy, to_tensor

    return to_numpy(restore_tensor(model.eval(), to_tensor(np.asarray(rgb, dtype=np.float32)), tile))
