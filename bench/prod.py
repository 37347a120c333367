"""Does PROD pre-training pay? Adapters on a PROD backbone vs. random / fixed-order / single starts.

For each paired set that pre-training never saw (Rain100L, CBSD68 + noise; LOL optionally):
(a) the degraded input, (b) each backbone zero-shot, (c) a LoRA adapter trained with the same
steps, seed and rank on 16 and 64 (or all available) pairs from each backbone. The pre-trained
arms (PROD random order, fixed order, single degradation) get the same pre-training budget
here; the shipped PROD backbone (longer pre-training) is reported as an extra arm.

    python -m bench.prod                       # defaults below, ~1 h on a 2-core CPU
    python -m bench.prod --pretrain-steps 300 --adapter-steps 50 --sets rain100l   # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from bench.common import DATA, OUT, SETS, Timer, git_rev, machine, markdown_table
from colora.core.data.prod import ProdSampler
from colora.core.inference.evaluate import evaluate
from colora.core.model.backbone import PRESETS, build_backbone
from colora.core.model.bundled import bundled_backbone
from colora.core.model.lora import merge_all, uniform_rank_plan
from colora.core.model.weights import load_backbone, state_fingerprint
from colora.core.training.adapter import train_adapter
from colora.core.training.loop import TrainConfig
from colora.core.training.pretrain import pretrain, save_pretrained


def pretrained_arm(mode: str, steps: int, config: str, seed: int) -> Path:
    """Pre-train (or reuse) one arm; checkpoints let a killed run resume."""
    path = OUT / "backbones" / f"{config}-{mode}-{steps}.safetensors"
    if path.exists():
        return path
    ckpt = path.with_suffix(".checkpoint.safetensors")
    tc = TrainConfig(
        steps=steps,
        batch_size=8,
        patch_size=96,
        lr=1e-3,
        seed=seed,
        checkpoint_every=250,
        warmup_steps=min(200, steps // 10),
        log_every=50,
    )
    print(f"pre-training {mode} for {steps} steps ...", file=sys.stderr, flush=True)
    model, result, recipe = pretrain(
        DATA / "bsds500_pool" / "clean", PRESETS[config], tc, ProdSampler(mode=mode), checkpoint_path=ckpt, resume=True
    )
    save_pretrained(path, model, result, recipe, f"bench {mode} {steps}")
    ckpt.unlink(missing_ok=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", default="rain100l,cbsd68")
    ap.add_argument("--pairs", default="16,64")
    ap.add_argument("--pretrain-steps", type=int, default=2000)
    ap.add_argument("--adapter-steps", type=int, default=300)
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--config", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-shipped", action="store_true", help="skip the shipped backbone arm")
    args = ap.parse_args()
    torch.manual_seed(args.seed)

    arms: dict[str, torch.nn.Module] = {"random init": build_backbone(PRESETS[args.config], args.seed)}
    for mode, label in (("random", "PROD (random order)"), ("fixed", "fixed order"), ("single", "single degradation")):
        arms[f"{label}, {args.pretrain_steps} st"] = load_backbone(
            pretrained_arm(mode, args.pretrain_steps, args.config, args.seed)
        )[0]
    shipped = bundled_backbone()
    if shipped and not args.no_shipped:
        model, meta = load_backbone(shipped[0])
        steps = json.loads(meta["recipe"])["train"]["steps"]
        arms[f"shipped PROD, {steps} st"] = model

    config = TrainConfig(steps=args.adapter_steps, batch_size=4, patch_size=96, lr=2e-3, seed=args.seed)
    rows, records = [], []
    for set_name in args.sets.split(","):
        data = SETS[set_name](seed=args.seed)
        val = [(Path(a).stem, a, b) for a, b in data.val]
        zero = evaluate({"input": None, **arms}, val)
        rows.append([data.name, "-", "input", "-", f"{zero['input'][0]:.2f}", f"{zero['input'][1]:.4f}", "-"])
        for arm, model in arms.items():
            rows.append([data.name, "-", arm, "zero-shot", f"{zero[arm][0]:.2f}", f"{zero[arm][1]:.4f}", "-"])
        for n in [int(k) for k in args.pairs.split(",")]:
            n_used = min(n, len(data.train))
            train = data.train[:n_used]
            for arm, backbone in arms.items():
                torch.manual_seed(args.seed)
                with Timer() as t:
                    adapted, _, result = train_adapter(
                        backbone,
                        state_fingerprint(backbone.state_dict()),
                        data.name,
                        train,
                        config,
                        uniform_rank_plan(backbone, args.rank),
                    )
                merge_all(adapted)
                score = evaluate({"a": adapted}, val)["a"]
                rows.append(
                    [
                        data.name,
                        n_used,
                        arm,
                        f"LoRA r{args.rank}, {args.adapter_steps} st",
                        f"{score[0]:.2f}",
                        f"{score[1]:.4f}",
                        f"{t.seconds:.0f}",
                    ]
                )
                records.append({"set": data.name, "pairs": n_used, "arm": arm, "psnr": score[0], "ssim": score[1]})
                print(" | ".join(str(c) for c in rows[-1]), file=sys.stderr, flush=True)
        print(f"{data.name}: {len(data.train)} train pool, {len(data.val)} scored ({data.note})", file=sys.stderr)

    print(f"\nbench/prod.py — {machine()} — git {git_rev()}")
    print(
        f"pre-training: {args.pretrain_steps} steps x batch 8 x 96² on bsds500_pool (300 clean images); "
        f"adapters: uniform LoRA rank {args.rank}, {args.adapter_steps} steps x batch 4 x 96², lr "
        f"2e-3, seed {args.seed}\n"
    )
    print(markdown_table(["set", "train pairs", "backbone", "how", "PSNR", "SSIM", "train s"], rows))
    gaps = []
    for set_name in {r["set"] for r in records}:
        for n in sorted({r["pairs"] for r in records if r["set"] == set_name}):
            by_arm = {r["arm"]: r["psnr"] for r in records if r["set"] == set_name and r["pairs"] == n}
            prod = next(v for k, v in by_arm.items() if k.startswith("PROD"))
            gaps.append([set_name, n, f"{prod - by_arm['random init']:+.2f}"])
    print("\nPROD start minus random start (dB), same budget:\n")
    print(markdown_table(["set", "train pairs", "Δ PSNR"], gaps))
    (OUT / "prod.json").write_text(json.dumps({"args": vars(args), "records": records}, indent=1))


if __name__ == "__main__":
    main()
