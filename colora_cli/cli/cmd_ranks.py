"""`colora ranks`."""

from __future__ import annotations

from typing import Annotated

import typer

from colora.api.ranking import PlanOptions
from colora.cli import output
from colora.cli.options import Device, Home, Json, choice
from colora.core.choices import RANK_METHODS
from colora.core.defaults import DEVICE

PLAN = PlanOptions()  # the defaults, stated once (colora.api.ranking)


def ranks(
    name: Annotated[str, typer.Argument(help="Task name.")],
    budget: Annotated[
        float, typer.Option("--budget", help="LoRA parameters as a fraction of the backbone's.")
    ] = PLAN.budget,
    method: Annotated[
        choice(RANK_METHODS), typer.Option("--method", help="faig (contribution-based, CoLoRA) or uniform.")
    ] = PLAN.method,
    probe_steps: Annotated[
        int, typer.Option("--probe-steps", min=1, help="Steps of the brief full fine-tuning (K).")
    ] = PLAN.probe_steps,
    path_steps: Annotated[
        int, typer.Option("--path-steps", min=1, help="Points on the integration path (M).")
    ] = PLAN.path_steps,
    seed: Annotated[int, typer.Option("--seed")] = PLAN.seed,
    as_json: Json = False,
    device: Device = DEVICE,
    home: Home = None,
) -> None:
    """Measure each layer's contribution to the task (FAIG) and store a rank plan for `colora train`.

    Example: colora ranks rain --budget 0.05 --probe-steps 30 --path-steps 8
    """
    from colora.api.ranking import PlanOptions, rank_task
    from colora.store.store import Store

    options = PlanOptions(method=method, budget=budget, probe_steps=probe_steps, path_steps=path_steps, seed=seed)
    done = rank_task(Store.open(home), name, options, device=device, reporter=output.REPORTER)
    plan = done.plan
    if as_json:
        output.print_json({"task": name, "ranks": plan.ranks, **done.info})
        return
    title = (
        f"{name}: {plan.method} rank plan, {output.human_count(plan.params)} parameters "
        f"({100 * plan.params / (plan.budget_params / plan.budget):.2f}% of the backbone, budget {100 * budget:g}%)"
    )
    print_plan(title, done.layers, done.stages)
    output.note(f"Stored the plan with task '{name}'. Next: colora train {name}")


def print_plan(title: str, layers: list[dict], stages: list[dict]) -> None:
    output.table(
        title,
        ["layer", "contribution", "rank", "params"],
        [
            [
                r["layer"],
                f"{100 * r['contribution']:.2f}%" if r["contribution"] is not None else "-",
                r["rank"],
                output.human_count(r["params"]),
            ]
            for r in layers
        ],
    )
    output.table(
        "by stage (encoder -> middle -> decoder)",
        ["stage", "contribution", "", "share of LoRA params"],
        [
            [
                s["stage"],
                f"{100 * s['contribution']:.1f}%",
                "█" * round(40 * s["contribution"]),
                f"{100 * s['share']:.1f}%",
            ]
            for s in stages
        ],
    )
