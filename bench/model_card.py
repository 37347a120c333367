"""Write core/weights/MODEL_CARD.md for the bundled backbone: recipe, loss curve, zero-shot metrics.

python -m bench.model_card
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

from bench.common import SETS, git_rev, machine, markdown_table
from colora.core.files import sha256_file
from colora.core.inference.evaluate import evaluate
from colora.core.model.bundled import BUNDLED_DIR, bundled_backbone
from colora.core.model.weights import load_backbone


def _chunk_text(chunk: dict, train: dict) -> str:
    """One chunk as the card lists it (its batch and device where the recipe recorded them;
    bench/chunks/README.md has every chunk's command)."""
    text = f"{chunk['steps']} at lr {chunk['lr']}"
    if "batch_size" in chunk:
        text += f", batch {chunk['batch_size']} x {chunk['patch_size']}², {chunk.get('device', 'cpu')}"
    return text


def main() -> None:
    found = bundled_backbone()
    if found is None:
        sys.exit("no bundled backbone in core/weights/")
    path, name = found
    model, meta = load_backbone(path)
    recipe = json.loads(meta["recipe"])
    curve = json.loads(meta["loss_curve"])
    rows = []
    for set_name, make in SETS.items():
        data = make()
        val = [(Path(a).stem, a, b) for a, b in data.val]
        r = evaluate({"input": None, "backbone": model}, val)
        rows.append(
            [
                data.name,
                len(val),
                f"{r['input'][0]:.2f} / {r['input'][1]:.4f}",
                f"{r['backbone'][0]:.2f} / {r['backbone'][1]:.4f}",
                data.note,
            ]
        )
        print(rows[-1], file=sys.stderr)
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
{_commands(name, recipe, chunks)}

| | |
|---|---|
| architecture | NAFNet-style, config `{json.dumps(json.loads(meta["config"]))}` |
| parameters | {recipe["params"]:,} |
| fingerprint (sha256 of tensors) | `{meta["sha256"]}` |
| file sha256 | `{sha256_file(path)}` |
| data | `{recipe["data"]["folder"]}` (the last chunk): {recipe["data"]["images"]} clean photographs (bsds500_pool: BSDS500; sun80: Sun-Hays 80), none of which is behind Rain100L, Rain12, CBSD68, LOL (see ../shared/data/SOURCES.md) |
| degradations | PROD, {recipe["sampler"]["mode"]} order, 1..{recipe["sampler"]["max_degradations"]} of: {", ".join(recipe["sampler"]["names"])}; at most one per family in {recipe["sampler"]["one_per_family"]} |
| training | {sum(c["steps"] for c in chunks)} steps in {len(chunks)} chunk(s) ({", ".join(_chunk_text(c, train) for c in chunks)}), L1 loss, AdamW, each chunk warm-up then cosine to {train["min_lr_ratio"]}x |
| wall time | {total_s / 60:.0f} min in all ({", ".join(f"{(c.get('wall_time_s') or 0) / 60:.0f}" for c in chunks)} min per chunk: on one core of a 2-core CPU, the other busy, unless the chunk says `cuda`) |
| intended use | a frozen starting point for per-task LoRA adapters; not a finished restorer on its own |

## Loss curve (L1 on PROD-degraded training crops, mean over each logging window; {"the last chunk" if len(chunks) > 1 else "the run"})

{markdown_table(["step", "L1"], curve_rows)}

## Zero-shot quality on held-out sets pre-training never saw

PSNR (dB) / SSIM on RGB in [0, 1], whole image; validation splits of `bench/common.py` (seed 0).

{markdown_table(["set", "pairs", "input", "backbone zero-shot", "degradation"], rows)}

Measured {datetime.date.today()} on {machine()}, git {git_rev()}, by `python -m bench.model_card`.
The per-parameter ranges of every degradation are in the file's `recipe` metadata
(`colora backbone show {name}`).

## Adapted: against what a user would pick instead

With a `colora train` adapter on its defaults (about 3 minutes on a 2-core CPU), on held-out images:
above a network of the same size trained from scratch for the same minutes on every task kind
(rain, Gaussian noise σ15/25/50, real low light, JPEG), and above CBM3D at σ50 but 0.6-0.8 dB
below it at σ15 and σ25 (0.14-0.18 dB with 4x the time). The table, its command and what would
close the gap: BENCHMARKS.md, "Quality: colora against what a user would pick instead".
"""
    (BUNDLED_DIR / "MODEL_CARD.md").write_text(text)
    print(text)


def _commands(name: str, recipe: dict, chunks: list[dict]) -> str:
    """The pre-training commands, one per chunk (each chunk continues from the one before)."""
    train = recipe["train"]
    common = f"--batch-size {train['batch_size']} --patch-size {train['patch_size']}"
    lines = []
    for i, c in enumerate(chunks, 1):
        chunk = f"{name}-c{i}" if len(chunks) > 1 else name
        start = f"--config {recipe.get('config_name', 'small')}" if i == 1 else f"--init-from {name}-c{i - 1}"
        lines.append(
            f"    colora backbone pretrain ../shared/data/bsds500_pool/clean --name {chunk} {start} \\\n"
            f"        --steps {c['steps']} {common} --lr {c['lr']} --seed {c['seed']}"
        )
    return "\n" + "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
