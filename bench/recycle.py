"""LoRA Recycle, leave one adapter out: how much of a task's adapter does the rest of the zoo give back?

For each task of the zoo (bench/zoo.py: five degradations on disjoint images), its own adapter is
removed; from K = 1, 4, 16 of its training pairs (several random draws) the remaining zoo adapts
with no gradient training of LoRA or backbone weights, and every arm is scored on the task's
held-out pairs:

    backbone      the frozen PROD backbone alone
    best single   the best single zoo adapter, chosen on the held-out pairs (an oracle)
    uniform       the average of the zoo's adapters
    mixture       `colora adapt --per-adapter`: non-negative coefficients fitted on the K pairs (closed form on 8
                  crops of 96² + an exact line search over their scale), over the zoo and the
                  built-in keep-input direction (take back a share of the backbone's correction)
    zoo only      the same fit without the keep-input direction (`adapt --no-keep-input`)
    per-stage     `colora adapt --per-stage`: the mixture's coefficients (on `refined_support(K)`:
                  8 crops of 96², or beyond 8 pairs one of 72² from each of at most 16), then one
                  coefficient per adapter and network stage refined by 20 gradient steps on 8 of
                  the crops within `colora adapt`'s 10 s budget (--per-stage-seconds; 0: none;
                  --per-stage-crops: other crop counts as arms; --per-stage-support and
                  --per-stage-crop: other supports as arms)
    meta linear   the meta-adapter before distillation: the linearised least-squares mixture on its
                  8 crops of 48² (what distillation adds is the difference to the two arms below)
    meta photos   `colora adapt --meta`: one pass of a meta-adapter distilled without this task
                  on surrogate episodes cut from clean photos (bsds500_pool, which no task scores on:
                  `recycle distill --clean FOLDER`)
    meta data-free  the same, distilled with no image at all (`recycle distill`'s default):
                  dead-leaves targets and inputs inverted from the zoo's adapters
    lora K-shot   a fresh rank-4 LoRA trained on the K pairs for the mixture's wall-clock time
    own adapter   the task's own adapter (trained on all its training pairs; the upper bound)
    oracle mixture  (--oracle-mixture) the mixture fitted on the held-out pairs themselves: the ceiling
                  of one coefficient per adapter, whatever the examples
    oracle per-stage  (--oracle-per-stage) the same with one coefficient per adapter and stage (100
                  refinement steps on 8 of the 32 crops, no time budget)

gap closed = (arm - backbone) / (own adapter - backbone), in PSNR.

    python -m bench.recycle                       # ~30 min on a 2-core CPU after bench/zoo.py
    python -m bench.recycle --ks 4 --draws 1 --meta-steps 20 --tasks blur,noise   # smoke
    python -m bench.recycle --ks 4 --arms "meta photos,meta data-free"           # the meta-adapters only
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time

import torch

from bench.common import DATA, OUT, git_rev, machine, markdown_table
from bench.zoo import TASKS, build_zoo
from colora.api.recycling import AdaptOptions
from colora.core.defaults import REFINE_STEPS

ARMS = ("mixture", "zoo only", "per-stage", "meta linear", "meta photos", "meta data-free", "lora K-shot")
META_ARMS = ("meta linear", "meta photos", "meta data-free")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ks", default="1,4,16")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--zoo-steps", type=int, default=500)
    ap.add_argument("--meta-steps", type=int, default=400)
    ap.add_argument("--no-meta", action="store_true", help="skip the meta-adapters (their distillation is slow)")
    ap.add_argument("--arms", default=",".join(ARMS), help="the arms to run (the fixed rows always run)")
    ap.add_argument(
        "--fit-sizes",
        default="",
        help="extra mixture arms fitted on other support crops, CROPxCOUNT,... (e.g. 64x16,96x8): "
        "the mixture arm is `colora adapt`'s 96x8",
    )
    ap.add_argument(
        "--meta-supports",
        default="48x8",
        help="the support crops the meta-adapters read, CROPxCOUNT,...: each meta arm runs once per size "
        "(the distilled ones distilled with it); the first size's arms keep their plain names",
    )
    ap.add_argument(
        "--oracle-mixture",
        action="store_true",
        help="a fixed row: the mixture fitted on the held-out pairs themselves (32 crops of 128²): the "
        "ceiling of fitting one coefficient per adapter",
    )
    ap.add_argument("--per-stage-crops", default="8", help="refinement crops of the per-stage arms, N,...")
    ap.add_argument(
        "--per-stage-crop",
        default="",
        help="extra per-stage arms whose support crops are C² (the count unchanged), C,...",
    )
    ap.add_argument(
        "--per-stage-support",
        default="",
        help="extra per-stage arms whose closed form sees at most N support crops (one per pair, "
        "pairs drawn at random when K > N), of C² with NxC, N[xC],...",
    )
    ap.add_argument(
        "--per-stage-seconds",
        type=float,
        default=AdaptOptions.seconds,
        help="time budget of each per-stage fit (0: none)",
    )
    ap.add_argument(
        "--oracle-per-stage",
        action="store_true",
        help="a fixed row: the per-stage mixture fitted on the held-out pairs themselves",
    )
    args = ap.parse_args()
    arms = [a for a in args.arms.split(",") if a in ARMS and not (args.no_meta and a in META_ARMS)]
    if "lora K-shot" in arms and "mixture" not in arms:
        ap.error("lora K-shot takes the mixture's seconds: run it with the mixture arm")
    try:
        fit_sizes = {s: tuple(int(v) for v in s.split("x")) for s in args.fit_sizes.split(",") if s}
    except ValueError:
        ap.error("--fit-sizes: CROPxCOUNT,... (e.g. 64x16)")
    try:
        stage_crops = [int(n) for n in args.per_stage_crops.split(",") if n]
        assert stage_crops and min(stage_crops) >= 1
    except (ValueError, AssertionError):
        ap.error("--per-stage-crops: N,... (e.g. 8,4)")
    try:
        stage_caps = [[int(v) for v in n.split("x")] for n in args.per_stage_support.split(",") if n]
        assert all(len(c) in (1, 2) and min(c) >= 1 for c in stage_caps)
    except (ValueError, AssertionError):
        ap.error("--per-stage-support: N[xC],... (e.g. 8 or 16x72)")
    try:
        stage_sizes = [int(n) for n in args.per_stage_crop.split(",") if n]
        assert all(n >= 16 for n in stage_sizes)
    except (ValueError, AssertionError):
        ap.error("--per-stage-crop: C,... (e.g. 64)")
    # label -> (refinement crops, the closed form's support: fit_mixture's keywords, or None for
    # `colora adapt`'s own, which depends on K)
    stage_arms = {("per-stage" if i == 0 else f"per-stage {n} crops"): (n, None) for i, n in enumerate(stage_crops)}
    stage_arms.update(
        {
            f"per-stage support {'x'.join(map(str, c))}": (stage_crops[0], {"max_crops": c[0], "crop": (c + [96])[1]})
            for c in stage_caps
        }
    )
    stage_arms.update({f"per-stage {c}²": (stage_crops[0], {"crop": c}) for c in stage_sizes})
    try:
        supports = [tuple(int(v) for v in s.split("x")) for s in args.meta_supports.split(",") if s]
        assert supports and all(len(s) == 2 for s in supports)
    except (ValueError, AssertionError):
        ap.error("--meta-supports: CROPxCOUNT,... (e.g. 48x8,64x8)")

    from colora.core.data.crops import PairSet, load_pair
    from colora.core.inference.evaluate import evaluate
    from colora.core.model.fast import FastNAFNet
    from colora.core.model.lora import inject_lora, lora_layers, merge_all, uniform_rank_plan
    from colora.core.model.weights import (
        load_backbone,
        read_adapter,
        read_tensors,
        save_tensors_atomic,
    )
    from colora.core.recycle.meta import META_FORMAT_VERSION, MetaNet, distill, load_meta, meta_metadata, predict
    from colora.core.recycle.mixture import (
        Mixture,
        apply_mixture,
        fit_mixture,
        refined_support,
        uniform_mixture,
        with_keep_input,
        zoo_adapter,
    )
    from colora.core.recycle.surrogate import dead_leaves
    from colora.store.store import Store

    home = build_zoo(args.zoo_steps)
    store = Store.open(home)
    backbone_row = store.backbone()
    backbone, _ = load_backbone(store.path(backbone_row.path), backbone_row.sha256)
    backbone.eval()
    rows = {r.task.name: r for r in store.zoo(backbone_row)}
    zoo_all = {name: zoo_adapter(name, *read_adapter(store.path(r.path)), backbone) for name, r in rows.items()}
    clean_pool = [load_pair(str(p), str(p))[1] for p in sorted((DATA / "bsds500_pool" / "clean").iterdir())[:64]]
    ks = [int(k) for k in args.ks.split(",")]
    out_dir = OUT / "recycle"
    out_dir.mkdir(parents=True, exist_ok=True)

    def score(model, val) -> float:
        return evaluate({"m": FastNAFNet(model)}, val)["m"][0]

    def mixed(zoo, mixture):
        return apply_mixture(copy.deepcopy(backbone), zoo, mixture)

    table, summary = [], []
    whole_bank = None
    for task in args.tasks.split(","):
        t_row = store.task(task)
        train = [(p.input_path, p.target_path) for p in store.pairs(t_row, "train")]
        val = [(p.stem, p.input_path, p.target_path) for p in store.pairs(t_row, "val")]
        zoo = [z for n, z in zoo_all.items() if n != task]
        names = [z.name for z in zoo]
        own = copy.deepcopy(backbone)
        own_meta = read_adapter(store.path(rows[task].path))
        inject_lora(own, own_meta[1].rank_plan, own_meta[1].alpha)
        from colora.core.model.lora import load_adapter_state

        load_adapter_state(own, own_meta[0])
        merge_all(own)
        fixed = {
            "input": evaluate({"input": None}, val)["input"][0],
            "backbone": score(backbone, val),
            "own adapter": score(own, val),
        }
        singles = {}
        for i, name in enumerate(names):
            one = torch.zeros(len(zoo), 1)
            one[i] = 1
            singles[name] = score(mixed(zoo, Mixture(names, ["all"], one)), val)
        best = max(singles, key=singles.get)
        fixed["best single"] = singles[best]
        fixed["uniform"] = score(mixed(zoo, uniform_mixture(zoo)), val)
        if args.oracle_mixture:
            held_out = [load_pair(i, t) for _, i, t in val]
            keep = with_keep_input(backbone, zoo)
            fixed["oracle mixture"] = score(
                mixed(keep, fit_mixture(backbone, keep, held_out, crop=128, n_crops=32)), val
            )
        if args.oracle_per_stage:
            held_out = [load_pair(i, t) for _, i, t in val]
            keep = with_keep_input(backbone, zoo)
            staged = fit_mixture(
                backbone, keep, held_out, crop=128, n_crops=32, per_stage=True, steps=100, refine_crops=8
            )
            fixed["oracle per-stage"] = score(mixed(keep, staged), val)
        gap = fixed["own adapter"] - fixed["backbone"]

        metas = {}
        for (crop, count), arm in ((s, a) for s in supports for a in arms if a in META_ARMS):
            label = arm if (crop, count) == supports[0] else f"{arm} {crop}x{count}"
            if arm == "meta linear":
                metas[label] = MetaNet(support=(crop, count))
                continue
            tag = arm.split()[1]
            stem = f"meta{META_FORMAT_VERSION}-{tag}-without-{task}-{args.meta_steps}-{crop}x{count}"
            meta_file = out_dir / f"{stem}-{backbone_row.sha256[:12]}.safetensors"
            if meta_file.exists():
                metas[label], _ = load_meta(*read_tensors(meta_file))
                continue
            t0 = time.perf_counter()
            if arm == "meta photos":
                images, bank = clean_pool, None
            else:  # what `recycle distill` does without --clean
                images = list(dead_leaves(64, 96, torch.Generator().manual_seed(0)))
                if whole_bank is None:  # each adapter is inverted alone: invert the whole zoo once
                    whole_bank = _inverted_zoo(backbone, zoo_all, out_dir / f"bank-{backbone_row.sha256[:12]}.pt")
                bank = [b for b in whole_bank if b.name != task]
            metas[label], curve = distill(
                backbone, zoo, images, steps=args.meta_steps, seed=0, bank=bank, support=(crop, count)
            )
            print(f"[{task}] {label} distilled in {time.perf_counter() - t0:.0f} s", flush=True)
            save_tensors_atomic(
                meta_file,
                {k: v.contiguous() for k, v in metas[label].state_dict().items()},
                meta_metadata(
                    backbone_row.sha256,
                    [{"task": n, "file_sha256": ""} for n in names],
                    args.meta_steps,
                    curve,
                    support=(crop, count),
                ),
            )

        for name, value in fixed.items():
            label = f"best single ({best})" if name == "best single" else name
            table.append([task, "-", label, f"{value:.2f}", "", f"{100 * (value - fixed['backbone']) / gap:.0f}%", "-"])
        for k in ks:
            k_eff = min(k, len(train))
            results: dict[str, list] = {a: [] for a in arms if a not in META_ARMS}
            results.update({label: [] for label in metas})
            results.update({f"mixture {size}": [] for size in fit_sizes})
            if "per-stage" in arms:
                results.update({label: [] for label in stage_arms})
            keep_zoo = with_keep_input(backbone, zoo)
            for draw in range(args.draws):
                picked = random.Random(f"{task}-{k}-{draw}").sample(train, k_eff)
                pairs = [load_pair(i, t) for i, t in picked]
                if "mixture" in arms:
                    t0 = time.perf_counter()
                    mixture = fit_mixture(backbone, keep_zoo, pairs, seed=draw)  # `colora adapt --per-adapter`
                    fit_s = time.perf_counter() - t0
                    results["mixture"].append((score(mixed(keep_zoo, mixture), val), fit_s))
                for size, (crop, count) in fit_sizes.items():
                    t0 = time.perf_counter()
                    other = fit_mixture(backbone, keep_zoo, pairs, crop=crop, n_crops=count, seed=draw)
                    other_s = time.perf_counter() - t0  # the fit alone, not the held-out scoring
                    results[f"mixture {size}"].append((score(mixed(keep_zoo, other), val), other_s))
                for label, (n, support) in stage_arms.items() if "per-stage" in arms else ():
                    t0 = time.perf_counter()
                    staged = fit_mixture(
                        backbone,
                        keep_zoo,
                        pairs,
                        per_stage=True,
                        steps=REFINE_STEPS,
                        refine_crops=n,
                        **(refined_support(len(pairs)) if support is None else support),
                        seconds=args.per_stage_seconds or None,
                        seed=draw,
                    )
                    staged_s = time.perf_counter() - t0
                    results[label].append((score(mixed(keep_zoo, staged), val), staged_s))
                if "zoo only" in arms:
                    t0 = time.perf_counter()
                    alone = fit_mixture(backbone, zoo, pairs, seed=draw)
                    alone_s = time.perf_counter() - t0
                    results["zoo only"].append((score(mixed(zoo, alone), val), alone_s))
                for arm, net in metas.items():
                    t0 = time.perf_counter()
                    m, mixed_zoo = predict(net, backbone, zoo, pairs, seed=draw)
                    meta_s = time.perf_counter() - t0
                    results[arm].append((score(mixed(mixed_zoo, m), val), meta_s))
                if "lora K-shot" not in arms:
                    continue
                results["lora K-shot"].append(
                    _lora_shot(
                        backbone,
                        picked,
                        fit_s,
                        draw,
                        PairSet,
                        inject_lora,
                        lora_layers,
                        merge_all,
                        uniform_rank_plan,
                        score,
                        val,
                    )
                )
            for arm, rs in results.items():
                ps = [r[0] for r in rs]
                mean = statistics.mean(ps)
                sd = statistics.stdev(ps) if len(ps) > 1 else 0.0
                secs = statistics.median(r[1] for r in rs)
                closed = 100 * (mean - fixed["backbone"]) / gap
                table.append([task, k_eff, arm, f"{mean:.2f}", f"±{sd:.2f}", f"{closed:.0f}%", f"{secs:.1f}"])
                summary.append(
                    {
                        "task": task,
                        "k": k,
                        "k_eff": k_eff,
                        "arm": arm,
                        "psnr": mean,
                        "sd": sd,
                        "gap_closed": closed,
                        "seconds": secs,
                        **{f"fixed_{n}": v for n, v in fixed.items()},
                    }
                )
            print(
                markdown_table(
                    ["task", "K", "arm", "PSNR", "sd", "gap closed", "s / adaptation"], table[-len(results) :]
                ),
                flush=True,
            )
    header = f"bench/recycle.py — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}, draws {args.draws}"
    print("\n" + header + "\n")
    print(markdown_table(["task", "K", "arm", "PSNR", "sd", "gap closed", "s / adaptation"], table))
    print()
    agg = []
    for k in ks:
        labels = [*ARMS, *(f"{a} {c}x{n}" for c, n in supports[1:] for a in META_ARMS)]
        extra = [*(f"mixture {size}" for size in fit_sizes), *list(stage_arms)[1:]]
        for arm in [*labels, *extra]:
            rs = [s for s in summary if s["k"] == k and s["arm"] == arm]
            if rs:
                beats = sum(s["psnr"] > s["fixed_best single"] for s in rs)
                below_input = sum(s["psnr"] < s["fixed_input"] for s in rs)
                agg.append(
                    [
                        k,
                        arm,
                        f"{statistics.mean(s['gap_closed'] for s in rs):.0f}%",
                        f"{beats}/{len(rs)}",
                        f"{below_input}/{len(rs)}",
                        f"{statistics.median(s['seconds'] for s in rs):.1f}",
                    ]
                )
    print(markdown_table(["K", "arm", "mean gap closed", "beats best single", "below input", "median s"], agg))
    (out_dir / "results.json").write_text(json.dumps({"header": header, "rows": summary}, indent=1))


def _inverted_zoo(backbone, zoo_all, cache):
    """`surrogate_bank` of the whole zoo, cached in `cache` (this bench's own output)."""
    from colora.core.recycle.surrogate import Inverted, surrogate_bank

    if cache.exists():
        return [Inverted(**row) for row in torch.load(cache, weights_only=True)]
    t0 = time.perf_counter()
    bank = surrogate_bank(backbone, list(zoo_all.values()), seed=0)
    gains = ", ".join(f"{b.name} {b.gain_db:+.1f}" for b in bank)
    print(f"inverted in {time.perf_counter() - t0:.0f} s; adapter over backbone, dB: {gains}")
    torch.save([vars(b) for b in bank], cache)
    return bank


def _lora_shot(
    backbone, picked, seconds, seed, PairSet, inject_lora, lora_layers, merge_all, uniform_rank_plan, score, val
):
    """A fresh uniform rank-4 LoRA on the K pairs, trained for `seconds` of wall-clock."""
    model = copy.deepcopy(backbone)
    torch.manual_seed(seed)
    inject_lora(model, uniform_rank_plan(model, 4))
    params = [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=0)
    data = PairSet.from_files(picked)
    gen = torch.Generator().manual_seed(seed)
    patch = min(96, data.smallest_side())
    t0 = time.perf_counter()
    steps = 0
    model.train()
    while time.perf_counter() - t0 < seconds:
        x, y = data.sample_batch(4, patch, gen)
        loss = (model(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    model.eval()
    merge_all(model)
    return score(model, val), time.perf_counter() - t0


if __name__ == "__main__":
    main()
