"""Surrogate data for data-free distillation: nothing read from disk but the adapters themselves.

LoRA Recycle (Hu et al., CVPR 2025) distils its meta-adapter on data inverted from the zoo's
adapters, never on their training data. For restoration, a surrogate task needs clean targets and
inputs degraded the way one adapter undoes:

* targets: a synthetic image prior, the dead-leaves model (occluding discs of random colour, radius
  drawn from a power law: the scale-invariant statistics of natural images; Achddou et al., 2021,
  train denoisers on it to within a fraction of a dB of natural images). Each disc carries a
  linear colour ramp and some images are softened, so edges come in every sharpness.
* inputs: model inversion of adapter i. Starting from the target plus a little noise, the input is
  optimised (inside an L-infinity ball around the target) so that adapter i restores it to the
  target while the backbone alone does not: the loss is log mse(adapter_i(x), t) - log
  mse(backbone(x), t). What survives is the degradation that adapter i undoes and the backbone
  leaves, i.e. what the adapter knows beyond the backbone, read from its weights alone.

Imported adapters (from a teammate or from PEFT, with no pairs anywhere) take part like trained ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from colora.core.recycle.mixture import Mixture, ZooAdapter, mixture_forward

DEAD_LEAVES_DISCS = 400
MIN_RADIUS = 2.0


def dead_leaves(n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """`n` dead-leaves images (n, 3, size, size) in [0, 1], deterministic for `gen`'s state."""
    axis = torch.arange(size, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    images = []
    r_max = size / 2
    for _ in range(n):
        img = torch.rand(3, 1, 1, generator=gen).expand(3, size, size).clone()
        # radius ~ r^-3 on [MIN_RADIUS, r_max] by inverse CDF; drawn front to back, so a pixel keeps
        # the first disc that covers it (the occlusion of the model)
        u = torch.rand(DEAD_LEAVES_DISCS, generator=gen)
        a, b = MIN_RADIUS**-2, r_max**-2
        radius = (a - u * (a - b)) ** -0.5
        cy, cx = (torch.rand(2, DEAD_LEAVES_DISCS, generator=gen) * (size + 2 * r_max) - r_max).unbind(0)
        # a grey level plus a little chroma: photographs are far less saturated than uniform RGB
        grey = torch.rand(DEAD_LEAVES_DISCS, 1, generator=gen)
        colour = grey + torch.randn(DEAD_LEAVES_DISCS, 3, generator=gen) * 0.12
        ramp = (torch.rand(DEAD_LEAVES_DISCS, 3, 2, generator=gen) - 0.5) * 0.6 / size  # colour change per pixel
        covered = torch.zeros(size, size, dtype=torch.bool)
        for k in range(DEAD_LEAVES_DISCS):
            disc = ((ys - cy[k]) ** 2 + (xs - cx[k]) ** 2 <= radius[k] ** 2) & ~covered
            if disc.any():
                dy, dx = ys - cy[k], xs - cx[k]
                shade = colour[k][:, None, None] + ramp[k, :, 0, None, None] * dy + ramp[k, :, 1, None, None] * dx
                img = torch.where(disc, shade, img)
                covered |= disc
            if bool(covered.all()):
                break
        if float(torch.rand((), generator=gen)) < 0.5:  # soft edges too: a 3x3 box blur on half the images
            img = F.avg_pool2d(F.pad(img[None], (1, 1, 1, 1), mode="replicate"), 3, stride=1)[0]
        images.append(img.clamp(0, 1))
    return torch.stack(images)


@dataclass
class Inverted:
    """Surrogate pairs for one adapter: inputs it restores to the targets and the backbone does not."""

    name: str
    inputs: torch.Tensor  # (n, 3, s, s)
    targets: torch.Tensor
    gain_db: float  # how much better the adapter restores the inputs than the backbone, on average


def invert_adapter(
    backbone: nn.Module,
    zoo: Sequence[ZooAdapter],
    index: int,
    targets: torch.Tensor,
    *,
    steps: int = 30,
    lr: float = 0.02,
    budget: float = 0.25,
    gen: torch.Generator,
) -> Inverted:
    """Inputs near `targets` that zoo adapter `index` restores to them and the backbone alone does not."""
    names = [z.name for z in zoo]
    one = torch.zeros(len(zoo), 1)
    one[index] = 1.0
    alone = Mixture(names, ["all"], torch.zeros(len(zoo), 1))
    adapter = Mixture(names, ["all"], one)
    delta = (torch.randn(targets.shape, generator=gen) * 0.03).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=lr)
    for _ in range(steps):
        x = (targets + delta).clamp(0, 1)
        err_adapter = F.mse_loss(mixture_forward(backbone, zoo, adapter, x), targets)
        err_backbone = F.mse_loss(mixture_forward(backbone, zoo, alone, x), targets)
        loss = torch.log(err_adapter + 1e-6) - torch.log(err_backbone + 1e-6)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            delta.clamp_(-budget, budget)
    with torch.no_grad():
        x = (targets + delta).clamp(0, 1)
        err_adapter = F.mse_loss(mixture_forward(backbone, zoo, adapter, x), targets).item()
        err_backbone = F.mse_loss(mixture_forward(backbone, zoo, alone, x), targets).item()
    gain = 10 * math.log10((err_backbone + 1e-10) / (err_adapter + 1e-10))
    return Inverted(zoo[index].name, x.detach(), targets, gain)


def surrogate_bank(
    backbone: nn.Module,
    zoo: Sequence[ZooAdapter],
    *,
    per_adapter: int = 8,
    size: int = 64,
    steps: int = 30,
    seed: int = 0,
    on_adapter: Callable[[int, int], None] | None = None,
) -> list[Inverted]:
    """One batch of inverted surrogate pairs per zoo adapter, on dead-leaves targets."""
    gen = torch.Generator().manual_seed(seed)
    backbone = backbone.eval().requires_grad_(False)
    bank = []
    for i in range(len(zoo)):
        targets = dead_leaves(per_adapter, size, gen)
        bank.append(invert_adapter(backbone, zoo, i, targets, steps=steps, gen=gen))
        if on_adapter:
            on_adapter(i + 1, len(zoo))
    return bank
