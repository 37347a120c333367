"""The adapter recipe, chosen by measurement: held-out PSNR against training time, per task kind.

For each task kind and each arm (steps, learning rate, batch x patch, loss), one adapter is
trained from the bundled backbone through the use-case layer (the same code as `colora train`,
CoLoRA plan included), and scored on held-out pairs it never saw: its validation split is split
again, half to pick the best state during training (what `train` does with a task's validation
pairs), half to score. Prints one table per task kind: arm, steps, wall time, PSNR of the
adapter at its last step and at the kept (best) step, against the input and the backbone.

    python -m bench.recipe                         # the default grid (about 2 h on a 2-core CPU)
    python -m bench.recipe --tasks rain100l --steps 500,2000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.common import SETS, git_rev, machine, markdown_table, task_store

TASKS = {
    "rain100l": (lambda: SETS["rain100l"](), 64),
    "cbsd68-σ25": (lambda: SETS["cbsd68"](25.0), 16),
    "lol": (lambda: SETS["lol"](), 10),
}


def score(store, held_out) -> dict:
    from colora.api.models import backbone_model, task_model
    from colora.core.inference.evaluate import evaluate

    task = store.task("t")
    adapter = store.adapter(task)
    backbone = backbone_model(store, adapter.backbone)
    model, _ = task_model(store, adapter, backbone)
    res = evaluate(
        {"input": None, "backbone": backbone, "adapter": model}, [(str(i), a, b) for i, (a, b) in enumerate(held_out)]
    )
    return {k: v[0] for k, v in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--steps", default="500,1000,2000,4000", help="step counts of the curve (at the default lr)")
    ap.add_argument("--lrs", default="2e-3,8e-3", help="other learning rates, at the middle step count")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--backbone", type=Path, help="a backbone file instead of the bundled one")
    ap.add_argument("--no-extras", action="store_true", help="skip the batch 8 x 64² and PSNR-loss arms")
    ap.add_argument(
        "--budgets", default="", help="other CoLoRA budgets (B or B@LR: at learning rate LR), at the middle step count"
    )
    ap.add_argument(
        "--starters", action="store_true", help="install the starter adapters, so every arm warm-starts from them"
    )
    ap.add_argument("--pairs", type=int, help="training pairs of every task instead of its own count (64, 16, 10)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from colora.api.training import TrainOptions, train_task

    steps = [int(s) for s in args.steps.split(",")]
    middle = steps[len(steps) // 2]
    # an arm is (label, train options, CoLoRA budget or None for the default plan)
    arms = [(f"{n} steps", TrainOptions(steps=n), None) for n in steps]
    lrs = [lr for lr in args.lrs.split(",") if lr]
    arms += [(f"{middle} steps, lr {lr}", TrainOptions(steps=middle, lr=float(lr)), None) for lr in lrs]
    for spec in filter(None, args.budgets.split(",")):  # "0.14" or "0.14@2e-3": a budget, at another lr
        budget, _, lr = spec.partition("@")
        options = TrainOptions(steps=middle, lr=float(lr)) if lr else TrainOptions(steps=middle)
        arms.append((f"{middle} steps, budget {budget}" + (f", lr {lr}" if lr else ""), options, float(budget)))
    arms += (
        []
        if args.no_extras
        else [
            (f"{middle} steps, batch 8 x 64²", TrainOptions(steps=middle, batch_size=8, patch_size=64), None),
            (f"{middle} steps, PSNR loss", TrainOptions(steps=middle, loss="psnr"), None),
        ]
    )
    tables = []
    for task in args.tasks.split(","):
        make, n_train = TASKS[task]
        n_train = args.pairs or n_train
        store, held_out = task_store(f"recipe/{task}", make(), n_train, args.backbone, starters=args.starters)
        from colora.api.ranking import PlanOptions, rank_task

        t0 = time.perf_counter()
        rank_task(store, "t")  # the CoLoRA plan once, timed on its own; every arm trains with it
        rows = [["(FAIG rank plan)", "-", f"{(time.perf_counter() - t0) / 60:.1f}", "", "", "", "", ""]]
        for label, options, budget in arms:
            if budget is not None:  # a plan of its own, not timed in the arm; the default plan back after it
                rank_task(store, "t", PlanOptions(budget=budget))
            t0 = time.perf_counter()
            done = train_task(store, "t", options)
            seconds = time.perf_counter() - t0
            s = score(store, held_out)
            curve = json.loads(store.last_run(store.task("t")).loss_curve)
            rows.append(
                [
                    label,
                    done.steps_done,
                    f"{seconds / 60:.1f}",
                    f"{s['adapter']:.2f}",
                    f"{done.best_step} of {done.steps_done}",
                    f"{s['backbone']:.2f}",
                    f"{s['input']:.2f}",
                    f"{curve[-1][1]:.4f}",
                ]
            )
            print(task, rows[-1], flush=True)
            if done.skipped_steps:  # the divergence guard (core/training/guard.py) at work
                print(f"  {done.skipped_steps} outlier step(s) skipped", flush=True)
            for r in done.recoveries:
                print(f"  diverged at step {r.step}: back to step {r.back_to}, lr x{r.lr_scale:g}", flush=True)
            if budget is not None:
                rank_task(store, "t")
        tables.append((task, n_train, len(held_out), rows))
    print(
        f"\nbench/recipe.py — {time.strftime('%Y-%m-%d')}, {machine()}, {args.threads} thread(s), git {git_rev()}, "
        f"backbone {args.backbone or 'bundled'}, default lr {TrainOptions().lr:g}, "
        "CoLoRA plan (FAIG, 7 %) computed once per task (its own row)\n"
    )
    for task, n_train, n_held, rows in tables:
        print(f"### {task}: {n_train} training pairs, {n_held} held-out pairs scored (PSNR dB, RGB, whole image)\n")
        print(
            markdown_table(
                ["arm", "steps", "min", "adapter (kept state)", "kept step", "backbone", "input", "final loss"], rows
            )
        )
        print()


if __name__ == "__main__":
    main()
