"""Write core/weights/MODEL_CARD.md for the bundled backbone: recipe, loss curve, zero-shot metrics.

    python -m bench.model_card --previous bench/chunks/prod-medium-c2.safetensors

The zero-shot table holds the bench sets and the mild inputs of bench/backbone_compare.py (σ5 noise,
JPEG q80, clean images: a backbone should leave them almost as they are), beside the backbone the
bundled one replaced (`--previous`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from bench.backbone_compare import zero_shot_sets
from bench.common import git_rev, machine, markdown_table
from colora.core.files import sha256_file
from colora.core.inference.evaluate import evaluate
from colora.core.model.bundled import BUNDLED_DIR, bundled_backbone
from colora.core.model.weights import load_backbone


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--previous", type=Path, help="the backbone the bundled one replaced, scored beside it")
    args = parser.parse_args()
    found = bundled_backbone()
    if found is None:
        sys.exit("no bundled backbone in core/weights/")
    path, name = found
    model, meta = load_backbone(path)
    recipe = json.loads(meta["recipe"])
    curve = json.loads(meta["loss_curve"])
    arms = {"input": None, "backbone": model}
    if args.previous:
        previous, previous_meta = load_backbone(args.previous)
        arms = {"input": None, "previous": previous, "backbone": model}
    rows = []
    for data in zero_shot_sets():
        val = [(Path(a).stem, a, b) for a, b in data.val]
        r = evaluate(arms, val)
        rows.append([data.name, len(val), *(f"{r[arm][0]:.2f} / {r[arm][1]:.4f}" for arm in arms), data.note])
        print(rows[-1], file=sys.stderr)
    previous_note = (
        f' "previous" is `{args.previous.name}` ({previous_meta.get("description", "")}), the backbone'
        " bundled before this one."
        if args.previous
        else ""
    )
    columns = ["set", "pairs", "input", *(["previous"] if args.previous else []), "backbone zero-shot", "degradation"]
    every = max(1, len(curve) // 12)
    curve_rows = [[s, f"{v:.4f}"] for s, v in curve[::every]] + (
        [[curve[-1][0], f"{curve[-1][1]:.4f}"]] if (len(curve) - 1) % every else []
    )
    train = recipe["train"]
    chunks = recipe.get("chunks") or [
        {"steps": train["steps"], "wall_time_s": recipe["wall_time_s"], "seed": train["seed"], "lr": train["lr"]}
    ]
    total_s = sum(c.get("wall_time_s") or 0 for c in chunks)
    text = f"""# Model card: `{name}` (the bundled backbone)

Produced by colora's own pre-training command, on the CPU, and shipped as
`core/weights/{path.name}`; `colora init` installs it as the store's default backbone.
{_commands(name, chunks)}

| | |
|---|---|
| architecture | NAFNet-style, config `{json.dumps(json.loads(meta["config"]))}` |
| parameters | {recipe["params"]:,} |
| fingerprint (sha256 of tensors) | `{meta["sha256"]}` |
| file sha256 | `{sha256_file(path)}` |
| data | `{recipe["data"]["folder"]}` (the last chunk): {recipe["data"]["images"]} clean photographs (bsds500_pool: BSDS500; sun80: Sun-Hays 80), none of which is behind Rain100L, Rain12, CBSD68, LOL (see ../shared/data/SOURCES.md) |
| degradations | PROD, {recipe["sampler"]["mode"]} order, 1..{recipe["sampler"]["max_degradations"]} of: {", ".join(recipe["sampler"]["names"])}; at most one per family in {recipe["sampler"]["one_per_family"]} |
| training | {sum(c["steps"] for c in chunks)} steps in {len(chunks)} chunk(s) (the table above), L1 loss, AdamW, each chunk warm-up then cosine to {train["min_lr_ratio"]}x |
| wall time | {total_s / 60:.0f} min in all: each chunk on one core of a 2-core CPU beside other work, unless it says `cuda` |
| intended use | a frozen starting point for per-task LoRA adapters; not a finished restorer on its own |

## Loss curve (L1 on PROD-degraded training crops, mean over each logging window; {"the last chunk" if len(chunks) > 1 else "the run"})

{markdown_table(["step", "L1"], curve_rows)}

## Zero-shot quality on held-out sets pre-training never saw

PSNR (dB) / SSIM on RGB in [0, 1], whole image; validation splits of `bench/common.py` (seed 0).
The last three rows need little or nothing: a backbone should leave them almost as they are.{previous_note}

{markdown_table(columns, rows)}

Measured {datetime.date.today()} on {machine()}, git {git_rev()}, by `python -m bench.model_card{" --previous " + str(args.previous) if args.previous else ""}`.
The per-parameter ranges of every degradation are in the file's `recipe` metadata
(`colora backbone show {name}`).

## Adapted: against what a user would pick instead

With a `colora train` adapter on its defaults (500 steps, about 3-4 minutes on one core; on a store
made by `colora init` it warm-starts from the starter adapters below), on held-out images, 16
training pairs (`python -m bench.quality --kinds noise15,noise25,rain --pairs 16 --no-4x`,
2026-12-07): rain (Rain100L) 31.91 dB (31.87 from the retrained starter-rain, 2026-12-08), level
with a network of the same size trained from scratch for 4x the minutes (31.89; 28.66 for the same
minutes); Gaussian noise σ25 (CBSD68) 30.28 dB, above
CBM3D (30.12); σ15 33.08, level with CBM3D (33.06). Started cold (a store without starters): 31.02,
29.61 and 32.36. The tables and their commands: BENCHMARKS.md, "Quality: colora against what a user
would pick instead" and "Starter adapters".

## Starter adapters trained on this backbone

`core/weights/starters/`: `noise` (colour Gaussian noise, σ 5-55; 3000 + 4000 steps), `jpeg` (JPEG
quality 10-40) and `lowlight` (PROD's low light; 3000 steps each), `rain` (PROD's rain streaks) and
`blur` (Gaussian blur, σ 0.8-3; 1000 steps each on three degraded copies of each photo), each `colora
train` on PROD-synthetic pairs of the same 380 pre-training photos (`python -m
bench.starters`), 7 % of the backbone's parameters, with the degradation signature `restore --task
auto` compares images with; `manifest.json` pins every file's sha256. `colora init` installs them as
tasks `starter-KIND` (`--no-starters`: not; `colora adapter starters` adds them later). Alone, on
held-out images: σ25 30.29 dB (CBM3D 30.12), JPEG q10-30 28.56 (input 27.62), Rain100L 28.91 (the
backbone alone 28.64), CBSD68 blurred by Pillow (σ 1-2) 28.77 (input 25.92, the backbone alone
26.28); on real low light (LOL) starter-lowlight is under the backbone alone (18.35 vs
18.74) but, as a warm start, lifts the default adapter (BENCHMARKS.md, "Starter adapters").
"""
    (BUNDLED_DIR / "MODEL_CARD.md").write_text(text)
    print(text)


def _commands(name: str, chunks: list[dict]) -> str:
    """The chunks, each continuing from the one before; their exact commands (data folders, degradation
    weights, EMA) are in bench/chunks/README.md, which lists every chunk ever run."""
    rows = [
        [
            f"{name}-c{i}" if len(chunks) > 1 else name,
            c["steps"],
            c["lr"],
            f"{c['batch_size']} x {c['patch_size']}²" if "batch_size" in c else "-",
            c.get("device", "cpu" if "batch_size" in c else "-"),
            c["seed"],
            f"{(c.get('wall_time_s') or 0) / 60:.0f}",
        ]
        for i, c in enumerate(chunks, 1)
    ]
    table = markdown_table(["chunk", "steps", "lr", "batch", "device", "seed", "min"], rows)
    return f"""
Each chunk is one `colora backbone pretrain ... --init-from <the chunk before>` run; the exact
commands (data folders, degradation weights, EMA) are in `bench/chunks/README.md`.

{table}
"""


if __name__ == "__main__":
    main()
