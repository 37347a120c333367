"""Rules for `restore --task auto`'s second look, scored offline on bench/auto_choice.py's per-image record.

bench/auto_choice.py stores, per image, the signature ranking (task, distance), every adapter's PSNR
and every adapter's crop change (what one more backbone pass changes on its output of the central
crop, `core.recycle.settle`). Each rule here picks an adapter from those alone (no target), so rules
are compared without running a network again:

    nearest        the nearest signature (`--auto-candidates 1`)
    top N          of the N nearest signatures, the least changed (`--auto-candidates N`)
    top N, xF      the same among those within F times the nearest's distance

Scored on single degradations (mean over the sets of PSNR under the per-image oracle) and on the
two-degradation sets. Rules are fitted on the same images they are scored on, hence the split:
"even" / "odd" images of each set scored separately show whether a rule's gain holds on both halves.

    python -m bench.auto_rules                    # after python -m bench.auto_choice
"""

from __future__ import annotations

import json
import statistics

from bench.common import OUT, markdown_table

TWO = ("noise+jpeg", "dark+noise")


def pick(record: dict, top: int, within: float | None) -> str:
    ranking = record["ranking"]
    d0 = ranking[0][1]
    candidates = [n for n, d in ranking[:top] if within is None or d <= within * max(d0, 1e-9)]
    return min(candidates, key=lambda n: record["crop_change"][n])


def main() -> None:
    data = json.loads((OUT / "auto_choice" / "results.json").read_text())
    images = data["images"]
    rules = {"nearest": (1, None)}
    for top in (2, 3, 4):
        rules[f"top {top}"] = (top, None)
        for within in (1.1, 1.25, 1.5, 2.0, 3.0):
            rules[f"top {top}, x{within:g}"] = (top, within)
    sets = sorted({r["set"] for r in images}, key=lambda s: (s in TWO, s))
    rows = []
    for label, (top, within) in rules.items():
        gaps = {}
        for half in ("all", "even", "odd"):
            per_set = []
            for name in sets:
                if name in TWO:
                    continue
                recs = [
                    r
                    for i, r in enumerate(x for x in images if x["set"] == name)
                    if half == "all" or i % 2 == (half == "odd")
                ]
                per_set.append(statistics.mean(max(r["psnr"].values()) - r["psnr"][pick(r, top, within)] for r in recs))
            gaps[half] = statistics.mean(per_set)
        two = [
            statistics.mean(max(r["psnr"].values()) - r["psnr"][pick(r, top, within)] for r in images if r["set"] == s)
            for s in TWO
        ]
        worst = max(
            statistics.mean(
                r["psnr"][pick(r, 1, None)] - r["psnr"][pick(r, top, within)] for r in images if r["set"] == s
            )
            for s in sets
        )
        rows.append(
            [
                label,
                f"{gaps['all']:.2f}",
                f"{gaps['even']:.2f}",
                f"{gaps['odd']:.2f}",
                *(f"{g:.2f}" for g in two),
                f"{worst:.2f}",
            ]
        )
    print(data["header"])
    print()
    print(
        markdown_table(
            [
                "rule",
                "oracle - rule, single",
                "even half",
                "odd half",
                *(f"oracle - rule, {s}" for s in TWO),
                "worst set loss vs nearest",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
