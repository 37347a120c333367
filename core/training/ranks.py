"""CoLoRA: how much each layer contributes to a task, and a rank plan that follows it.

Contribution is FAIG (filter attribution by integrated gradients, as used by CoLoRA, Park et
al. ECCV 2024): briefly fine-tune a copy of the whole backbone on the task (theta_ft), then
integrate the loss gradient along the straight path between theta_ft and the pre-trained
theta_pre:

    score(layer) = sum over the layer's weights of | mean_t dL/dtheta(t) * (theta_pre - theta_ft) |

with theta(t) = theta_pre + t (theta_ft - theta_pre) at M midpoints t in (0, 1), always on the
same fixed batches, so the scores are deterministic for a seed.

Mapping scores to ranks under a parameter budget B (a fraction of the backbone's parameters):
a LoRA of rank r on a conv costs r * c with c = C_in*kh*kw + C_out. Every target layer first
gets `min_rank`; the rest of the budget is shared in proportion to the scores, each layer's
share becoming floor(share / c) extra ranks, capped at `max_rank` and at the layer's full
rank min(C_out, C_in*kh*kw). What is left (rounding, and the shares of capped layers) goes one
rank at a time to the contributing layer furthest below its share relative to its weight, while
a rank still fits, so the plan spends close to the whole budget and never more than B.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from colora.core.choices import RANK_METHODS
from colora.core.data.crops import PairSet
from colora.core.errors import InvalidInputError
from colora.core.model.lora import layer_cost, lora_parameter_count, lora_targets
from colora.core.training.loop import TrainConfig, fit, restoration_loss

METHODS = RANK_METHODS


@dataclass
class RankPlan:
    ranks: dict[str, int]  # exact module path -> rank
    method: str
    budget: float  # fraction of backbone parameters
    budget_params: int
    params: int  # parameters the plan trains (<= budget_params)
    scores: dict[str, float] = field(default_factory=dict)  # normalised contributions, sum 1
    settings: dict = field(default_factory=dict)

    def info(self) -> dict:
        return {
            "method": self.method,
            "budget": self.budget,
            "budget_params": self.budget_params,
            "params": self.params,
            "scores": self.scores,
            "settings": self.settings,
        }


def full_rank(conv: nn.Conv2d) -> int:
    kh, kw = conv.kernel_size
    return min(conv.out_channels, conv.in_channels * kh * kw)


def _budget_params(model: nn.Module, budget: float) -> int:
    if not (0 < budget <= 1):
        raise InvalidInputError(
            f"budget must be a fraction of the backbone's parameters in (0, 1], got {budget}",
            hint="e.g. --budget 0.07 for 7 %",
        )
    return int(budget * sum(p.numel() for p in model.parameters()))


def uniform_plan(model: nn.Module, budget: float) -> RankPlan:
    """The largest uniform rank (capped per layer at full rank) that fits the budget."""
    targets = lora_targets(model)
    limit = _budget_params(model, budget)

    def plan_for(r: int) -> dict[str, int]:
        return {p: min(r, full_rank(c)) for p, c in targets.items()}

    r = 1
    if lora_parameter_count(model, plan_for(1)) > limit:
        raise InvalidInputError(f"a budget of {budget:.3%} cannot give every layer rank 1", hint="raise --budget")
    while r < max(full_rank(c) for c in targets.values()) and lora_parameter_count(model, plan_for(r + 1)) <= limit:
        r += 1
    ranks = plan_for(r)
    return RankPlan(ranks, "uniform", budget, limit, lora_parameter_count(model, ranks), settings={"rank": r})


def plan_from_scores(
    model: nn.Module,
    scores: dict[str, float],
    budget: float,
    *,
    min_rank: int = 1,
    max_rank: int = 64,
    method: str = "faig",
    settings: dict | None = None,
) -> RankPlan:
    targets = lora_targets(model)
    unknown = [p for p in scores if p not in targets]
    if unknown:
        raise InvalidInputError(f"scores name layers that are not LoRA targets: {', '.join(unknown[:3])}")
    limit = _budget_params(model, budget)
    cost = {p: layer_cost(c) for p, c in targets.items()}
    cap = {p: max(min_rank, min(max_rank, full_rank(c))) for p, c in targets.items()}
    ranks = {p: min_rank for p in targets}
    spent = sum(min_rank * cost[p] for p in targets)
    if spent > limit:
        raise InvalidInputError(
            f"a budget of {budget:.3%} cannot give every layer the minimum rank {min_rank}", hint="raise --budget"
        )
    clean = {p: max(0.0, float(scores.get(p, 0.0))) for p in targets}
    clean = {p: (v if math.isfinite(v) else 0.0) for p, v in clean.items()}
    total = sum(clean.values())
    weights = {p: v / total for p, v in clean.items()} if total > 0 else {p: 0.0 for p in targets}
    rest = limit - spent
    share = {p: weights[p] * rest for p in targets}
    for p in targets:  # proportional part, rounded down
        extra = min(int(share[p] // cost[p]), cap[p] - ranks[p])
        ranks[p] += extra
        spent += extra * cost[p]
    # leftovers (rounding, and the shares of layers that hit their cap): one rank at a time to
    # the contributing layer furthest below its share, relative to its weight, while ranks fit
    while True:
        room = [p for p in targets if weights[p] > 0 and ranks[p] < cap[p] and spent + cost[p] <= limit]
        if not room:
            break
        best = max(room, key=lambda p: ((share[p] - (ranks[p] - min_rank) * cost[p]) / (weights[p] * rest), p))
        ranks[best] += 1
        spent += cost[best]
    return RankPlan(
        ranks,
        method,
        budget,
        limit,
        spent,
        scores=weights,
        settings={"min_rank": min_rank, "max_rank": max_rank, **(settings or {})},
    )


def faig_scores(
    backbone: nn.Module,
    train_pairs: Sequence[tuple[str, str]],
    *,
    probe_steps: int,  # K and M: the defaults live with the use case (colora_cli/api/ranking.py)
    path_steps: int,
    batch_size: int = 4,
    patch_size: int = 96,
    probe_batches: int = 2,
    lr: float = 1e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """FAIG contribution of every LoRA target layer (raw, unnormalised)."""
    if probe_steps < 1 or path_steps < 1:
        raise InvalidInputError("--probe-steps and --path-steps must be >= 1")
    data = PairSet.from_files(train_pairs)
    total = probe_steps + path_steps
    pre = copy.deepcopy(backbone).to(device)
    for p in pre.parameters():
        p.requires_grad_(True)
    tuned = copy.deepcopy(pre)
    # 1. brief full fine-tuning
    config = TrainConfig(
        steps=probe_steps,
        batch_size=batch_size,
        patch_size=patch_size,
        lr=lr,
        seed=seed,
        warmup_steps=min(10, probe_steps),
        log_every=max(1, probe_steps),
    )
    fit(
        tuned,
        dict(tuned.named_parameters()),
        lambda step, gen: data.sample_batch(batch_size, patch_size, gen),
        config,
        device=device,
        on_step=(lambda done, _t, _l: on_progress(done, total)) if on_progress else None,
    )
    # 2. integrated gradients on fixed batches along the straight path
    gen = torch.Generator().manual_seed(seed + 1)
    batches = [data.sample_batch(batch_size, patch_size, gen) for _ in range(probe_batches)]
    theta_pre = {k: v.detach().clone() for k, v in pre.named_parameters()}
    theta_ft = {k: v.detach().clone() for k, v in tuned.named_parameters()}
    walker = copy.deepcopy(pre).train()
    params = dict(walker.named_parameters())
    grad_sum = {k: torch.zeros_like(v) for k, v in theta_pre.items()}
    for i in range(path_steps):
        t = (i + 0.5) / path_steps
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(theta_pre[k] + t * (theta_ft[k] - theta_pre[k]))
        walker.zero_grad(set_to_none=True)
        for x, y in batches:
            loss = restoration_loss(walker(x.to(device)), y.to(device), "l1") / len(batches)
            loss.backward()
        for k, p in params.items():
            if p.grad is not None:
                grad_sum[k] += p.grad.detach()
        if on_progress:
            on_progress(probe_steps + i + 1, total)
    scores = {}
    for path in lora_targets(backbone):
        s = 0.0
        for suffix in ("weight", "bias"):
            k = f"{path}.{suffix}"
            if k in grad_sum:
                s += float((grad_sum[k] / path_steps * (theta_pre[k] - theta_ft[k])).abs().sum())
        scores[path] = s
    return scores


STAGES = ("intro", "encoders", "downs", "middle_blks", "ups", "decoders", "ending")


def stage_of(path: str) -> str:
    """`encoders.2.0.conv4` -> `encoders.2`; `intro` -> `intro`."""
    parts = path.split(".")
    return ".".join(parts[:2]) if parts[0] in ("encoders", "downs", "ups", "decoders") else parts[0]
