"""A `colora train` step against bench/speed.py's bare training step, in one process.

`train_task` (the command's code: crops, validation, progress, heartbeat, checkpoints) runs for
--steps steps on the bundled example rain pairs with their CoLoRA plan, profiled; then the bare
step of bench/speed.py (one fixed batch, same plan, same backbone) is timed. The difference is the
command's own overhead; the profile says where a step goes.

    python -m bench.train_step --steps 150
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import git_rev, machine

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "rain"


def bare_step_seconds(model: torch.nn.Module, params: list, repeats: int = 40) -> float:
    """bench/speed.py's train arm: one fixed random batch of 4 x 96², L1, AdamW, channels_last."""
    opt = torch.optim.AdamW(params, lr=1e-4)
    x, y = torch.rand(4, 3, 96, 96), torch.rand(4, 3, 96, 96)
    model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        loss = (model(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return statistics.median(times[5:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from colora.api.backbones import init_store
    from colora.api.models import backbone_model
    from colora.api.ranking import rank_task
    from colora.api.tasks import add_task
    from colora.api.training import TrainOptions, train_task
    from colora.core.model.lora import inject_lora, lora_layers

    store = init_store(Path(tempfile.mkdtemp(prefix="colora-step-")) / "home", starters=False).store
    add_task(store, "rain", EXAMPLE / "train", val=EXAMPLE / "val")
    t0 = time.perf_counter()
    plan = rank_task(store, "rain").plan.ranks
    plan_s = time.perf_counter() - t0
    profile = cProfile.Profile()
    profile.enable()
    done = train_task(store, "rain", TrainOptions(steps=args.steps))
    profile.disable()
    command = done.wall_time_s / args.steps
    model = backbone_model(store, store.backbone()).train()
    inject_lora(model, plan, mode="weight")
    bare = bare_step_seconds(model, [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)])
    pstats.Stats(profile).sort_stats("cumulative").print_stats(15)
    print(
        f"bench/train_step.py — {time.strftime('%Y-%m-%d')}, {machine()}, {args.threads} thread(s), git {git_rev()}, "
        f"backbone {store.backbone().name}\n"
    )
    print(f"FAIG plan (default probe): {plan_s:.1f} s")
    print(f"`colora train` ({args.steps} steps, batch 4 x 96²): {command:.3f} s/step")
    print(f"bench/speed.py's bare step, same plan: {bare:.3f} s/step ({command / bare:.2f}x)")


if __name__ == "__main__":
    main()
