"""Warm start against cold start: does starting a task's adapter from the zoo's mixture save steps?

For each held-out task of the zoo (bench/zoo.py), its own adapter is left out; two adapters are
trained on its training pairs with the same rank plan (the task's own CoLoRA plan), seed and
schedule as `colora train` (batch 4 x 96², its default lr unless --lr, L1):

    cold   LoRA's usual start (random A, zero B): `colora train NAME`
    warm   the factors start from the zoo's mixture fitted on the task's pairs (the same fit as
           `colora adapt --per-adapter`, keep-input included), truncated to the plan's ranks:
           `colora train NAME --warm-start`

Each is scored during training on the centres of the task's validation pairs (what `colora train`
keeps its best state by) at step 0 and every tenth of the run; the table gives that curve, the
first step where the warm run reaches the cold run's final score, and both final adapters on the
whole validation images. The warm column's step 0 is the mixture truncated to the plan's ranks.

    python -m bench.warm_start                           # after bench/zoo.py; ~30 min on one core
    python -m bench.warm_start --tasks noise --steps 40   # smoke
    python -m bench.warm_start --tasks rain --starts warm --lr 2e-3   # one start at another lr
"""

from __future__ import annotations

import argparse
import copy
import json
import time

from bench.common import OUT, git_rev, machine, markdown_table
from bench.zoo import build_zoo


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default="rain,noise,lowlight,blur,jpeg")
    ap.add_argument("--steps", type=int, default=500, help="each run's steps (`colora train`'s default)")
    ap.add_argument("--points", type=int, default=10, help="validations along each run")
    ap.add_argument("--lr", type=float, help="peak learning rate of both starts (default: `colora train`'s)")
    ap.add_argument("--starts", default="cold,warm", help="which starts to run: cold, warm or both")
    args = ap.parse_args()
    starts = [s for s in ("cold", "warm") if s in args.starts.split(",")]
    if not starts:
        ap.error("--starts: cold, warm or cold,warm")

    from colora.api.recycling import AdaptOptions
    from colora.api.training import TrainOptions
    from colora.core.data.crops import load_pair
    from colora.core.inference.evaluate import evaluate
    from colora.core.model.lora import merge_all
    from colora.core.model.weights import load_backbone, read_adapter
    from colora.core.recycle.mixture import fit_mixture, mixture_deltas, with_keep_input, zoo_adapter
    from colora.core.recycle.warm_start import warm_start_lora
    from colora.core.training.adapter import _lora_model, psnr_validator, train_adapter
    from colora.core.training.loop import TrainConfig
    from colora.store.store import Store

    store = Store.open(build_zoo())
    backbone_row = store.backbone()
    backbone, _ = load_backbone(store.path(backbone_row.path), backbone_row.sha256)
    backbone.eval()
    rows = {r.task.name: r for r in store.zoo(backbone_row)}
    adapters = {name: read_adapter(store.path(r.path)) for name, r in rows.items()}
    zoo_all = {name: zoo_adapter(name, *adapters[name], backbone) for name in rows}
    defaults, adapt = TrainOptions(), AdaptOptions()
    lr = defaults.lr if args.lr is None else args.lr
    every = max(1, args.steps // args.points)
    table, summary = [], []
    for task in args.tasks.split(","):
        t_row = store.task(task)
        train = [(p.input_path, p.target_path) for p in store.pairs(t_row, "train")]
        val_files = [(p.input_path, p.target_path) for p in store.pairs(t_row, "val")]
        val = [(p.stem, p.input_path, p.target_path) for p in store.pairs(t_row, "val")]
        plan = adapters[task][1].rank_plan
        zoo = with_keep_input(backbone, [z for n, z in zoo_all.items() if n != task])
        t0 = time.perf_counter()
        examples = [load_pair(i, t) for i, t in train[: adapt.pairs]]
        mixture = fit_mixture(backbone, zoo, examples, seconds=adapt.seconds, seed=adapt.seed)
        fit_s = time.perf_counter() - t0
        used = {n: round(float(c), 2) for n, c in zip(mixture.names, mixture.coef[:, 0]) if float(c)}
        validator = psnr_validator([load_pair(i, t) for i, t in val_files], "cpu")
        runs = {}
        for arm in starts:
            warm = (mixture_deltas(zoo, mixture), {"mixture": used}) if arm == "warm" else None
            start, _ = _lora_model(backbone, plan, "weight", defaults.seed)
            if warm:
                warm_start_lora(start, warm[0])
            start.eval()
            step0 = validator(start)
            config = TrainConfig(
                steps=args.steps,
                batch_size=defaults.batch_size,
                patch_size=defaults.patch_size,
                lr=lr,
                loss=defaults.loss,
                seed=defaults.seed,
                validate_every=every,
            )
            t0 = time.perf_counter()
            model, _, result = train_adapter(
                backbone, backbone_row.sha256, task, train, config, plan, val_pairs=val_files, warm_start=warm
            )
            seconds = time.perf_counter() - t0
            model.eval()
            merge_all(model)
            final = evaluate({"m": copy.deepcopy(model)}, val)["m"][0]
            # a warm run scores its start itself (step 0 is one of its candidates)
            curve = [(step, score) for step, score in result.val_curve if step > 0]
            runs[arm] = {"curve": [(0, step0), *curve], "final": final, "seconds": seconds}
            print(f"[{task}] {arm}: {runs[arm]['curve']} -> {final:.2f} dB ({seconds:.0f} s)", flush=True)
        # what a cold run keeps: its best trained state (unlike a warm run, it never keeps step 0)
        reached = None
        if len(runs) == 2:
            target = max(score for step, score in runs["cold"]["curve"] if step > 0)
            reached = next((step for step, score in runs["warm"]["curve"] if score >= target), None)
        for arm, run in runs.items():
            table.append(
                [
                    task,
                    arm,
                    *(f"{score:.2f}" for _, score in run["curve"]),
                    f"{run['final']:.2f}",
                    "-" if arm == "cold" or len(runs) < 2 else ("not reached" if reached is None else str(reached)),
                    f"{fit_s:.1f}" if arm == "warm" else "-",
                ]
            )
        summary.append({"task": task, "mixture": used, "fit_s": fit_s, "reached": reached, **runs})
    steps = [step for step, _ in summary[0][starts[0]]["curve"]] if summary else []
    header = (
        f"bench/warm_start.py — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}, "
        f"{args.steps} steps, lr {lr:g}"
    )
    print("\n" + header + "\n")
    columns = ["task", "start", *(f"step {s}" for s in steps), "final (whole images)", "warm reaches cold's best at"]
    print(markdown_table([*columns, "fit s"], table))
    print("\nmixtures the warm starts began from: " + "; ".join(f"{s['task']}: {s['mixture']}" for s in summary))
    out = OUT / "warm_start"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"header": header, "rows": summary}, indent=1))


if __name__ == "__main__":
    main()
