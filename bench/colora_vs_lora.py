"""CoLoRA vs. uniform LoRA at the same parameter budget vs. full fine-tuning, on the PROD backbone.

For each real paired set and each training-set size, every arm gets the same steps, batch,
patch, learning-rate schedule and seed; scores are on held-out pairs. Each arm trains in its
own process, so its peak resident memory (RSS high-water mark above the process's state
right before training) is its own.

    python -m bench.colora_vs_lora                                  # ~30 min on a 2-core CPU
    python -m bench.colora_vs_lora --sets rain100l --pairs 16 --steps 50 --probe-steps 10   # smoke
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import torch

from bench.common import OUT, SETS, git_rev, machine, markdown_table
from colora.core.model.bundled import BUNDLED_DIR, BUNDLED_NAME


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_arm(arm: str, backbone_path: str, set_name: str, n_pairs: int, args: dict, queue) -> None:
    """One arm in a fresh process; puts a result dict on the queue."""
    from colora.core.data.crops import PairSet
    from colora.core.inference.evaluate import evaluate
    from colora.core.model.backbone import count_parameters
    from colora.core.model.lora import merge_all
    from colora.core.model.weights import load_backbone
    from colora.core.training.adapter import train_adapter
    from colora.core.training.loop import TrainConfig, fit
    from colora.core.training.ranks import faig_scores, plan_from_scores, uniform_plan

    torch.manual_seed(args["seed"])
    backbone, meta = load_backbone(Path(backbone_path))
    data = SETS[set_name](seed=args["seed"])
    train = data.train[:n_pairs]
    val = [(Path(a).stem, a, b) for a, b in data.val]
    config = TrainConfig(steps=args["steps"], batch_size=4, patch_size=96, lr=args["lr"], seed=args["seed"])
    before = _rss_mb()
    t0 = time.perf_counter()
    extra = {}
    if arm == "backbone":
        model, trainable = backbone, 0
    elif arm == "full":
        model = backbone
        for p in model.parameters():
            p.requires_grad_(True)
        pairs = PairSet.from_files(train)
        fit(
            model,
            dict(model.named_parameters()),
            lambda s, g: pairs.sample_batch(4, 96, g),
            TrainConfig(**{**config.__dict__, "lr": args["full_lr"]}),
        )
        trainable = count_parameters(model)
    else:
        if arm == "colora":
            scores = faig_scores(
                backbone, train, probe_steps=args["probe_steps"], path_steps=args["path_steps"], seed=args["seed"]
            )
            plan = plan_from_scores(backbone, scores, args["budget"])
            extra["ranks_s"] = time.perf_counter() - t0
        else:
            plan = uniform_plan(backbone, args["budget"])
        model, _, _ = train_adapter(
            backbone, meta["sha256"], set_name, train, config, plan.ranks, plan_method=plan.method
        )
        merge_all(model)
        trainable = plan.params
    seconds = time.perf_counter() - t0
    peak = _rss_mb() - before
    psnr, ssim, _ = evaluate({"m": model}, val)["m"]
    queue.put(
        {
            "arm": arm,
            "set": set_name,
            "pairs": len(train),
            "psnr": psnr,
            "ssim": ssim,
            "trainable": trainable,
            "percent": 100 * trainable / count_parameters(backbone),
            "seconds": seconds,
            "peak_mb": peak,
            "val": len(val),
            **extra,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--backbone", default=str(BUNDLED_DIR / f"{BUNDLED_NAME}.safetensors"), help="default: the bundled one"
    )
    ap.add_argument("--sets", default="rain100l,cbsd68")
    ap.add_argument("--pairs", default="16,64")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=2e-3, help="LoRA learning rate")
    ap.add_argument("--full-lr", type=float, default=5e-4, help="full fine-tuning learning rate")
    ap.add_argument("--budget", type=float, default=0.07)
    ap.add_argument("--probe-steps", type=int, default=100)
    ap.add_argument("--path-steps", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", default="backbone,uniform,colora,full")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    records = []
    for set_name in args.sets.split(","):
        for n in [int(k) for k in args.pairs.split(",")]:
            for arm in args.arms.split(","):
                if arm == "backbone" and n != int(args.pairs.split(",")[0]):
                    continue  # no training: one row per set is enough
                q = ctx.Queue()
                p = ctx.Process(target=run_arm, args=(arm, args.backbone, set_name, n, vars(args), q))
                p.start()
                r = q.get()
                p.join()
                records.append(r)
                print(json.dumps(r), file=sys.stderr, flush=True)
    print(f"\nbench/colora_vs_lora.py — {machine()} — git {git_rev()}")
    print(
        f"backbone {Path(args.backbone).name}; {args.steps} steps x batch 4 x 96², LoRA lr {args.lr}, full lr "
        f"{args.full_lr}, cosine; budget {100 * args.budget:g}% of the backbone; FAIG probe {args.probe_steps} "
        f"steps, {args.path_steps} path points; seed {args.seed}\n"
    )
    rows = [
        [
            r["set"],
            r["pairs"] if r["arm"] != "backbone" else "-",
            r["val"],
            r["arm"],
            f"{r['psnr']:.2f}",
            f"{r['ssim']:.4f}",
            f"{r['trainable']:,} ({r['percent']:.2f}%)",
            f"{r['seconds']:.0f}",
            f"{r['peak_mb']:.0f}",
        ]
        for r in records
    ]
    print(
        markdown_table(
            [
                "set",
                "train pairs",
                "val pairs",
                "arm",
                "PSNR",
                "SSIM",
                "trainable (% backbone)",
                "train s",
                "peak RSS +MB",
            ],
            rows,
        )
    )
    summary = []
    for set_name in args.sets.split(","):
        for n in sorted({r["pairs"] for r in records if r["set"] == set_name and r["arm"] != "backbone"}):
            by = {r["arm"]: r["psnr"] for r in records if r["set"] == set_name and r["pairs"] == n}
            if {"uniform", "colora", "full"} <= set(by):
                summary.append(
                    [set_name, n, f"{by['colora'] - by['uniform']:+.2f}", f"{by['colora'] - by['full']:+.2f}"]
                )
    print("\nCoLoRA minus uniform LoRA, and minus full fine-tuning (dB):\n")
    print(markdown_table(["set", "train pairs", "CoLoRA − uniform", "CoLoRA − full"], summary))
    (OUT / "colora_vs_lora.json").parent.mkdir(parents=True, exist_ok=True)
    (OUT / "colora_vs_lora.json").write_text(json.dumps({"args": vars(args), "records": records}, indent=1))


if __name__ == "__main__":
    main()
