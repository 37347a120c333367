"""Is colora's restoration what a user would pick? Side by side on held-out images, per task kind.

Arms, all scored on the same held-out pairs (never used to pre-train, train or pick a state):

* input          the unrestored image
* CBM3D          `bm3d.bm3d_rgb` with the true sigma (Gaussian noise only; the `bm3d` package is a
                 bench extra under a non-commercial licence, never a colora dependency)
* scratch        a NAFNet of the backbone's size, randomly initialised, every weight trained on the
                 same pairs for the same wall-clock as colora's default (best state on the same
                 selection pairs), lr 1e-3
* colora         `colora train` with its defaults (CoLoRA plan included in its time): a warm start
                 from the starter adapters `colora init` installs (core/weights/starters)
* colora cold    `colora train --cold-start`: the default of a store without starters (`init
                 --no-starters`, or a --backbone the starters were not trained on)
* colora 4x      `colora train --minutes <4x the default's time>`
* scratch 4x     (--scratch-4x) the scratch net given 4x the default's time, which the default
                 should beat too (the backbone issue asks it on rain)

for 16 and 64 training pairs, or all a set has where it has fewer (CBSD68 48, LOL eval15 10).
Task kinds: rain (Rain100L), Gaussian noise sigma 15/25/50 (CBSD68), real low light (LOL eval15),
JPEG quality 10-30 (CBSD68). One table per kind. Targets:
colora beats scratch everywhere and CBM3D on noise, 4x keeps improving, no default adapter is
worse than its input; the table says where they are met.

    python -m bench.quality                                   # everything (hours on a 2-core CPU)
    python -m bench.quality --kinds noise25,rain --pairs 16
    python -m bench.quality --kinds lowlight --4x-pairs 16     # the 4x arm only where it is asked
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import SETS, git_rev, machine, markdown_table, task_store

KINDS = {
    "rain": lambda: SETS["rain100l"](),
    "noise15": lambda: SETS["cbsd68"](15.0),
    "noise25": lambda: SETS["cbsd68"](25.0),
    "noise50": lambda: SETS["cbsd68"](50.0),
    "lowlight": lambda: SETS["lol"](),
    "jpeg": lambda: SETS["jpeg"](),
}
SIGMA = {"noise15": 15.0, "noise25": 25.0, "noise50": 50.0}


def cbm3d(held_out, sigma: float) -> float:
    import bm3d

    from colora.core.data.crops import load_pair
    from colora.core.inference.metrics import psnr

    scores = []
    for a, b in held_out:
        x, y = load_pair(a, b)
        out = bm3d.bm3d_rgb(x.permute(1, 2, 0).numpy().astype(np.float64), sigma / 255)
        scores.append(psnr(torch.from_numpy(np.clip(out, 0, 1)).permute(2, 0, 1).float(), y))
    return sum(scores) / len(scores)


def scratch(store, seconds: float, selection, held_out) -> float:
    """A random-init NAFNet of the backbone's size, every weight trained for `seconds`."""
    from colora.core.data.crops import PairSet, load_pair
    from colora.core.inference.evaluate import evaluate
    from colora.core.model.backbone import BackboneConfig, build_backbone
    from colora.core.training.adapter import psnr_validator
    from colora.core.training.loop import TrainConfig, fit

    task = store.task("t")
    config = BackboneConfig.from_json(store.backbone().config)
    data = PairSet.from_files([(p.input_path, p.target_path) for p in store.pairs(task, "train")])

    def batches(step, gen):
        return data.sample_batch(4, 96, gen)

    probe = build_backbone(config, 1)
    stamps = []
    fit(
        probe,
        dict(probe.named_parameters()),
        batches,
        TrainConfig(steps=8, lr=1e-3, warmup_steps=1),
        on_step=lambda *a: stamps.append(time.perf_counter()),
    )
    step_s = sorted(b - a for a, b in zip(stamps[2:], stamps[3:]))[2]
    steps = max(20, int(seconds / step_s))
    model = build_backbone(config, 0)
    validate = psnr_validator([load_pair(p.input_path, p.target_path) for p in selection], "cpu")
    fit(
        model,
        dict(model.named_parameters()),
        batches,
        TrainConfig(steps=steps, lr=1e-3, warmup_steps=min(200, steps // 10), validate_every=max(10, steps // 10)),
        validate=validate,
    )
    res = evaluate({"scratch": model}, [(str(i), a, b) for i, (a, b) in enumerate(held_out)])
    return res["scratch"][0]


def colora(store, options, held_out) -> tuple[float, float, float]:
    """(adapter PSNR, backbone PSNR, seconds) of `colora train` with `options`, plan included."""
    from colora.api.models import backbone_model, task_model
    from colora.api.training import train_task
    from colora.core.inference.evaluate import evaluate

    t0 = time.perf_counter()
    done = train_task(store, "t", options)
    seconds = time.perf_counter() - t0
    if done.skipped_steps:  # the divergence guard (core/training/guard.py) at work
        print(f"  {done.skipped_steps} outlier step(s) skipped of {done.steps_done}")
    for r in done.recoveries:
        print(f"  diverged at step {r.step} of {done.steps_done}: back to step {r.back_to}, lr x{r.lr_scale:g}")
    task = store.task("t")
    adapter = store.adapter(task)
    backbone = backbone_model(store, adapter.backbone)
    res = evaluate(
        {"backbone": backbone, "adapter": task_model(store, adapter, backbone)[0]},
        [(str(i), a, b) for i, (a, b) in enumerate(held_out)],
    )
    return res["adapter"][0], res["backbone"][0], seconds


def input_psnr(held_out) -> float:
    from colora.core.inference.evaluate import evaluate

    return evaluate({"input": None}, [(str(i), a, b) for i, (a, b) in enumerate(held_out)])["input"][0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--pairs", default="16,64")
    ap.add_argument("--no-4x", action="store_true", help="skip the 4x-time arm")
    ap.add_argument(
        "--4x-pairs",
        dest="four_x_pairs",
        default="",
        help="only these training-pair counts get the 4x-time arm (default: every row)",
    )
    ap.add_argument("--scratch-4x", action="store_true", help="also train the scratch net for 4x the default's time")
    ap.add_argument("--backbone", type=Path, help="a backbone file instead of the bundled one")
    args = ap.parse_args()
    if any(kind in SIGMA for kind in args.kinds.split(",")):
        import bm3d  # noqa: F401  (before the hour of training, not after: a bench extra, `pip install -e ".[bench]"`)
    from colora.api.training import TrainOptions

    rows = []
    for kind in args.kinds.split(","):
        data = KINDS[kind]()
        bm = None
        # A set with fewer training pairs than asked trains on all it has (CBSD68: 48, LOL: 10), once.
        for n in sorted({min(int(p), len(data.train)) for p in args.pairs.split(",")}):
            store, held_out = task_store(f"quality/{kind}-{n}", data, n, args.backbone)
            selection = store.pairs(store.task("t"), "val")
            base = input_psnr(held_out)
            default, backbone_psnr, seconds = colora(store, TrainOptions(), held_out)
            zoo = store.zoo(store.backbone(), exclude="t")
            cold = colora(store, TrainOptions(warm_start=False), held_out)[0] if zoo else None
            skip_four = args.no_4x or (args.four_x_pairs and str(n) not in args.four_x_pairs.split(","))
            four = None if skip_four else colora(store, TrainOptions(minutes=4 * seconds / 60), held_out)[0]
            if bm is None and kind in SIGMA:  # the held-out pairs are the same for every n
                bm = cbm3d(held_out, SIGMA[kind])
            sc = scratch(store, seconds, selection, held_out)
            sc4 = scratch(store, 4 * seconds, selection, held_out) if args.scratch_4x else None
            met = [
                default > sc,
                bm is None or default > bm,
                four is None or four > default,
                default > base,
                sc4 is None or default > sc4,
            ]
            rows.append(
                [
                    kind,
                    n,
                    len(held_out),
                    f"{base:.2f}",
                    f"{bm:.2f}" if bm else "-",
                    f"{sc:.2f}",
                    f"{backbone_psnr:.2f}",
                    f"{default:.2f}",
                    f"{cold:.2f}" if cold else "-",
                    f"{seconds / 60:.1f}",
                    f"{four:.2f}" if four else "-",
                    f"{sc4:.2f}" if sc4 else "-",
                    "yes"
                    if all(met)
                    else "**no**: "
                    + ", ".join(t for t, ok in zip(("scratch", "CBM3D", "4x", "input", "scratch 4x"), met) if not ok),
                ]
            )
            print(" | ".join(map(str, rows[-1])), flush=True)
    print(
        f"\nbench/quality.py — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}; PSNR dB on held-out "
        "pairs (RGB, whole image); colora = `colora train` defaults, time includes its rank plan\n"
    )
    columns = [
        "kind",
        "train pairs",
        "scored",
        "input",
        "CBM3D",
        "scratch (same time)",
        "backbone alone",
        "colora default",
        "colora cold",
        "min",
        "colora 4x time",
        "scratch 4x time",
        "targets met",
    ]
    for kind in dict.fromkeys(row[0] for row in rows):
        print(f"\n### {kind}\n")
        print(markdown_table(columns, [row for row in rows if row[0] == kind]))


if __name__ == "__main__":
    main()
