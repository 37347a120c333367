"""Self-ensemble: a model averaged over the 8 flips and quarter turns of its input (the "x8" of
EDSR+ and the NTIRE entries). The network is not equivariant to them, so its errors partly cancel:
8x the time for a fraction of a dB (BENCHMARKS.md, bench/quality.py --self-ensemble)."""

from __future__ import annotations

import torch
from torch import nn


def _dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th (0..7) of the 8 symmetries of the square on (N, C, H, W): k % 4 quarter turns, then a
    left-right flip when k >= 4."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return x.flip(-1) if k >= 4 else x


def _undo(y: torch.Tensor, k: int) -> torch.Tensor:
    y = y.flip(-1) if k >= 4 else y
    return torch.rot90(y, -(k % 4), dims=(-2, -1))


class SelfEnsemble(nn.Module):
    """`inner` (a torch module or a callable such as an ONNX engine) on each of the 8 transforms of
    the input, each output mapped back, averaged. Same input and output shapes as `inner`."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner  # a module registers (so .to() and .parameters() reach it); a callable is kept as is

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for k in range(8):
            y = _undo(self.inner(_dihedral(x, k).contiguous()), k)
            total = y if total is None else total.add_(y)
        return total.div_(8)
