"""Training data: pairs held in memory, random crops and flips drawn from a seeded generator.

Training sets are small on purpose (16 to 128 pairs), so they live in memory as float16
(exact enough for 8-bit images and half the size of float32).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from colora.core.data.images import load_image
from colora.core.errors import InvalidInputError


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """HxWx3 float32 in [0, 1] -> 3xHxW."""
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """3xHxW -> HxWx3 float32, clamped to [0, 1]."""
    return t.detach().clamp(0, 1).float().cpu().numpy().transpose(1, 2, 0)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The centre of (..., H, W), at most size x size."""
    h, w = x.shape[-2:]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return x[..., top : top + size, left : left + size]


def load_pair(input_path: str, target_path: str) -> tuple[torch.Tensor, torch.Tensor]:
    degraded, _, _ = load_image(input_path)
    clean, _, _ = load_image(target_path)
    return to_tensor(degraded), to_tensor(clean)


class PairSet:
    """(degraded, clean) pairs as 3xHxW tensors."""

    def __init__(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor]]):
        if not pairs:
            raise InvalidInputError("no training pairs")
        self.pairs = [(x.half(), y.half()) for x, y in pairs]

    @classmethod
    def from_files(cls, paths: Sequence[tuple[str, str]]) -> "PairSet":
        return cls([load_pair(a, b) for a, b in paths])

    def __len__(self) -> int:
        return len(self.pairs)

    def smallest_side(self) -> int:
        return min(min(x.shape[-2:]) for x, _ in self.pairs)

    def sample_batch(
        self, batch_size: int, patch: int, gen: torch.Generator, keep: range | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random pairs, random aligned crops, random flips and 90-degree turns.

        Crops come from the pairs that can hold a patch x patch crop, so one tiny pair does not
        shrink every crop; only when no pair is that large does the patch shrink to fit. `keep`:
        only these samples of the batch are built (the random draws are all made, in order, so
        every slice of a batch is the slice of the same batch; core/training/distributed.py).
        """
        pool = [p for p in self.pairs if min(p[0].shape[-2:]) >= patch]
        if not pool:
            pool, patch = self.pairs, self.smallest_side()
        xs, ys = [], []
        for i in range(batch_size):
            x, y = pool[int(torch.randint(len(pool), (1,), generator=gen))]
            h, w = x.shape[-2:]
            top = int(torch.randint(h - patch + 1, (1,), generator=gen))
            left = int(torch.randint(w - patch + 1, (1,), generator=gen))
            ops = augment_ops(gen)
            if keep is not None and i not in keep:
                continue
            x = x[:, top : top + patch, left : left + patch]
            y = y[:, top : top + patch, left : left + patch]
            x, y = apply_augment(torch.stack([x, y]), ops)
            xs.append(x)
            ys.append(y)
        return torch.stack(xs).float(), torch.stack(ys).float()


def augment(t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Same flip / transpose for every image in `t` (..., H, W): the 8 dihedral symmetries."""
    return apply_augment(t, augment_ops(gen))


def augment_ops(gen: torch.Generator) -> list[int]:
    """The random draws of `augment`: horizontal flip, vertical flip, transpose."""
    return torch.randint(2, (3,), generator=gen).tolist()


def apply_augment(t: torch.Tensor, ops: list[int]) -> torch.Tensor:
    if ops[0]:
        t = t.flip(-1)
    if ops[1]:
        t = t.flip(-2)
    if ops[2] and t.shape[-1] == t.shape[-2]:
        t = t.transpose(-1, -2)
    return t
