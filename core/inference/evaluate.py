"""Scoring models on validation pairs: PSNR and SSIM per pair and on average."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import torch
from torch import nn

from colora.core.data.crops import load_pair
from colora.core.inference.metrics import psnr, ssim
from colora.core.inference.tiles import DEFAULT_TILE, restore_tensor


@torch.no_grad()
def evaluate(
    models: dict[str, nn.Module | None],
    pairs: Sequence[tuple[str, str, str]],
    *,
    device: torch.device | str = "cpu",
    tile: int = DEFAULT_TILE,
    on_pair: Callable[[int, int], None] | None = None,
    observe: Callable[[str, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]], None] | None = None,
    self_ensemble: Collection[str] = (),
) -> dict[str, tuple[float, float, list]]:
    """PSNR/SSIM per subject over (stem, input, target) pairs; a None model scores the input itself;
    the subjects named in `self_ensemble` restore with core.inference.ensemble's x8 average.

    Returns subject -> (mean psnr, mean ssim, [[stem, psnr, ssim], ...]). `observe(stem, input,
    target, {subject: output})` sees every pair's images as they are scored (a report keeps crops
    of them, so nothing is decoded or restored twice).
    """
    from colora.core.model.fast import for_inference

    per: dict[str, list] = {name: [] for name in models}
    models = {name: None if m is None else for_inference(m.to(device).eval()) for name, m in models.items()}
    for i, (stem, inp, tgt) in enumerate(pairs):
        x, y = load_pair(inp, tgt)
        outputs = {}
        for name, m in models.items():
            out = outputs[name] = (
                x if m is None else restore_tensor(m, x, tile, self_ensemble=name in self_ensemble).cpu()
            )
            per[name].append([stem, psnr(out, y), ssim(out, y)])
        if observe:
            observe(stem, x, y, outputs)
        if on_pair:
            on_pair(i + 1, len(pairs))
    return {
        name: (sum(r[1] for r in rows) / len(rows), sum(r[2] for r in rows) / len(rows), rows)
        for name, rows in per.items()
    }
