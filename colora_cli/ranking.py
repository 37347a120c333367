"""Computing, storing and showing a task's rank plan (shared by `ranks` and `train`)."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from colora_cli import output

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.schema import Backbone, Task  # noqa: F401
    from store.store import Store  # noqa: F401

DEFAULT_BUDGET = 0.07


def compute_plan(store: Store, task: Task, backbone_row: Backbone, backbone, *, method: str = "faig",
                 budget: float = DEFAULT_BUDGET, probe_steps: int = 100, path_steps: int = 16,
                 batch_size: int = 4, patch_size: int = 96, seed: int = 0, device="cpu"):
    """Compute the plan, store it with the task and return it (a core.ranks.RankPlan)."""
    from colora_cli.manifest import require_unchanged
    from core.errors import InvalidInputError
    from core.training.ranks import METHODS, faig_scores, plan_from_scores, uniform_plan

    if method not in METHODS:
        raise InvalidInputError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if method == "uniform":
        plan = uniform_plan(backbone, budget)
    else:
        pairs = store.pairs(task, "train")
        require_unchanged(task.name, pairs)
        with output.progress(f"ranks {task.name} (FAIG)", probe_steps + path_steps) as update:
            scores = faig_scores(backbone, [(p.input_path, p.target_path) for p in pairs], probe_steps=probe_steps,
                                 path_steps=path_steps, batch_size=batch_size, patch_size=patch_size, seed=seed,
                                 device=device, on_progress=lambda done, total: update(done))
        plan = plan_from_scores(backbone, scores, budget, settings={
            "probe_steps": probe_steps, "path_steps": path_steps, "batch_size": batch_size,
            "patch_size": patch_size, "seed": seed})
    info = plan.info() | {"backbone_sha256": backbone_row.sha256, "backbone": backbone_row.name}
    store.set_rank_plan(task, plan.ranks, plan.method, info)
    return plan, info


def stored_plan(task: Task, backbone_row: Backbone) -> tuple[dict[str, int], str, dict] | None:
    """The task's plan if it was computed for this backbone."""
    if not task.rank_plan or not task.rank_plan_info:
        return None
    info = json.loads(task.rank_plan_info)
    if info.get("backbone_sha256") != backbone_row.sha256:
        return None
    return task.plan(), task.rank_plan_method or info.get("method", "plan"), info


def show_plan(backbone, ranks: dict[str, int], info: dict, title: str) -> None:
    from core.model.lora import lora_targets
    from core.training.ranks import layer_cost, stage_of

    targets = lora_targets(backbone)
    scores = info.get("scores") or {}
    rows = [[path, f"{100 * scores[path]:.2f}%" if path in scores else "-", r, output.human_count(r * layer_cost(targets[path]))]
            for path, r in ranks.items()]
    output.table(title, ["layer", "contribution", "rank", "params"], rows)
    stages: dict[str, list] = {}
    for path, r in ranks.items():
        s = stages.setdefault(stage_of(path), [0.0, 0])
        s[0] += scores.get(path, 0.0)
        s[1] += r * layer_cost(targets[path])
    total_params = sum(v[1] for v in stages.values()) or 1
    output.table("by stage (encoder -> middle -> decoder)", ["stage", "contribution", "", "share of LoRA params"],
                 [[name, f"{100 * c:.1f}%", "█" * round(40 * c), f"{100 * n / total_params:.1f}%"]
                  for name, (c, n) in stages.items()])
