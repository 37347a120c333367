"""LoRA for convolutions: wrap the frozen base conv, train a low-rank delta, merge exactly.

A copies the base conv's geometry (kernel, stride, padding, dilation) with `rank` output
channels, B is a 1x1 conv from `rank` to the base's outputs, initialised to zero, and the
delta is scaled by alpha / rank. So a new adapter changes nothing, and

    conv(x, W) + s * B(A(x)) == conv(x, W + s * B @ A)        (convolution is linear)

which lets us choose per layer between the *activation* form (two extra small convs) and the
*weight* form (one conv with the effective weight, formed once per step). Both give the same
numbers; which is faster depends on the layer shape and image size (see bench/speed.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from colora.core.choices import MAX_RANK
from colora.core.errors import InvalidInputError

LORA_MODES = ("weight", "activation")
DAMAGED_HINT = (
    "the adapter file is damaged or was edited: get the original again "
    "(`colora adapter export TASK FILE` on the store that trained it)"
)


def is_lora_target(module: nn.Module) -> bool:
    """Dense convolutions only: a depthwise LoRA can be larger than the layer itself."""
    return isinstance(module, nn.Conv2d) and module.groups == 1


def lora_targets(model: nn.Module) -> dict[str, nn.Conv2d]:
    """Exact module path -> base conv for every LoRA target, in a stable order.

    Already wrapped layers are reported under their own path (not `<path>.base`), so plans
    stay valid before and after `inject_lora`.
    """
    targets: dict[str, nn.Conv2d] = {}
    for name, m in model.named_modules():
        if isinstance(m, LoRAConv2d):
            targets[name] = m.base
        elif is_lora_target(m) and name.rpartition(".")[0] not in targets:
            targets[name] = m
    return targets


def lora_scaling(alpha: float | None, rank: int) -> float:
    """alpha / rank; alpha None means alpha = rank (scaling 1)."""
    return (float(alpha) if alpha is not None else float(rank)) / rank


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """s * B @ A shaped like the base weight: A (r, C_in, kh, kw), B (C_out, r, 1, 1) -> (C_out, C_in, kh, kw).

    The one place the product is formed (training, merging, inference, mixing and baking all use it).
    """
    r = a.shape[0]
    return (scaling * (b.reshape(b.shape[0], r) @ a.reshape(r, -1))).reshape(b.shape[0], *a.shape[1:])


# an adapter as large as its backbone is already full fine-tuning; twice that is a crafted file
MAX_ADAPTER_SHARE = 2


def check_plan(targets: Mapping[str, nn.Conv2d], rank_plan: Mapping[str, int]) -> None:
    """A rank plan names LoRA targets of this backbone by exact path, each with a rank >= 1."""
    unknown = [p for p in rank_plan if p not in targets]
    if unknown:
        raise InvalidInputError(
            f"rank plan names {len(unknown)} layer(s) that are not LoRA targets of this backbone: "
            + ", ".join(unknown[:3]),
            hint="recompute the plan with `colora ranks NAME`",
        )
    if not rank_plan:
        raise InvalidInputError("the rank plan is empty: no layer would be adapted", hint=DAMAGED_HINT)
    for path, rank in rank_plan.items():
        if int(rank) < 1:
            raise InvalidInputError(f"LoRA rank must be >= 1, got {rank} for {path}", hint=DAMAGED_HINT)
    # per layer a rank may pass the layer's full rank (PEFT users set one r everywhere), but an
    # adapter larger than the backbone it adapts is not low-rank: refused before any allocation
    size = sum(int(r) * layer_cost(targets[p]) for p, r in rank_plan.items())
    adapted = sum(c.weight.numel() for c in targets.values())
    if size > MAX_ADAPTER_SHARE * adapted:
        raise InvalidInputError(
            f"the rank plan asks for {size:,} LoRA parameters, more than {MAX_ADAPTER_SHARE}x the {adapted:,} "
            "of the layers it adapts: not a low-rank adapter",
            hint="use lower ranks (`colora train --rank`, or `colora ranks --budget`)",
        )


def layer_cost(conv: nn.Conv2d) -> int:
    """Parameters of one rank of LoRA on `conv`: a row of A (the conv's geometry) and a column of B."""
    kh, kw = conv.kernel_size
    return conv.in_channels * kh * kw + conv.out_channels


class LoRAConv2d(nn.Module):
    def __init__(self, base: nn.Conv2d, rank: int, alpha: float, mode: str = "weight"):
        super().__init__()
        if rank < 1:
            raise InvalidInputError(f"LoRA rank must be >= 1, got {rank}")
        if mode not in LORA_MODES:
            raise InvalidInputError(f"unknown LoRA mode {mode!r}; use one of {LORA_MODES}")
        self.base = base
        self.rank = rank
        self.alpha = float(alpha)
        self.scaling = lora_scaling(self.alpha, rank)
        self.mode = mode
        kh, kw = base.kernel_size
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        # A: (r, C_in, kh, kw), same geometry as the base; B: (C_out, r, 1, 1), zero.
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_channels, kh, kw, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_channels, rank, 1, 1, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=5**0.5)
        self._saved_base: torch.Tensor | None = None  # original weight while merged

    @property
    def merged(self) -> bool:
        return self._saved_base is not None

    def delta_weight(self) -> torch.Tensor:
        """s * B @ A, shaped like the base weight."""
        return lora_delta(self.lora_A, self.lora_B, self.scaling)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        b = self.base
        return F.conv2d(x, weight, b.bias, b.stride, b.padding, b.dilation, b.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base(x)
        if self.mode == "weight":
            return self._conv(x, self.base.weight + self.delta_weight())
        b = self.base
        low = F.conv2d(x, self.lora_A, None, b.stride, b.padding, b.dilation)
        return b(x) + self.scaling * F.conv2d(low, self.lora_B)

    @torch.no_grad()
    def merge(self) -> None:
        if self.merged:
            return
        merged = self.base.weight + self.delta_weight()
        if not torch.isfinite(merged).all():
            raise InvalidInputError("refusing to merge: the adapter produces non-finite weights", hint=DAMAGED_HINT)
        self._saved_base = self.base.weight.detach().clone()
        self.base.weight.copy_(merged)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Restore the base weights bit-exactly (from a copy, not by subtraction)."""
        if not self.merged:
            return
        self.base.weight.copy_(self._saved_base)
        self._saved_base = None


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def inject_lora(
    model: nn.Module, rank_plan: Mapping[str, int], alpha: float | None = None, mode: str = "weight"
) -> dict[str, LoRAConv2d]:
    """Wrap every conv named in `rank_plan` (exact module paths) with a LoRA layer.

    Freezes the whole model first; only the LoRA A and B tensors are trainable afterwards.
    `alpha=None` means alpha = rank per layer (scaling 1).
    """
    targets = lora_targets(model)
    if lora_layers(model):
        raise InvalidInputError("this model already carries LoRA layers")
    check_plan(targets, rank_plan)
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = {}
    for path, rank in rank_plan.items():
        layer = LoRAConv2d(targets[path], int(rank), alpha if alpha is not None else float(rank), mode)
        _set_submodule(model, path, layer)
        wrapped[path] = layer
    return wrapped


def lora_layers(model: nn.Module) -> dict[str, LoRAConv2d]:
    """Found by structure (isinstance), not by name substrings."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRAConv2d)}


def uniform_rank_plan(model: nn.Module, rank: int) -> dict[str, int]:
    """Every dense conv gets `rank`, capped at the layer's own smaller dimension."""
    if not 1 <= rank <= MAX_RANK:
        raise InvalidInputError(f"a uniform rank must be between 1 and {MAX_RANK}, got {rank}")
    plan = {}
    for path, conv in lora_targets(model).items():
        full = min(conv.out_channels, conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1])
        plan[path] = max(1, min(rank, full))
    return plan


def lora_parameter_count(model: nn.Module, rank_plan: Mapping[str, int]) -> int:
    """Parameters an adapter with this plan trains: r * (C_in*kh*kw + C_out) per layer."""
    targets = lora_targets(model)
    return sum(r * layer_cost(targets[path]) for path, r in rank_plan.items())


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the trained tensors: `<path>.lora_A`, `<path>.lora_B`."""
    state = {}
    for path, layer in lora_layers(model).items():
        state[f"{path}.lora_A"] = layer.lora_A.detach().cpu().contiguous()
        state[f"{path}.lora_B"] = layer.lora_B.detach().cpu().contiguous()
    return state


def check_adapter_tensors(
    targets: Mapping[str, nn.Conv2d], rank_plan: Mapping[str, int], state: Mapping[str, torch.Tensor]
) -> None:
    """Names, dtypes, shapes and values of an adapter's tensors against its plan and the backbone's layers."""
    expected = {f"{p}.lora_{ab}" for p in rank_plan for ab in "AB"}
    if set(state) != expected:
        missing = sorted(expected - set(state))[:3]
        extra = sorted(set(state) - expected)[:3]
        raise InvalidInputError(
            f"adapter tensors do not match its rank plan (missing {missing}, unexpected {extra})", hint=DAMAGED_HINT
        )
    for path, rank in rank_plan.items():
        conv = targets[path]
        shapes = {"A": (rank, conv.in_channels, *conv.kernel_size), "B": (conv.out_channels, rank, 1, 1)}
        for ab in "AB":
            src = state[f"{path}.lora_{ab}"]
            if not src.is_floating_point():
                raise InvalidInputError(
                    f"adapter tensor {path}.lora_{ab} has dtype {src.dtype}, expected a float type", hint=DAMAGED_HINT
                )
            if tuple(src.shape) != shapes[ab]:
                raise InvalidInputError(
                    f"adapter tensor {path}.lora_{ab} has shape {tuple(src.shape)}, expected {shapes[ab]}",
                    hint=DAMAGED_HINT,
                )
            if not torch.isfinite(src).all():
                raise InvalidInputError(
                    f"adapter tensor {path}.lora_{ab} holds NaN or infinite values", hint=DAMAGED_HINT
                )


@torch.no_grad()
def load_adapter_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    layers = lora_layers(model)
    check_adapter_tensors(
        {p: layer.base for p, layer in layers.items()}, {p: layer.rank for p, layer in layers.items()}, state
    )
    for path, layer in layers.items():
        for ab in "AB":
            getattr(layer, f"lora_{ab}").copy_(state[f"{path}.lora_{ab}"])


def adapter_deltas(
    model: nn.Module, rank_plan: Mapping[str, int], alpha: float | None, state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Module path -> s * B @ A (shaped like the base weight), checked; the model is not changed.

    What merging computes, without wrapping any layer: for inference straight from a plain backbone.
    """
    targets = lora_targets(model)
    check_plan(targets, rank_plan)
    check_adapter_tensors(targets, rank_plan, state)
    deltas = {}
    for path, rank in rank_plan.items():
        w = targets[path].weight
        deltas[path] = lora_delta(
            state[f"{path}.lora_A"].to(w), state[f"{path}.lora_B"].to(w), lora_scaling(alpha, rank)
        )
    check_merge_finite(targets, deltas)
    return deltas


MAX_WEIGHT = 1e4  # a restoration net's weights are O(1); far beyond this, float32 activations overflow


def check_merge_finite(targets: Mapping[str, nn.Conv2d], deltas: Mapping[str, torch.Tensor]) -> None:
    """Every merged weight W + delta finite and within +-MAX_WEIGHT (finite factors can still
    overflow, and weights of 1e20 make every image NaN)."""
    for p, d in deltas.items():
        merged = targets[p].weight + d.to(targets[p].weight)
        if not (torch.isfinite(merged).all() and merged.abs().max() <= MAX_WEIGHT):
            raise InvalidInputError(
                "refusing to merge: the adapter produces non-finite or absurd weights "
                f"(beyond +-{MAX_WEIGHT:g} in {p})",
                hint="the adapter file is damaged or was made by a diverged training",
            )


def merge_all(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.merge()


def unmerge_all(model: nn.Module) -> None:
    for layer in lora_layers(model).values():
        layer.unmerge()
