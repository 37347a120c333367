"""CoLoRA rank plans: computing a task's plan (FAIG or uniform), finding the stored one, describing it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from colora.api.progress import SILENT, Reporter
from colora.core.defaults import DEVICE, RANK_METHOD, SEED

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.core.training.ranks import RankPlan
    from colora.store.schema import Backbone, Task
    from colora.store.store import Store

DEFAULT_BUDGET = 0.07  # LoRA parameters as a fraction of the backbone's (the paper's ~7 %)
# FAIG probe: K fine-tuning steps, M path points. 30/8 gives the plan of 100/16 (layer-score rank
# correlation 1.00, 2 % of ranks moved, same adapter PSNR) in a third of the time: bench/faig_probe.py.
DEFAULT_PROBE_STEPS = 30
DEFAULT_PATH_STEPS = 8


@dataclass
class PlanOptions:
    method: str = RANK_METHOD
    budget: float = DEFAULT_BUDGET
    probe_steps: int = DEFAULT_PROBE_STEPS
    path_steps: int = DEFAULT_PATH_STEPS
    batch_size: int = 4
    patch_size: int = 96
    seed: int = SEED


@dataclass
class ComputedPlan:
    plan: RankPlan
    info: dict  # what is stored with the task: plan.info() + the backbone it was measured on
    layers: list[dict] = field(default_factory=list)  # per layer: path, contribution, rank, params
    stages: list[dict] = field(default_factory=list)  # per stage: name, contribution, share of LoRA params


def rank_task(
    store: Store, name: str, options: PlanOptions | None = None, *, device: str = DEVICE, reporter: Reporter = SILENT
) -> ComputedPlan:
    """`colora ranks`: compute the task's plan on the default backbone, store it, describe it."""
    from colora.api.models import backbone_model
    from colora.core.device import resolve_device

    task = store.task(name)
    backbone_row = store.backbone()
    backbone = backbone_model(store, backbone_row)
    plan, info = compute_plan(
        store, task, backbone_row, backbone, options or PlanOptions(), device=resolve_device(device), reporter=reporter
    )
    layers, stages = describe_plan(backbone, plan.ranks, info)
    return ComputedPlan(plan, info, layers, stages)


def compute_plan(
    store: Store,
    task: Task,
    backbone_row: Backbone,
    backbone,
    options: PlanOptions | None = None,
    *,
    device="cpu",
    reporter: Reporter = SILENT,
) -> tuple[RankPlan, dict]:
    """Compute the plan, store it with the task and return it with its stored info."""
    from colora.api.tasks import checked_pairs
    from colora.core.errors import InvalidInputError
    from colora.core.training.ranks import METHODS, faig_scores, plan_from_scores, uniform_plan

    o = options or PlanOptions()
    if o.method not in METHODS:
        raise InvalidInputError(f"unknown method {o.method!r}; use one of {', '.join(METHODS)}")
    if o.method == "uniform":
        plan = uniform_plan(backbone, o.budget)
    else:
        pairs = checked_pairs(store, task, "train")
        with reporter.progress(f"ranks {task.name} (FAIG)", o.probe_steps + o.path_steps) as update:
            scores = faig_scores(
                backbone,
                [(p.input_path, p.target_path) for p in pairs],
                probe_steps=o.probe_steps,
                path_steps=o.path_steps,
                batch_size=o.batch_size,
                patch_size=o.patch_size,
                seed=o.seed,
                device=device,
                on_progress=lambda done, total: update(done),
            )
        plan = plan_from_scores(
            backbone,
            scores,
            o.budget,
            settings={
                "probe_steps": o.probe_steps,
                "path_steps": o.path_steps,
                "batch_size": o.batch_size,
                "patch_size": o.patch_size,
                "seed": o.seed,
            },
        )
    info = plan.info() | {"backbone_sha256": backbone_row.sha256, "backbone": backbone_row.name}
    store.set_rank_plan(task, plan.ranks, plan.method, info)
    return plan, info


def stored_plan(task: Task, backbone_row: Backbone) -> tuple[dict[str, int], str, dict] | None:
    """(ranks, method, info) of the task's plan if it was computed for this backbone."""
    if not task.rank_plan or not task.rank_plan_info:
        return None
    info = json.loads(task.rank_plan_info)
    if info.get("backbone_sha256") != backbone_row.sha256:
        return None
    return task.plan(), task.rank_plan_method or info.get("method", "plan"), info


def plan_scores(task: Task, backbone_sha256: str) -> dict[str, float] | None:
    """The measured contributions behind the task's stored plan, if measured on this backbone."""
    info = json.loads(task.rank_plan_info) if task.rank_plan_info else {}
    if info.get("scores") and info.get("backbone_sha256", backbone_sha256) == backbone_sha256:
        return info["scores"]
    return None


def describe_plan(backbone, ranks: dict[str, int], info: dict) -> tuple[list[dict], list[dict]]:
    """Per layer (path, contribution, rank, params) and per stage (encoder -> middle -> decoder)."""
    from colora.core.model.lora import layer_cost, lora_targets
    from colora.core.training.ranks import stage_of

    targets = lora_targets(backbone)
    scores = info.get("scores") or {}
    layers = [
        {"layer": path, "contribution": scores.get(path), "rank": r, "params": r * layer_cost(targets[path])}
        for path, r in ranks.items()
    ]
    stages: dict[str, list] = {}
    for row in layers:
        s = stages.setdefault(stage_of(row["layer"]), [0.0, 0])
        s[0] += row["contribution"] or 0.0
        s[1] += row["params"]
    total_params = sum(v[1] for v in stages.values()) or 1
    return layers, [{"stage": name, "contribution": c, "share": n / total_params} for name, (c, n) in stages.items()]
