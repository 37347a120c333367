"""Where a PROD pre-training step goes, and how fast the machine could go: the step split into
building its batch (crop + flips, then the degradation chain) and the model (forward, backward,
AdamW), its FLOPs by torch.utils.flop_counter, and an fp32 matmul measured in the same run as the
ceiling; then whole steps as `backbone pretrain` runs them, with the batch built in this process
(`--workers 0`) and built ahead by worker processes while the step trains (`--workers N`).

    taskset -c 0 python -m bench.pretrain_step --threads 1 --workers 0,1
    python -m bench.pretrain_step --threads 2 --workers 0,1    # the whole 2-core machine

Reads the clean pool from ../shared/data (bsds500_pool + sun80) and the bundled backbone.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import DATA, ROOT, git_rev, machine, markdown_table
from colora.core.data.crops import apply_augment, augment_ops
from colora.core.data.prod import ProdSampler, apply_recipe
from colora.core.model.weights import load_backbone
from colora.core.training.loop import TrainConfig
from colora.core.training.pretrain import ProdBatches, load_clean_images, seconds_per_step

BUNDLED = ROOT / "core" / "weights" / "prod-medium.safetensors"


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_gflops(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.rand(n, n), torch.rand(n, n)
    return 2 * n**3 / median_time(lambda: a @ b, repeats) / 1e9


def data_split(images, sampler: ProdSampler, batch: int, patch: int, repeats: int) -> tuple[float, float]:
    """Seconds per batch spent cropping + flipping, and degrading (the chain), in this process."""
    gen = torch.Generator().manual_seed(0)
    crop_s = degrade_s = 0.0
    for _ in range(repeats):
        for _ in range(batch):
            index = int(torch.randint(len(images), (1,), generator=gen))
            h, w = images[index].shape[-2:]
            top = int(torch.randint(h - patch + 1, (1,), generator=gen))
            left = int(torch.randint(w - patch + 1, (1,), generator=gen))
            t0 = time.perf_counter()
            clean = apply_augment(images[index][:, top : top + patch, left : left + patch], augment_ops(gen)).float()
            t1 = time.perf_counter()
            apply_recipe(clean, sampler.sample_recipe(gen))
            t2 = time.perf_counter()
            crop_s, degrade_s = crop_s + t1 - t0, degrade_s + t2 - t1
    return crop_s / repeats, degrade_s / repeats


def model_split(model, batch: int, patch: int, repeats: int) -> tuple[float, float, float, float]:
    """Seconds per step in forward, backward and the optimizer, and the step's FLOPs."""
    model = model.train().requires_grad_(True).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, patch, patch).contiguous(memory_format=torch.channels_last)
    y = torch.rand(batch, 3, patch, patch)
    fwd, bwd, step = [], [], []
    for i in range(repeats + 2):
        t0 = time.perf_counter()
        loss = (model(x) - y).abs().mean()
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= 2:  # the first steps allocate
            fwd.append(t1 - t0), bwd.append(t2 - t1), step.append(t3 - t2)
    with FlopCounterMode(display=False) as counter:
        (model(x) - y).abs().mean().backward()
    return statistics.median(fwd), statistics.median(bwd), statistics.median(step), counter.get_total_flops()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--patch-size", type=int, default=128)
    ap.add_argument("--workers", default="0,1", help="comma-separated worker counts to time whole steps with")
    ap.add_argument("--images", type=int, default=60, help="clean images loaded from the pool (loading is not timed)")
    ap.add_argument("--repeats", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    folders = [DATA / "bsds500_pool" / "clean", DATA / "sun80" / "clean"]
    images = load_clean_images(folders, args.patch_size)[: args.images]
    sampler = ProdSampler(clean_fraction=0.05)
    model, _ = load_backbone(BUNDLED)
    model.requires_grad_(True)  # loaded frozen, as adapters see it; pre-training trains it all
    b, p = args.batch_size, args.patch_size

    peak = matmul_gflops()
    crop_s, degrade_s = data_split(images, sampler, b, p, args.repeats)
    fwd_s, bwd_s, opt_s, flops = model_split(copy.deepcopy(model), b, p, args.repeats)
    model_s = fwd_s + bwd_s + opt_s
    parts = [
        ("batch: crops + flips", crop_s),
        ("batch: degradation chains", degrade_s),
        ("model: forward", fwd_s),
        ("model: backward", bwd_s),
        ("model: AdamW step", opt_s),
    ]
    total = sum(s for _, s in parts)
    rows = [[name, f"{s * 1000:.0f}", f"{100 * s / total:.0f} %"] for name, s in parts]
    print(
        f"bench/pretrain_step.py — batch {b} x {p}², {args.threads} thread(s), medium backbone — "
        f"{machine()} — git {git_rev()}\n"
    )
    print(markdown_table(["part of a step", "ms", "share"], rows))
    print(
        f"\nmodel: {flops / 1e9:.1f} GFLOP a step (forward + backward), {flops / 1e9 / model_s:.0f} GFLOP/s; "
        f"an fp32 1024² matmul here: {peak:.0f} GFLOP/s ({100 * flops / 1e9 / model_s / peak:.0f} % of it)\n"
    )
    config = TrainConfig(steps=10, batch_size=b, patch_size=p, lr=1e-4, seed=0, warmup_steps=1, log_every=1000)
    whole = []
    for workers in [int(w) for w in args.workers.split(",")]:
        with ProdBatches(images, sampler, b, p, workers=workers) as batches:
            step_s = seconds_per_step(model, batches, config, "cpu", steps=args.repeats)
        whole.append(
            [
                f"whole step, --workers {workers}",
                f"{step_s * 1000:.0f}",
                f"{b / step_s:.1f}",
                f"{flops / 1e9 / step_s:.0f}",
            ]
        )
    print(markdown_table(["as `backbone pretrain` runs it", "ms / step", "images/s", "GFLOP/s"], whole))


if __name__ == "__main__":
    main()
