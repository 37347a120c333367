"""`colora ranks`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from colora_cli import output
from colora_cli.options import Device, Home, Json
from colora_cli.ranking import DEFAULT_BUDGET

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.store import Store  # noqa: F401


def ranks(
    name: Annotated[str, typer.Argument(help="Task name.")],
    budget: Annotated[float, typer.Option("--budget", help="LoRA parameters as a fraction of the backbone's.")] = DEFAULT_BUDGET,
    method: Annotated[str, typer.Option("--method", help="faig (contribution-based, CoLoRA) or uniform.")] = "faig",
    probe_steps: Annotated[int, typer.Option("--probe-steps", min=1, help="Steps of the brief full fine-tuning (K).")] = 100,
    path_steps: Annotated[int, typer.Option("--path-steps", min=1, help="Points on the integration path (M).")] = 16,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    as_json: Json = False,
    device: Device = "auto",
    home: Home = None,
) -> None:
    """Measure each layer's contribution to the task (FAIG) and store a rank plan for `colora train`.

    Example: colora ranks rain --budget 0.07 --probe-steps 100 --path-steps 16
    """
    from colora_cli.loading import load_store_backbone
    from colora_cli.ranking import compute_plan, show_plan
    from core.device import resolve_device
    from store.store import Store

    store = Store.open(home)
    task = store.task(name)
    backbone_row = store.backbone()
    backbone = load_store_backbone(store, backbone_row)
    plan, info = compute_plan(store, task, backbone_row, backbone, method=method, budget=budget, probe_steps=probe_steps,
                              path_steps=path_steps, seed=seed, device=resolve_device(device))
    if as_json:
        output.print_json({"task": name, "ranks": plan.ranks, **info})
        return
    show_plan(backbone, plan.ranks, info, f"{name}: {plan.method} rank plan, {output.human_count(plan.params)} parameters "
              f"({100 * plan.params / (plan.budget_params / plan.budget):.2f}% of the backbone, budget {100 * budget:g}%)")
    output.note(f"Stored the plan with task '{name}'. Next: colora train {name}")
