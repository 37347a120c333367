"""A cheaper FAIG probe, without losing its plan's quality?

For each task and each probe setting (fine-tuning steps K, path points M, probe patch), the
CoLoRA plan is computed (timed), an adapter is trained with it for the same number of steps,
and scored on held-out pairs; the plan is also compared with the reference setting's (the
first): rank correlation of the layer scores and the share of LoRA parameters that moved.

    python -m bench.faig_probe --steps 1500
    python -m bench.faig_probe --settings 100:16:96,30:8:96,30:8:64 --tasks rain100l
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from bench.common import SETS, git_rev, machine, markdown_table, task_store

TASKS = {"rain100l": (lambda: SETS["rain100l"](), 64), "cbsd68-σ25": (lambda: SETS["cbsd68"](25.0), 16)}


def spearman(a: dict, b: dict) -> float:
    keys = sorted(a)
    ra = {k: i for i, k in enumerate(sorted(keys, key=lambda k: a[k]))}
    rb = {k: i for i, k in enumerate(sorted(keys, key=lambda k: b.get(k, 0.0)))}
    n = len(keys)
    return 1 - 6 * sum((ra[k] - rb[k]) ** 2 for k in keys) / (n * (n * n - 1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument(
        "--settings", default="100:16:96,30:8:96,30:8:64,10:4:64", help="K:M:patch, the first is the reference"
    )
    ap.add_argument("--steps", type=int, default=1500, help="adapter training steps with each plan")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--backbone", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from bench.recipe import score
    from colora.api.ranking import PlanOptions, rank_task
    from colora.api.training import TrainOptions, train_task

    rows = []
    for task in args.tasks.split(","):
        make, n_train = TASKS[task]
        store, held_out = task_store(f"faig/{task}", make(), n_train, args.backbone, starters=False)
        reference = None
        for setting in args.settings.split(","):
            k, m, patch = (int(v) for v in setting.split(":"))
            t0 = time.perf_counter()
            plan = rank_task(store, "t", PlanOptions(probe_steps=k, path_steps=m, patch_size=patch))
            seconds = time.perf_counter() - t0
            train_task(store, "t", TrainOptions(steps=args.steps))
            psnr = score(store, held_out)["adapter"]
            ranks = plan.plan.ranks
            if reference is None:
                reference = (plan.plan.scores, ranks)
            moved = sum(abs(ranks[p] - reference[1][p]) for p in ranks) / max(1, sum(reference[1].values()))
            rows.append(
                [
                    task,
                    f"K={k}, M={m}, {patch}²",
                    f"{seconds:.0f}",
                    f"{psnr:.2f}",
                    f"{spearman(reference[0], plan.plan.scores):.2f}",
                    f"{100 * moved:.0f}%",
                ]
            )
            print(rows[-1], flush=True)
    print(
        f"\nbench/faig_probe.py — {time.strftime('%Y-%m-%d')}, {machine()}, {args.threads} thread(s), git {git_rev()}, "
        f"backbone {args.backbone or 'bundled'}; adapters {args.steps} steps each, PSNR on held-out pairs\n"
    )
    print(markdown_table(["task", "probe", "plan s", "adapter PSNR", "score rank corr. vs first", "ranks moved"], rows))


if __name__ == "__main__":
    main()
