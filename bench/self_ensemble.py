"""What `--self-ensemble` buys: each adapter left by bench/quality.py, scored on its held-out pairs
with one pass and with the x8 self-ensemble (core/inference/ensemble.py), and the restore time.

Reads the stores of bench/quality.py (bench/out/quality/<kind>-<pairs>): run that first. Each store
holds the last adapter quality.py trained there (the 4x-time arm where it ran, else the default).

    python -m bench.self_ensemble                      # every store quality.py left
    python -m bench.self_ensemble --stores noise25-16,noise50-16
"""

from __future__ import annotations

import argparse
import json
import time

from bench.common import OUT, git_rev, held_out_pairs, machine, markdown_table
from bench.quality import KINDS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stores", help="comma-separated <kind>-<pairs> names under bench/out/quality (default: all)")
    args = ap.parse_args()
    from colora.api.models import task_model
    from colora.core.inference.evaluate import evaluate
    from colora.store.store import Store

    root = OUT / "quality"
    if args.stores:
        names = args.stores.split(",")
    else:
        names = sorted(p.parent.name for p in root.glob("*/colora.db"))
    if not names:
        raise SystemExit("no stores of bench/quality.py under bench/out/quality: run `python -m bench.quality` first")
    rows = []
    for name in names:
        kind, n = name.rsplit("-", 1)
        held_out = held_out_pairs(KINDS[kind]())
        store = Store.open(root / name)
        task = store.task("t")
        adapter = store.adapter(task)
        run = store.last_run(task)
        steps = json.loads(run.config)["train"]["steps"] if run and run.config else "?"
        model = task_model(store, adapter)[0]
        pairs = [(str(i), a, b) for i, (a, b) in enumerate(held_out)]
        timings, scores = {}, {}
        for label, ensembled in (("one pass", ()), ("x8", ("adapter",))):
            t0 = time.perf_counter()
            scores[label] = evaluate({"adapter": model}, pairs, self_ensemble=ensembled)["adapter"][0]
            timings[label] = (time.perf_counter() - t0) / len(pairs)
        rows.append(
            [
                kind,
                n,
                steps,
                len(pairs),
                f"{scores['one pass']:.2f}",
                f"{scores['x8']:.2f}",
                f"{scores['x8'] - scores['one pass']:+.2f}",
                f"{timings['one pass']:.2f}",
                f"{timings['x8']:.2f}",
            ]
        )
        print(" | ".join(map(str, rows[-1])), flush=True)
    print(
        f"\nbench/self_ensemble.py — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}; PSNR dB on the "
        "held-out pairs of bench/quality.py; s/image includes scoring\n"
    )
    print(
        markdown_table(
            [
                "kind",
                "train pairs",
                "adapter steps",
                "scored",
                "one pass",
                "self-ensemble x8",
                "gain",
                "s/image",
                "s/image x8",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
