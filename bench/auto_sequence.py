"""Two adapters in sequence for `restore --task auto`: does a second pass compose two degradations?

A weight-space blend of two adapters averages their strengths (bench/auto_choice.py: it loses on
images with two degradations). A sequence composes them: adapter A restores the image, then adapter
B restores A's output. This bench records, per image of bench/auto_choice.py's mixed folder (the
zoo's validation inputs plus the two-degradation sets), every such sequence the second look could
run, and the numbers a rule may read without the target:

    first     A in the nearest 3 signatures of the image (the candidates `--auto-candidates 3`
              settles between); its PSNR and its crop change (`core.recycle.settle`)
    second    B in the nearest 3 signatures of A's output (its central crop), B != A; the PSNR of
              B(A(image)), the crop change of B(A(crop)) and B's signature distance from A's output

Rules (no target) are scored on both halves of each set, as in bench/auto_rules.py:

    nearest            A = the nearest signature, no second pass (the default)
    settle             A = the least changed of the nearest 3 within 1.5x the nearest's distance
    ... then B if change < r    B = the least changed second, kept when its crop change is under
                                r times A's (the backbone would change the sequence less)
    ... then B if distance < t  B = the nearest signature of A's output, kept when nearer than t
                                (within-task spreads): A's output still looks degraded

and "oracle sequence" (the best A then B, or A alone, knowing the target) bounds what any rule on
these candidates could reach. Targets (issue: recycle): +0.5 dB over the one-hot choice on the
two-degradation images, no loss on single degradations.

    python -m bench.auto_sequence            # after bench/zoo.py; ~30 min on one core
    python -m bench.auto_sequence --limit 1  # smoke
    python -m bench.auto_sequence --rules-only   # re-score bench/out/auto_sequence/results.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

from bench.auto_choice import open_zoo, two_degradations
from bench.common import OUT, git_rev, machine, markdown_table

TWO = ("noise+jpeg", "dark+noise")
TOP = 3
WITHIN = 1.5  # bench/auto_rules.py's best first-pick rule (chosen in session 17 on the same images)
RATIOS = (1.0, 0.8, 0.6, 0.4)  # second pass by the backbone's change
DISTANCES = (1.0, 1.5, 2.0, 3.0)  # second pass by the signature distance of A's output (within-task spreads)


def record(limit: int, sets: list[str]) -> dict:
    import torch

    from colora.core.data.crops import center_crop, load_pair
    from colora.core.inference.metrics import psnr
    from colora.core.model.fast import FastNAFNet
    from colora.core.recycle.settle import backbone_change
    from colora.core.recycle.signature import CROP, image_features, nearest

    t_start = time.perf_counter()
    store, backbone, zoo, sigs, nets = open_zoo()
    names = [z.name for z in zoo]
    backbone_net = FastNAFNet(backbone)

    @torch.no_grad()
    def run(name: str, x: torch.Tensor) -> torch.Tensor:
        return nets[name](x[None])[0].clamp(0, 1)

    images: dict[str, list] = {
        t: [(p.stem, *load_pair(p.input_path, p.target_path)) for p in store.pairs(store.task(t), "val")] for t in names
    }
    clean = [Path(p.target_path) for t in ("noise", "jpeg") for p in store.pairs(store.task(t), "val")]
    images.update(two_degradations(clean))
    if sets:
        images = {k: v for k, v in images.items() if k in sets}
    if limit:
        images = {k: v[:limit] for k, v in images.items()}

    per_image = []
    for label, items in images.items():
        for stem, x, y in items:
            crop = center_crop(x, CROP)
            ranking = nearest(image_features(x, backbone), sigs)
            by_first = {}
            for a, _ in ranking[:TOP]:
                out, out_crop = run(a, x), run(a, crop)
                seconds = {}
                for b, distance in [r for r in nearest(image_features(out_crop, backbone), sigs) if r[0] != a][:TOP]:
                    seconds[b] = {
                        "distance": distance,
                        "psnr": float(psnr(run(b, out), y)),
                        "crop_change": backbone_change(backbone_net, run(b, out_crop)),
                    }
                by_first[a] = {
                    "psnr": float(psnr(out, y)),
                    "crop_change": backbone_change(backbone_net, out_crop),
                    "second": seconds,
                }
            per_image.append(
                {"set": label, "image": stem, "ranking": ranking, "input": float(psnr(x, y)), "first": by_first}
            )
        print(f"{label}: {len(items)} images, {time.perf_counter() - t_start:.0f} s", flush=True)
    header = (
        f"bench/auto_sequence.py — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}, "
        f"{time.perf_counter() - t_start:.0f} s"
    )
    return {"header": header, "images": per_image}


def first_pick(rec: dict, rule: str) -> str:
    ranking = rec["ranking"]
    if rule == "nearest":
        return ranking[0][0]
    if rule != "settle":
        raise ValueError(f"unknown first-pick rule {rule!r}")
    d0 = ranking[0][1]
    candidates = [n for n, d in ranking[:TOP] if d <= WITHIN * max(d0, 1e-9)]
    return min(candidates, key=lambda n: rec["first"][n]["crop_change"])


def sequence_psnr(rec: dict, rule: str, second: tuple[str, float] | None) -> float:
    """PSNR of the rule's pick: A, then B when `second` = ("change", r) or ("distance", t) says so."""
    a = rec["first"][first_pick(rec, rule)]
    if second is None or not a["second"]:
        return a["psnr"]
    seconds = a["second"]
    criterion, bound = second
    if criterion == "change":  # the least changed second, kept when the backbone wants less change
        b = min(seconds, key=lambda n: seconds[n]["crop_change"])
        kept = seconds[b]["crop_change"] < bound * a["crop_change"]
    else:  # the nearest signature of A's output, kept when A's output still looks degraded
        b = min(seconds, key=lambda n: seconds[n]["distance"])
        kept = seconds[b]["distance"] < bound
    return seconds[b]["psnr"] if kept else a["psnr"]


def oracle_sequence(rec: dict) -> float:
    return max(max([f["psnr"], *(s["psnr"] for s in f["second"].values())]) for f in rec["first"].values())


def score(data: dict) -> str:
    images = data["images"]
    sets = sorted({r["set"] for r in images}, key=lambda s: (s in TWO, s))

    def half(name: str, which: str) -> list[dict]:
        recs = [r for r in images if r["set"] == name]
        return [r for i, r in enumerate(recs) if which == "all" or i % 2 == (which == "odd")]

    def gain(fn, name: str, which: str = "all") -> float:
        recs = half(name, which)
        return statistics.mean(fn(r) - sequence_psnr(r, "nearest", None) for r in recs) if recs else math.nan

    rules = {"nearest": ("nearest", None), "settle": ("settle", None)}
    for pick in ("nearest", "settle"):
        for ratio in RATIOS:
            rules[f"{pick}, then B if change < {ratio:g}x"] = (pick, ("change", ratio))
        for bound in DISTANCES:
            rules[f"{pick}, then B if distance < {bound:g}"] = (pick, ("distance", bound))
    singles = [s for s in sets if s not in TWO]
    two = [s for s in sets if s in TWO]
    rows = []
    for label, (pick, second) in [*rules.items(), ("oracle sequence", (None, None))]:
        fn = oracle_sequence if label == "oracle sequence" else (lambda r, f=pick, q=second: sequence_psnr(r, f, q))
        per = {s: gain(fn, s) for s in sets}
        halves = [statistics.mean(gain(fn, s, w) for s in singles) if singles else math.nan for w in ("even", "odd")]
        worst = min(singles, key=lambda s: per[s]) if singles else "-"
        rows.append(
            [
                label,
                f"{statistics.mean(per[s] for s in singles):+.2f}" if singles else "-",
                f"{halves[0]:+.2f} / {halves[1]:+.2f}",
                *(f"{per[s]:+.2f}" for s in two),
                f"{per[worst]:+.2f} ({worst})" if singles else "-",
            ]
        )
    columns = ["rule", "single (mean of sets)", "even / odd half", *two, "worst single set"]
    caption = "dB over the nearest signature alone (one adapter), mean per set"
    return f"{data['header']}\n\n{caption}\n\n{markdown_table(columns, rows)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=0, help="at most this many images per set (smoke runs)")
    ap.add_argument("--sets", default="", help="only these sets (comma-separated), e.g. noise+jpeg,dark+noise")
    ap.add_argument("--rules-only", action="store_true", help="score the stored record again, run nothing")
    args = ap.parse_args()
    out = OUT / "auto_sequence" / "results.json"
    if args.rules_only:
        data = json.loads(out.read_text())
    else:
        data = record(args.limit, [s for s in args.sets.split(",") if s])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1))
    print("\n" + score(data))


if __name__ == "__main__":
    main()
