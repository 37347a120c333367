"""Mixtures of zoo adapters: W = W0 + sum_i c_i[stage(l)] * dW_i,l, fitted on a few pairs, baked exactly.

A LoRA adapter's contribution to layer l is the delta dW_i,l = s_i B_i A_i. Mixing the deltas
(not the A and B factors separately, whose product would create cross terms B_i A_j) keeps
every adapter exactly what it was: one adapter at coefficient 1 *is* that adapter.

Coefficients are per adapter, or per adapter and network stage (`core.ranks.stage_of`), and
non-negative. Fitting is a handful of parameters: a sparse non-negative least-squares solution
on the linearised outputs and an exact line search over its scale (plus, optionally, a few
gradient steps on the exact mixture). No LoRA or backbone weight is trained.

A fitted mixture is baked into one ordinary LoRA adapter whose rank per layer is the sum of the
zoo's ranks (A stacked, B stacked and scaled by c_i s_i): exactly the same delta. Where that
sum would exceed the layer's full rank, the summed delta is factorised by SVD at full rank
(exact up to float rounding).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from colora.core.errors import InvalidInputError
from colora.core.model.lora import (
    check_adapter_tensors,
    check_merge_finite,
    check_plan,
    lora_delta,
    lora_scaling,
    lora_targets,
)
from colora.core.model.weights import AdapterMeta
from colora.core.training.ranks import stage_of


@dataclass
class ZooAdapter:
    """One stored adapter as the mixture sees it: its name and its per-layer deltas."""

    name: str
    deltas: dict[str, torch.Tensor]  # module path -> s * B @ A, shaped like the base weight
    factors: dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # path -> (A, B, scaling)
    meta: AdapterMeta | None = None


KEEP_INPUT = "(keep input)"  # the built-in direction's name: no task can have it (slugs have no parentheses)


def keep_input_component(model: nn.Module) -> ZooAdapter:
    """A built-in mixture direction towards the unrestored input: "leave the image alone".

    The backbone's output is x + ending(features) (NAFNet adds its input back after its last conv), so
    the delta -W of the last conv's weight, at coefficient c, turns the restoration into
    x + (1 - c) W * features + bias: a mild degradation can get a mild correction instead of the
    backbone's full one. The output is linear in c, the delta has rank <= 3 (the conv's output
    channels) and bakes exactly like any adapter's; the conv's bias, which LoRA cannot change, stays.
    """
    conv = lora_targets(model)["ending"]
    w = conv.weight.detach().float()
    out_c = w.shape[0]
    # A = W, B = -I: the delta is exactly -W; rank = output channels (3), never above the layer's full rank
    a, b = w.clone(), -torch.eye(out_c).reshape(out_c, out_c, 1, 1)
    return ZooAdapter(KEEP_INPUT, {"ending": lora_delta(a, b, 1.0)}, {"ending": (a, b, 1.0)})


def with_keep_input(model: nn.Module, zoo: Sequence[ZooAdapter]) -> list[ZooAdapter]:
    """The zoo plus the built-in keep-input direction (mixtures fitted on it bake with the same list)."""
    return [*zoo, keep_input_component(model)]


def only_the_input(mixture: Mixture) -> bool:
    """True when the mixture takes back the backbone's whole correction and adds no adapter: its
    output is the input (plus the last conv's bias), nothing worth an adapter."""
    keep = [i for i, n in enumerate(mixture.names) if n == KEEP_INPUT]
    others = [i for i in range(len(mixture.names)) if i not in keep]
    return bool(keep) and not bool(mixture.coef[others].any()) and bool((mixture.coef[keep] >= 1 - 1e-6).all())


def zoo_adapter(
    name: str, tensors: dict[str, torch.Tensor], meta: AdapterMeta, model: nn.Module, dtype: torch.dtype = torch.float32
) -> ZooAdapter:
    """Deltas of an adapter file's tensors, checked against `model`'s LoRA targets."""
    targets = lora_targets(model)
    check_plan(targets, meta.rank_plan)
    check_adapter_tensors(targets, meta.rank_plan, tensors)  # names, dtypes, shapes, finite values
    deltas, factors = {}, {}
    for path, rank in meta.rank_plan.items():
        a, b = tensors[f"{path}.lora_A"].to(dtype), tensors[f"{path}.lora_B"].to(dtype)
        scaling = lora_scaling(meta.alpha, rank)
        deltas[path] = lora_delta(a, b, scaling)
        factors[path] = (a, b, scaling)
    check_merge_finite(targets, deltas)
    return ZooAdapter(name, deltas, factors, meta)


@dataclass
class Mixture:
    """Coefficients over a zoo: coef[i, g] for adapter i and coefficient group g."""

    names: list[str]
    groups: list[str]  # ["all"] for per-adapter coefficients, else stage names
    coef: torch.Tensor  # (n_adapters, n_groups)
    info: dict = field(default_factory=dict)

    def group_of(self, path: str) -> int:
        return 0 if self.groups == ["all"] else self.groups.index(stage_of(path))

    def as_dict(self) -> dict:
        return {
            "adapters": self.names,
            "groups": self.groups,
            "coefficients": [[round(float(v), 6) for v in row] for row in self.coef],
            **self.info,
        }


def stage_groups(zoo: Sequence[ZooAdapter]) -> list[str]:
    stages = {stage_of(p) for z in zoo for p in z.deltas}
    return sorted(stages)


def mixed_weights(model: nn.Module, zoo: Sequence[ZooAdapter], mixture: Mixture) -> dict[str, torch.Tensor]:
    """`<path>.weight` -> W0 + sum_i c_i dW_i for every layer any zoo adapter touches."""
    targets = lora_targets(model)
    paths = sorted({p for z in zoo for p in z.deltas})
    out = {}
    for path in paths:
        g = mixture.group_of(path)
        w = targets[path].weight
        for i, z in enumerate(zoo):
            if path in z.deltas:
                w = w + mixture.coef[i, g] * z.deltas[path].to(w.dtype)
        out[f"{path}.weight"] = w
    return out


def mixture_deltas(zoo: Sequence[ZooAdapter], mixture: Mixture) -> dict[str, torch.Tensor]:
    """Module path -> sum_i c_i dW_i: what the mixture adds to each layer's weight."""
    out: dict[str, torch.Tensor] = {}
    for i, z in enumerate(zoo):
        for path, delta in z.deltas.items():
            c = mixture.coef[i, mixture.group_of(path)]
            if float(c) != 0.0:
                out[path] = out.get(path, 0) + c * delta
    return out


def mixture_forward(model: nn.Module, zoo: Sequence[ZooAdapter], mixture: Mixture, x: torch.Tensor) -> torch.Tensor:
    """The backbone with mixed weights (differentiable in the coefficients); `model` has no LoRA layers."""
    return functional_call(model, mixed_weights(model, zoo, mixture), (x,), strict=False)


@torch.no_grad()
def apply_mixture(model: nn.Module, zoo: Sequence[ZooAdapter], mixture: Mixture) -> nn.Module:
    """Write the mixed weights into `model` in place (for inference)."""
    targets = lora_targets(model)
    for key, w in mixed_weights(model, zoo, mixture).items():
        targets[key.removesuffix(".weight")].weight.copy_(w)
    return model


# ---------------------------------------------------------------- fitting


def support_crops(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], crop: int, n_crops: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """`n_crops` random aligned crops spread evenly over the K support pairs: (n, 3, c, c) each
    (fewer crops than pairs: one crop from each of `n_crops` pairs drawn at random)."""
    order = list(range(len(pairs)))
    if n_crops < len(pairs):
        order = torch.randperm(len(pairs), generator=gen)[:n_crops].tolist()
    xs, ys = [], []
    for j in range(n_crops):
        x, y = pairs[order[j % len(order)]]
        h, w = x.shape[-2:]
        if h < crop or w < crop:  # small images: pad by replication so every crop has one size
            pad = (0, max(0, crop - w), 0, max(0, crop - h))
            x, y = (F.pad(t[None].float(), pad, mode="replicate")[0] for t in (x, y))
            h, w = x.shape[-2:]
        top = int(torch.randint(0, h - crop + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - crop + 1, (1,), generator=gen))
        xs.append(x[:, top : top + crop, left : left + crop])
        ys.append(y[:, top : top + crop, left : left + crop])
    return torch.stack(xs).float(), torch.stack(ys).float()


def in_chunks(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`net`'s outputs on a batch of crops, 8 at a time (bounded memory)."""
    return torch.cat([net(chunk) for chunk in x.split(8)])


def fast_mixed(model: nn.Module, zoo: Sequence[ZooAdapter], mixture: Mixture) -> nn.Module:
    """The inference graph of backbone + mixture, built from the mixed deltas (no model copy)."""
    from colora.core.model.fast import FastNAFNet

    return FastNAFNet(model, mixture_deltas(zoo, mixture))


class Responses:
    """The backbone and each zoo adapter alone, built once for inference: what each adapter changes."""

    def __init__(self, model: nn.Module, zoo: Sequence[ZooAdapter]):
        from colora.core.model.fast import FastNAFNet

        self.backbone = FastNAFNet(model)
        # The keep-input direction needs no network: with the last conv's weight taken away the
        # output is exactly the input plus that conv's bias (NAFNet adds its input back), one pass
        # of eleven saved in a meta-adapter's prediction.
        self.adapters = [None if z.name == KEEP_INPUT else FastNAFNet(model, z.deltas) for z in zoo]
        bias = lora_targets(model)["ending"].bias
        self.ending_bias = None if bias is None else bias.detach().view(1, -1, 1, 1)

    def output(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Zoo direction i's output on `x` (the keep-input direction without a network)."""
        if self.adapters[i] is None:
            return x if self.ending_bias is None else x + self.ending_bias.to(x)
        return in_chunks(self.adapters[i], x)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, which: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(y0, D): the backbone's outputs on `x` and, per adapter (all, or those in `which`), its
        output minus y0, flattened into D's columns, in float64 (pixels, n)."""
        y0 = in_chunks(self.backbone, x)
        picked = range(len(self.adapters)) if which is None else which
        return y0, torch.stack([(self.output(i, x) - y0).reshape(-1) for i in picked], 1).double()


def linearised_fit(d: torch.Tensor, r: torch.Tensor, *, ridge: float = 1e-2, sparsity: float = 0.25) -> torch.Tensor:
    """Non-negative coefficients c minimising |r - D c|^2 + ridge terms, with an L1 pull (float64, (n,)).

    The ridge is relative to each adapter's own scale (one wild adapter must not shrink the others);
    the L1 pull (with c >= 0, a constant shift of the linear term) keeps adapters that only shave a
    little off the support error out of the mixture: they rarely carry over.
    """
    gram = d.T @ d
    damping = torch.diag(ridge * gram.diagonal().clamp_min(1e-12))
    rhs = d.T @ r
    rhs = rhs - sparsity * rhs.clamp_min(0).max()
    return nonnegative_least_squares(gram + damping, rhs)


def refined_support(k: int) -> dict:
    """`fit_mixture`'s support crops for a per-stage fit (a closed form, then refinement steps) on K
    pairs: 8 crops of 96² up to 8 pairs; beyond, one crop of 72² from each of at most 16 pairs
    (drawn at random beyond 16), so the closed form leaves the time budget room to refine.
    Measured on bench/recycle.py (10 s, one core): K = 32 (rain, blur), 54 against 41 % of the gap,
    in 9.7 against 14.7 s; K = 16, 78 against 73 % (within the spread of a time-bound refinement);
    64² crops lose rain, 8 crops of 96² lose it at K = 16 (BENCHMARKS.md)."""
    return {} if k <= 8 else {"crop": 72, "max_crops": 16}


def fit_mixture(
    model: nn.Module,
    zoo: Sequence[ZooAdapter],
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    per_stage: bool = False,
    steps: int = 0,
    crop: int = 96,
    n_crops: int = 8,
    refine_crops: int = 8,
    max_crops: int | None = None,
    lr: float = 0.05,
    ridge: float = 1e-2,
    sparsity: float = 0.25,
    seconds: float | None = None,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
) -> Mixture:
    """Coefficients that make backbone + mixture map the K support inputs to their targets.

    1. Linearise the output in the coefficients around the backbone, y(c) ~ y0 + sum c_i (y_i - y0),
       and solve the least-squares problem with c >= 0, a ridge relative to each adapter's scale
       and an L1 pull (`sparsity`) (one forward per adapter, then a tiny n x n problem).
    2. Correct the linearisation's shrinkage with one exact line search over a global scale of
       the coefficients (the nonlinear network under-responds to a sum of deltas), and keep the
       best of that, each single adapter and the backbone alone on the support crops.
    3. Optionally (`steps` > 0, needed for per-stage coefficients) refine on the exact mixture
       with projected Adam on the first `refine_crops` crops, pulled towards the start, within
       `seconds` of the call (a step that would end past it, or leave no time to score the
       result, is not started).
       Measured on bench/recycle.py, refining per-adapter coefficients on a few crops overfits
       them, so it is off by default; per-stage coefficients close more of the gap (76 against
       64 % at K = 4, 10 s on one core), so `colora adapt` refines them by default.

    The support is max(`n_crops`, K) random crops of `crop`² (one per pair beyond 8 pairs), at most
    `max_crops` (then one from each of that many pairs drawn at random; `refined_support` is what
    a per-stage fit on many pairs uses). 8 crops of 96², measured on bench/recycle.py, close the
    same share of the gap as 16 crops of 128² (62 against 61 %, K = 4) in about a quarter of the
    time; 8 crops of 64² lose 5 points.

    The closed form sees every crop through the inference graph (core/model/fast.py); the refinement
    needs gradients and runs the backbone in channels_last.

    Coefficients are kept non-negative: adapters are restoration directions, and letting large
    positive and negative coefficients cancel on a few crops is how a fit to one image goes
    wrong on the next (bench/recycle.py measured it).
    """
    if not zoo:
        raise InvalidInputError(
            "the zoo is empty: there is no adapter to recycle",
            hint="train adapters for other tasks first (`colora train NAME`)",
        )
    if not pairs:
        raise InvalidInputError("no example pairs to fit the mixture on", hint="add at least one pair to the task")
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    if max_crops is not None and max_crops < 1:
        raise ValueError(f"max_crops must be at least 1, not {max_crops}")
    support = min(max(n_crops, len(pairs)), max_crops or math.inf)
    x, y = support_crops(pairs, crop, support, gen)
    model = model.eval()
    names = [z.name for z in zoo]
    n = len(zoo)
    with torch.no_grad():
        y0, d = Responses(model, zoo)(x)
        r = (y - y0).reshape(-1).double()
        c0 = linearised_fit(d, r, ridge=ridge, sparsity=sparsity).float()
        # exact support errors of the candidates: alpha * c0, every single adapter (their outputs
        # are already computed) and the backbone alone, so a fit is never worse on its own
        # examples than the simplest choices (a strongly nonlinear adapter can fool the linearisation);
        # on outputs clamped to [0, 1], as every restored image is
        y0_flat, y_flat = y0.reshape(-1).double(), y.reshape(-1).double()

        def clamped_mse(out: torch.Tensor) -> float:
            return float((out.clamp(0, 1) - y_flat).pow(2).mean())

        # the keep-input direction takes back at most all of the backbone's correction
        cap = torch.tensor([1.0 if name == KEEP_INPUT else math.inf for name in names])
        candidates = {f"scale {alpha}": (torch.minimum(alpha * c0, cap), None) for alpha in SCALES}
        candidates.update(
            {f"only {name}": (torch.eye(n)[i], clamped_mse(y0_flat + d[:, i])) for i, name in enumerate(names)}
        )
        # the same number as the reported backbone error, so "never worse than the backbone alone"
        # holds exactly, not up to float32 against float64 rounding
        mse0 = clamped_mse(y0_flat)
        candidates["backbone alone"] = (torch.zeros(n), mse0)
        errors = {}
        score_s = 0.0  # the slowest exact scoring of a mixture on the support: what the end's costs
        for label, (c, mse) in candidates.items():
            if mse is None:
                scored_t0 = time.perf_counter()
                pred = in_chunks(fast_mixed(model, zoo, Mixture(names, ["all"], c[:, None])), x)
                mse = clamped_mse(pred.reshape(-1).double())
                score_s = max(score_s, time.perf_counter() - scored_t0)
            errors[label] = mse
        choice = min(errors, key=errors.get)
        c0, start_mse = candidates[choice][0].float(), errors[choice]
    groups = stage_groups(zoo) if per_stage else ["all"]
    start = c0[:, None].repeat(1, len(groups))
    coef = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([coef], lr=lr)
    best, best_loss = start.clone(), math.inf
    done = 0
    net = copy.deepcopy(model).to(memory_format=torch.channels_last) if steps else model  # a copy only to refine
    xr = x[:refine_crops].contiguous(memory_format=torch.channels_last)
    yr = y[:refine_crops]
    # a step that would end past `seconds` is not started (its time: the last step's; before the
    # first, a forward and backward on the refinement crops, about three scoring passes on them),
    # nor one that would leave no time to score the result after the loop (on the refinement
    # crops, then on every support crop)
    step_s = 3 * score_s * len(xr) / len(x)
    closing_s = score_s * (1 + len(xr) / len(x))
    for step in range(steps):
        step_t0 = time.perf_counter()
        if seconds is not None and step_t0 - t0 + step_s + closing_s > seconds:
            break
        pred = mixture_forward(net, zoo, Mixture(names, groups, coef), xr)
        loss = F.mse_loss(pred.clamp(0, 1), yr)  # as restored images are
        if loss.item() < best_loss:  # the loss of the coefficients *before* this step's update
            best_loss, best = loss.item(), coef.detach().clone()
        (loss + 1e-3 * mse0 * (coef - start).pow(2).mean()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            coef.clamp_(min=0.0)
            coef.clamp_(max=cap[:, None].expand_as(coef))
        done = step + 1
        step_s = time.perf_counter() - step_t0
        if on_step:
            on_step(done, steps)
    if done:
        with torch.no_grad():

            def support_mse(c: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> float:
                out = in_chunks(fast_mixed(model, zoo, Mixture(names, groups, c)), xs)
                return float(F.mse_loss(out.clamp(0, 1), ys))

            # the last update's coefficients were never scored in the loop
            last = coef.detach().clone()
            if support_mse(last, xr, yr) < best_loss:
                best = last
            # report the refined coefficients on every support crop, like the start
            best_loss = support_mse(best, x, y)
    else:
        best_loss = start_mse
    return Mixture(
        names,
        groups,
        best,
        {
            "method": "mixture",
            "k": len(pairs),
            "steps": done,
            "steps_planned": steps,
            "choice": choice,
            "support": [crop, len(x)],  # (crop px, count), as a meta-adapter records its own
            "support_mse_backbone": mse0,
            "support_mse_input": float(F.mse_loss(x, y)),
            "support_mse": best_loss,
            "seconds": round(time.perf_counter() - t0, 3),
        },
    )


SCALES = (0.8, 1.0, 1.25, 1.5)


@torch.no_grad()
def score_on_support(
    model: nn.Module,
    zoo: Sequence[ZooAdapter],
    mixture: Mixture,
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]],
    *,
    crop: int = 128,
    n_crops: int = 8,
    seed: int = 0,
) -> Mixture:
    """`mixture` with its support errors in `info` (clamped MSE of the mixture, the backbone alone
    and the unrestored input on crops of the K pairs), as `fit_mixture` reports them: a mixture that
    was predicted rather than fitted (the meta-adapter) is checked against the same bar."""
    x, y = support_crops(pairs, crop, max(n_crops, len(pairs)), torch.Generator().manual_seed(seed))
    from colora.core.model.fast import FastNAFNet

    model = model.eval()

    def error(net: nn.Module) -> float:
        return float(F.mse_loss(in_chunks(net, x).clamp(0, 1), y))

    info = {
        **mixture.info,
        "support_mse_backbone": error(FastNAFNet(model)),
        "support_mse_input": float(F.mse_loss(x, y)),
        "support_mse": error(fast_mixed(model, zoo, mixture)),
    }
    return Mixture(mixture.names, mixture.groups, mixture.coef, info)


def nonnegative_least_squares(gram: torch.Tensor, rhs: torch.Tensor, iters: int = 500) -> torch.Tensor:
    """argmin_{c >= 0} 1/2 c^T G c - rhs^T c for a small positive definite G, by cyclic coordinate descent."""
    c = torch.zeros_like(rhs)
    for _ in range(iters):
        previous = c.clone()
        for i in range(len(c)):
            # exact minimisation along coordinate i, then projection onto c_i >= 0
            c[i] = torch.clamp(c[i] + (rhs[i] - gram[i] @ c) / gram[i, i], min=0.0)
        if torch.allclose(c, previous, atol=1e-10, rtol=0):
            break
    return c


def uniform_mixture(zoo: Sequence[ZooAdapter]) -> Mixture:
    n = len(zoo)
    return Mixture([z.name for z in zoo], ["all"], torch.full((n, 1), 1.0 / n), {"method": "uniform"})


# ---------------------------------------------------------------- baking


def bake(
    model: nn.Module, zoo: Sequence[ZooAdapter], mixture: Mixture, dtype: torch.dtype = torch.float32
) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """One LoRA adapter (alpha = rank, so scaling 1) whose delta equals the mixture's, per layer.

    Returns (tensors `<path>.lora_A` / `<path>.lora_B` in `dtype`, rank plan). Computed in float64.
    """
    targets = lora_targets(model)
    tensors: dict[str, torch.Tensor] = {}
    plan: dict[str, int] = {}
    for path in sorted({p for z in zoo for p in z.deltas}):
        conv = targets[path]
        g = mixture.group_of(path)
        parts = [(float(mixture.coef[i, g]), z.factors[path]) for i, z in enumerate(zoo) if path in z.factors]
        parts = [(c, f) for c, f in parts if c != 0.0]
        if not parts:
            continue
        out_c = conv.out_channels
        full = min(out_c, conv.weight[0].numel())
        rank = sum(a.shape[0] for _, (a, _, _) in parts)
        if rank <= full:  # stack the factors: exact
            a_cat = torch.cat([a.double() for _, (a, _, _) in parts], 0)
            b_cat = torch.cat([c * s * b.double() for c, (_, b, s) in parts], 1)
        else:  # the stacked rank exceeds the layer's: factorise the summed delta at full rank
            delta = sum(c * lora_delta(a.double(), b.double(), s).reshape(out_c, -1) for c, (a, b, s) in parts)
            u, sv, vh = torch.linalg.svd(delta, full_matrices=False)
            rank = full
            a_cat = vh[:rank].reshape(rank, *conv.weight.shape[1:])
            b_cat = (u[:, :rank] * sv[:rank]).reshape(out_c, rank, 1, 1)
        tensors[f"{path}.lora_A"] = a_cat.to(dtype).contiguous()
        tensors[f"{path}.lora_B"] = b_cat.to(dtype).contiguous()
        plan[path] = rank
    if not plan:
        raise InvalidInputError("every mixture coefficient is zero: there is nothing to bake")
    return tensors, plan
