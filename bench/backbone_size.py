"""Which backbone size gives the best adapted quality per CPU-minute of adapter training?

For each candidate size: PROD pre-training for the same number of steps (the same data seen),
then, per task, a LoRA adapter (uniform ranks at the default 7 % budget) trained for the same
wall-clock minutes on one thread, scored on the task's held-out validation pairs. A bigger
backbone restores better per step but takes fewer steps in the minutes; this table says which
wins, and at what inference cost.

    taskset -c 1 python -m bench.backbone_size --pretrain-steps 2000 --minutes 3
    python -m bench.backbone_size --only small,wide --tasks rain100l

Pre-trained candidates are kept under bench/out/backbone_size/ and reused.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import DATA, OUT, SETS, git_rev, machine, markdown_table
from colora.core.data.prod import ProdSampler
from colora.core.inference.evaluate import evaluate
from colora.core.model.backbone import BackboneConfig, count_parameters
from colora.core.model.weights import load_backbone
from colora.core.training.adapter import train_adapter
from colora.core.training.loop import TrainConfig
from colora.core.training.pretrain import pretrain, save_pretrained
from colora.core.training.ranks import uniform_plan

CANDIDATES = {
    "small": BackboneConfig(),  # width 16, enc 1,1,1,2, middle 2, dec 1,1,1,1 (today's prod-small)
    "deep": BackboneConfig(width=16, enc_blocks=(1, 1, 2, 4), middle_blocks=4, dec_blocks=(1, 1, 1, 1)),
    "wide": BackboneConfig(width=24),
    "w32": BackboneConfig(width=32, enc_blocks=(1, 1, 1, 1), middle_blocks=1, dec_blocks=(1, 1, 1, 1)),
}
TASKS = {
    "rain100l": lambda: SETS["rain100l"](),
    "cbsd68-σ25": lambda: SETS["cbsd68"](25.0),
    "lol": lambda: SETS["lol"](),
}
TRAIN_PAIRS = {"rain100l": 64, "cbsd68-σ25": 16, "lol": 10}


def pretrained(name: str, config: BackboneConfig, steps: int) -> tuple[torch.nn.Module, str, float]:
    """(model, fingerprint, seconds per step) of a candidate pre-trained for `steps` (cached)."""
    path = OUT / "backbone_size" / f"{name}-{steps}.safetensors"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        train = TrainConfig(
            steps=steps,
            batch_size=8,
            patch_size=96,
            lr=1e-3,
            seed=0,
            warmup_steps=min(200, steps // 10),
            log_every=50,
            checkpoint_every=250,
        )
        model, result, recipe = pretrain(
            DATA / "bsds500_pool" / "clean",
            config,
            train,
            ProdSampler(),
            checkpoint_path=path.with_suffix(".ckpt.safetensors"),
            resume=True,
        )
        save_pretrained(
            path, model, result, recipe | {"seconds_per_step": result.wall_time_s / steps}, f"size study {name}"
        )
        path.with_suffix(".ckpt.safetensors").unlink(missing_ok=True)
    model, meta = load_backbone(path)
    import json

    return model, meta["sha256"], json.loads(meta["recipe"])["seconds_per_step"]


def adapter_step_seconds(model, plan, pairs) -> float:
    t = []
    config = TrainConfig(steps=12, batch_size=4, patch_size=96, lr=2e-3, warmup_steps=2)
    train_adapter(
        model, "x", "probe", pairs, config, plan, on_step=lambda done, total, loss: t.append(time.perf_counter())
    )
    return statistics.median(b - a for a, b in zip(t[3:], t[4:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=3.0, help="adapter training wall-clock per task")
    ap.add_argument("--only", default=",".join(CANDIDATES))
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tasks = {t: TASKS[t]() for t in args.tasks.split(",")}
    rows = []
    for name in args.only.split(","):
        config = CANDIDATES[name]
        model, sha, pre_step = pretrained(name, config, args.pretrain_steps)
        with torch.no_grad():
            x = torch.rand(1, 3, 512, 512)
            from colora.core.model.fast import FastNAFNet

            fast = FastNAFNet(model)
            fast(x)
            t0 = time.perf_counter()
            fast(x)
            infer = time.perf_counter() - t0
        row = [name, f"{count_parameters(model) / 1e6:.2f}M", f"{pre_step:.3f}", f"{infer:.2f}"]
        for task, data in tasks.items():
            pairs = data.train[: TRAIN_PAIRS[task]]
            plan = uniform_plan(model, 0.07).ranks
            step = adapter_step_seconds(model, plan, pairs)
            steps = max(20, int(args.minutes * 60 / step))
            t0 = time.perf_counter()
            config_t = TrainConfig(steps=steps, batch_size=4, patch_size=96, lr=2e-3, seed=0)
            adapted, _, _ = train_adapter(model, sha, task, pairs, config_t, plan)
            seconds = time.perf_counter() - t0
            from colora.core.model.lora import merge_all

            merge_all(adapted)
            val = [(f"{i}", a, b) for i, (a, b) in enumerate(data.val)]
            res = evaluate({"input": None, "backbone": model, "adapter": adapted}, val)
            row.append(
                f"{res['adapter'][0]:.2f} ({res['backbone'][0]:.2f} / {res['input'][0]:.2f}); "
                f"{steps} steps, {seconds / 60:.1f} min"
            )
            print(name, task, row[-1], flush=True)
        rows.append(row)
    print(
        f"\nbench/backbone_size.py — {time.strftime('%Y-%m-%d')}, {machine()}, {args.threads} "
        f"thread(s), git {git_rev()}; "
        f"PROD pre-training {args.pretrain_steps} steps (batch 8 x 96²) per size; adapters: uniform LoRA at 7 %, "
        f"{args.minutes:g} min each, batch 4 x 96², lr 2e-3; PSNR on held-out validation pairs\n"
    )
    tcols = [f"{t}: adapter (backbone / input) dB" for t in tasks]
    print(markdown_table(["size", "params", "pretrain s/step", "512² restore s", *tcols], rows))


if __name__ == "__main__":
    main()
