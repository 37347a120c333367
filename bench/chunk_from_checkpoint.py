"""Save an unfinished pre-training chunk's weights as a backbone file, so a session that must stop
before its chunk ends loses none of its CPU-hours: the next chunk continues from it with --init-from.

    python -m bench.chunk_from_checkpoint STORE/pretrain/NAME/checkpoint.safetensors START.safetensors \
        OUT.safetensors --seed 11 --lr 3e-4 --batch-size 8 --patch-size 128 --planned-steps 4841

The weights are the checkpoint's moving average when the run kept one (`--ema`), else its raw
weights; the chunk is recorded in the recipe like a finished one, with `stopped_at` / `planned_steps`
(its learning rate had not finished its cosine decay). START is the backbone the chunk started from
(its recipe carries the chunks before). The optimizer state is not kept: only weights are committed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors import safe_open


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("start", type=Path, help="the backbone file the chunk started from (--init-from)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--batch-size", type=int, required=True)
    ap.add_argument("--patch-size", type=int, required=True)
    ap.add_argument("--planned-steps", type=int, required=True)
    args = ap.parse_args()

    from colora.core.model.weights import load_backbone, save_backbone

    model, start_meta = load_backbone(args.start)
    with safe_open(str(args.checkpoint), "pt") as f:
        meta = f.metadata()
        keys = list(f.keys())
        prefix = "ema." if any(k.startswith("ema.") for k in keys) else "param."
        state = {k.removeprefix(prefix): f.get_tensor(k) for k in keys if k.startswith(prefix)}
    missing = set(model.state_dict()) - set(state)
    if missing:
        raise SystemExit(f"the checkpoint lacks {len(missing)} of the backbone's tensors (e.g. {sorted(missing)[0]})")
    model.load_state_dict(state)
    step, wall = int(meta["step"]), float(meta["wall"])
    recipe = json.loads(start_meta["recipe"])
    chunk = {
        "steps": step,
        "wall_time_s": wall,
        "seed": args.seed,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "device": "cpu",
        "stopped_at": step,
        "planned_steps": args.planned_steps,
    }
    recipe["chunks"] = [*recipe.get("chunks", []), chunk]
    recipe["total_steps"] = sum(c["steps"] for c in recipe["chunks"])
    recipe["total_wall_time_s"] = sum(c.get("wall_time_s") or 0 for c in recipe["chunks"])
    recipe["train"] = {**recipe.get("train", {}), "steps": step, "seed": args.seed, "lr": args.lr}
    description = (
        f"PROD pre-trained (random order, {recipe['total_steps']} steps in {len(recipe['chunks'])} chunks, "
        f"the last stopped at step {step} of {args.planned_steps})"
    )
    sha = save_backbone(
        args.out,
        model,
        {
            "pretrained": "true",
            "description": description,
            "recipe": json.dumps(recipe),
            "loss_curve": meta["curve"],
        },
    )
    print(f"{args.out}: {prefix.rstrip('.')} weights at step {step} of {args.planned_steps}, sha256 {sha[:12]}")


if __name__ == "__main__":
    main()
