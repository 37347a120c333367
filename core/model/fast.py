"""An inference-only copy of a (merged) NAFNet, rewritten for speed on CPUs, same numbers.

At width 16 the network is memory-bound: in eager PyTorch more than half of a forward is
element-wise passes over full-resolution feature maps (LayerNorm as six ops, the block's
beta/gamma scales, the attention scale). This module removes most of them, exactly:

* channels_last memory format, so every conv is a plain GEMM over pixels for oneDNN and the
  per-pixel LayerNorm is one fused `F.layer_norm` over the last dimension of a free view;
* LayerNorm's affine weight and bias folded into the 1x1 conv that follows it
  (conv(γ·x̂ + β) = (W·diag γ) x̂ + (W β + b));
* the residual scales beta and gamma folded into conv3 and conv5;
* for a single image, the channel-attention scale folded into conv3's weight
  (conv3(x · s) = (W3 · diag s) x), a per-image (c x c) product instead of a full-map multiply.

Built from a NAFNet whose LoRA layers (if any) are merged. `FastNAFNet(model)(x)` equals
`model(x)` within float32 rounding (tests/test_fast.py checks it in float64 too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from colora.core.model.backbone import NAFBlock, NAFNet


def _conv_of(module: nn.Module) -> nn.Conv2d:
    """The plain conv behind a layer: merged LoRA wrappers hold the merged weight in `.base`."""
    from colora.core.model.lora import LoRAConv2d

    if isinstance(module, LoRAConv2d):
        if not module.merged:
            raise ValueError("FastNAFNet needs merged LoRA layers (call merge_all first)")
        return module.base
    return module


class _Weights:
    """A layer's weight for the inference graph: its own (merged) weight, plus an adapter delta if given."""

    def __init__(self, model: nn.Module, deltas: dict[str, torch.Tensor] | None):
        from colora.core.model.lora import lora_targets

        targets = lora_targets(model) if deltas else {}
        self.extra = {id(targets[p]): d for p, d in (deltas or {}).items()}

    def __call__(self, module: nn.Module) -> tuple[nn.Conv2d, torch.Tensor]:
        conv = _conv_of(module)
        delta = self.extra.get(id(conv))
        return conv, conv.weight if delta is None else conv.weight + delta.to(conv.weight)


class _Conv(nn.Module):
    """A frozen convolution holding its weight in channels_last; built without nn.Conv2d's random
    initialisation, since a task switch builds a whole graph of these (bench/speed.py)."""

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight.detach().contiguous(memory_format=torch.channels_last), requires_grad=False)
        self.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


def _copy_conv(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None = None) -> _Conv:
    if bias is None:
        bias = (
            conv.bias
            if conv.bias is not None
            else torch.zeros(conv.out_channels, dtype=weight.dtype, device=weight.device)
        )
    return _Conv(conv, weight, bias)


def _fold_norm(conv: nn.Conv2d, w: torch.Tensor, norm: nn.Module) -> nn.Conv2d:
    """1x1 conv after an affine LayerNorm -> the same conv after a plain normalisation."""
    gamma, beta = norm.weight.detach(), norm.bias.detach()
    bias = (conv.bias if conv.bias is not None else torch.zeros_like(w[:, 0, 0, 0])) + w[:, :, 0, 0] @ beta
    return _copy_conv(conv, w * gamma.view(1, -1, 1, 1), bias)


def _fold_scale(conv: nn.Conv2d, w: torch.Tensor, scale: torch.Tensor) -> nn.Conv2d:
    """conv(x) * scale (per output channel) -> one conv."""
    s = scale.detach().reshape(-1)
    return _copy_conv(conv, w * s.view(-1, 1, 1, 1), conv.bias * s)


def _normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-pixel LayerNorm over channels without affine, one fused op on a channels_last view."""
    xp = x.permute(0, 2, 3, 1)
    return F.layer_norm(xp, (xp.shape[-1],), None, None, eps).permute(0, 3, 1, 2)


class FastBlock(nn.Module):
    def __init__(self, block: NAFBlock, weights: _Weights):
        super().__init__()
        self.eps1, self.eps2 = block.norm1.eps, block.norm2.eps
        self.conv1 = _fold_norm(*weights(block.conv1), block.norm1)
        self.conv2 = _copy_conv(*weights(block.conv2))
        self.sca = _copy_conv(*weights(block.sca[1]))
        self.conv3 = _fold_scale(*weights(block.conv3), block.beta)
        self.conv4 = _fold_norm(*weights(block.conv4), block.norm2)
        self.conv5 = _fold_scale(*weights(block.conv5), block.gamma)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(_normalize(inp, self.eps1)))
        a, b = x.chunk(2, dim=1)
        x = a * b
        s = self.sca(F.adaptive_avg_pool2d(x, 1))  # (N, C, 1, 1)
        if x.shape[0] == 1:  # fold the attention scale into conv3's weight: no full-map multiply
            w = self.conv3.weight * s.view(1, -1, 1, 1)
            y = inp + F.conv2d(x, w, self.conv3.bias)
        else:
            y = inp + self.conv3(x * s)
        a, b = self.conv4(_normalize(y, self.eps2)).chunk(2, dim=1)
        return y + self.conv5(a * b)


class FastNAFNet(nn.Module):
    """Inference-only: no gradients, no LoRA layers, channels_last throughout.

    `deltas` (module path -> weight delta, `core.lora.adapter_deltas`) adds an adapter on the way,
    so a task switch needs neither a copy of the backbone nor LoRA layers to merge.
    """

    def __init__(self, model: NAFNet, deltas: dict[str, torch.Tensor] | None = None):
        super().__init__()
        w = _Weights(model, deltas)
        self.config = model.config
        self.intro = _copy_conv(*w(model.intro))
        self.ending = _copy_conv(*w(model.ending))
        self.encoders = nn.ModuleList(nn.Sequential(*[FastBlock(b, w) for b in enc]) for enc in model.encoders)
        self.downs = nn.ModuleList(_copy_conv(*w(d)) for d in model.downs)
        self.middle_blks = nn.Sequential(*[FastBlock(b, w) for b in model.middle_blks])
        self.ups = nn.ModuleList(nn.Sequential(_copy_conv(*w(u[0])), nn.PixelShuffle(2)) for u in model.ups)
        self.decoders = nn.ModuleList(nn.Sequential(*[FastBlock(b, w) for b in dec]) for dec in model.decoders)
        self.eval()

    def forward(self, inp: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W), any H, W
        # the same U-Net walk as the backbone (same attribute names), in channels_last
        return NAFNet.forward(self, inp.contiguous(memory_format=torch.channels_last)).contiguous()


def for_inference(model: nn.Module) -> nn.Module:
    """A FastNAFNet of `model` where it is a NAFNet whose LoRA layers (if any) are merged; else `model`."""
    from colora.core.model.lora import lora_layers

    if isinstance(model, NAFNet) and all(layer.merged for layer in lora_layers(model).values()):
        return FastNAFNet(model).to(next(model.parameters()).device)
    return model
