"""Time of one meta-adapter prediction (`colora adapt --meta`): the bundled backbone, a zoo of 9
adapters plus the keep-input direction, K example pairs, medians of interleaved repeats.

    taskset -c 0 env OMP_NUM_THREADS=1 python -m bench.meta_speed
    python -m bench.meta_speed --threads 2 --repeats 7
    python -m bench.meta_speed --supports 48x8,64x8 --no-keep-by-network   # support sizes only

The time does not depend on what the adapters learnt (each is merged into its own inference graph
before it runs), so the zoo is 9 random rank-4 adapters on every LoRA target: no zoo to train first.
Arms: "keep-input by network" runs the keep-input direction through its own graph (as before
session 16); "keep-input exact" computes it without a pass (input + the last conv's bias), on the
meta-adapter's support crops (`--supports`: each size is an arm; the first is the default).
Prints a table; the ratio is to the first arm.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import git_rev, machine, markdown_table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11)
    parser.add_argument("--k", type=int, default=4, help="example pairs")
    parser.add_argument("--size", type=int, default=256, help="side of each example image")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--supports", default="48x8", help="support crops the net reads, CROPxCOUNT,...")
    parser.add_argument("--no-keep-by-network", action="store_true", help="skip the session-16 baseline arm")
    args = parser.parse_args()
    supports = [tuple(int(v) for v in s.split("x")) for s in args.supports.split(",")]
    torch.set_num_threads(args.threads)

    from colora.core.model.bundled import bundled_backbone
    from colora.core.model.fast import FastNAFNet
    from colora.core.model.lora import lora_delta, lora_targets
    from colora.core.model.weights import load_backbone
    from colora.core.recycle import meta, mixture

    model = load_backbone(bundled_backbone()[0])[0].eval()
    gen = torch.Generator().manual_seed(0)
    zoo = []
    for n in range(9):
        deltas, factors = {}, {}
        for path, conv in lora_targets(model).items():
            a = 0.01 * torch.randn(4, *conv.weight.shape[1:], generator=gen)
            b = 0.01 * torch.randn(conv.weight.shape[0], 4, 1, 1, generator=gen)
            deltas[path], factors[path] = lora_delta(a, b, 1.0), (a, b, 1.0)
        zoo.append(mixture.ZooAdapter(f"task-{n}", deltas, factors))
    pairs = [
        (torch.rand(3, args.size, args.size, generator=gen), torch.rand(3, args.size, args.size, generator=gen))
        for _ in range(args.k)
    ]
    net = meta.MetaNet(support=supports[0]).eval()

    def keep_by_network() -> None:
        # the previous code path: every direction, keep-input included, through its own graph
        original = mixture.Responses.__init__

        def init(self, model, zoo):
            original(self, model, zoo)
            self.adapters = [FastNAFNet(model, z.deltas) if a is None else a for a, z in zip(self.adapters, zoo)]

        mixture.Responses.__init__ = init
        try:
            meta.predict(net, model, zoo, pairs)
        finally:
            mixture.Responses.__init__ = original

    arms = {} if args.no_keep_by_network else {"keep-input by network": keep_by_network}
    for crop, count in supports:
        sized = meta.MetaNet(support=(crop, count)).eval()
        label = "keep-input exact" + ("" if (crop, count) == supports[0] else f", {count} crops of {crop}²")
        arms[label] = lambda sized=sized: meta.predict(sized, model, zoo, pairs)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for fn in arms.values():  # warm-up: first-call allocations
        fn()
    for _ in range(args.repeats):
        for name, fn in arms.items():  # interleaved, so drift hits both arms alike
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    base = statistics.median(next(iter(times.values())))
    rows = [
        [name, f"{statistics.median(t):.3f}", f"{min(t):.3f}", f"{statistics.median(t) / base:.2f}", "< 1 s"]
        for name, t in times.items()
    ]
    print(markdown_table(["arm", "median s", "min s", "ratio", "target"], rows))
    print(
        f"\nbench/meta_speed.py: {machine()}, {args.threads} thread(s), git {git_rev()}; K = {args.k} pairs "
        f"of {args.size}², 9 adapters + keep-input, {args.repeats} interleaved repeats after a warm-up"
    )


if __name__ == "__main__":
    main()
