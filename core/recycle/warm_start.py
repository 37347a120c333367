"""Warm start: a new adapter's LoRA factors initialised from a mixture of the zoo instead of zero.

A fitted mixture (core/recycle/mixture.py) is a per-layer delta dW = sum_i c_i dW_i. The new
adapter keeps its own rank plan, so each layer starts from the best rank-r approximation of dW
(truncated SVD, Eckart-Young), split evenly between A and B (B = U sqrt(S), A = sqrt(S) V^T:
both factors non-zero and of one scale, so both get gradients from the first step). Layers the
mixture does not touch keep LoRA's usual start (random A, zero B). The result is an ordinary
adapter: same plan, same size, trained as usual.
"""

from __future__ import annotations

import torch
from torch import nn

from colora.core.model.lora import lora_layers


@torch.no_grad()
def warm_start_lora(model: nn.Module, deltas: dict[str, torch.Tensor]) -> dict[str, float]:
    """Set every LoRA layer of `model` that has a delta to its rank-r approximation; returns, per
    layer, the share of the delta's energy (squared Frobenius norm) the start keeps."""
    kept = {}
    for path, layer in lora_layers(model).items():
        delta = deltas.get(path)
        if delta is None or not bool(delta.any()):
            continue
        out_c, rank = layer.lora_B.shape[:2]
        target = delta.double().reshape(out_c, -1) / layer.scaling  # B @ A = dW / s
        u, s, vh = torch.linalg.svd(target, full_matrices=False)
        # the delta's numerical rank: directions below it would start at ~0 in both A and B
        r = min(rank, int((s > s[0] * 1e-6).sum()))
        root = s[:r].sqrt()
        # a rank above the delta's keeps LoRA's usual start (random A, zero B) in its spare
        # directions (zero or tiny A and B together would get no gradient)
        a = layer.lora_A.detach().double().reshape(rank, -1).clone()
        b = layer.lora_B.detach().double().reshape(out_c, rank).clone()
        a[:r], b[:, :r] = root[:, None] * vh[:r], u[:, :r] * root
        layer.lora_A.copy_(a.reshape(layer.lora_A.shape).to(layer.lora_A.dtype))
        layer.lora_B.copy_(b.reshape(layer.lora_B.shape).to(layer.lora_B.dtype))
        kept[path] = float(s[:r].pow(2).sum() / s.pow(2).sum())
    return kept
