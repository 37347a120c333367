"""`restore --task auto`'s choice metric, scored on bench/auto_choice.py's per-image record.

auto_choice.py restores every image of its mixed folder with every zoo adapter and records each
output's PSNR; which adapter a metric picks is all that changes between metrics, so they are
compared here without running an adapter again. Per image, the embedding (`image_features`, the
frozen backbone included) is computed afresh, and each metric picks from the zoo's signatures:

    per feature      the metric before signatures carried a covariance: each feature in units of
                     its pooled within-task spread, floored at 10 % of the between-task spread
    covariance N     `core.recycle.signature.nearest`: a Mahalanobis distance with each task's
                     covariance shrunk towards the zoo's pooled one, signatures from N training
                     inputs a task (`--signature-pairs`; colora's own is SIGNATURE_PAIRS)
    own S            the same with S of each task's own covariance (`--own-shares`; colora's is
                     OWN_SHARE): 0 is one covariance for every task (linear discriminants)
    1-nn N           the task of the nearest single training input, in the space whitened by the
                     pooled within-task covariance (no Gaussian per task at all)

Scored as auto_choice.py scores `auto`: dB under the per-image oracle (the best zoo adapter for that
image), mean per set; "single" is the mean over the ten single-degradation sets, and over the even
and odd images of each (a metric that gains on one half only is fitted to those images).

    python -m bench.auto_classify          # after python -m bench.auto_choice; ~10 min on one core
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from bench.common import OUT, git_rev, machine, markdown_table


def per_feature_nearest(embedding: torch.Tensor, sigs: dict[str, dict]) -> tuple[str, float]:
    """The choice before covariances (EMBEDDING_VERSION 1), kept here as the baseline arm."""
    names = sorted(sigs)
    means = torch.tensor([sigs[n]["mean"] for n in names])
    stds = torch.tensor([sigs[n]["std"] for n in names])
    within = stds.pow(2).mean(0).sqrt()
    between = means.std(0, unbiased=False) if len(names) > 1 else torch.ones_like(within)
    scale = torch.maximum(within, 0.1 * between).clamp_min(1e-3)
    d = ((embedding[None] - means) / scale).pow(2).mean(1).sqrt()
    return names[int(d.argmin())], float(d.min())


def nearest_input(train: dict[str, torch.Tensor]):
    """A metric: the task of the nearest training input, distances whitened by the pooled within-task
    covariance (factored once, not per image)."""
    names = sorted(train)
    centred = torch.cat([train[t].double() - train[t].double().mean(0) for t in names])
    dof = max(len(centred) - len(names), 1)
    cov = centred.T @ centred / dof + 1e-6 * torch.eye(centred.shape[1], dtype=torch.float64)
    factor = torch.linalg.cholesky(cov)
    inputs = torch.cat([train[t].double() for t in names])
    labels = [t for t in names for _ in range(len(train[t]))]

    def pick(embedding: torch.Tensor) -> tuple[str, float]:
        white = torch.linalg.solve_triangular(factor, (inputs - embedding.double()).T, upper=False)
        d = white.pow(2).mean(0).sqrt()
        return labels[int(d.argmin())], float(d.min())

    return pick


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--signature-pairs", default="16,32", help="training inputs a signature is made of (arms)")
    ap.add_argument("--own-shares", default="", help="own-covariance shares to score beside colora's (comma-separated)")
    args = ap.parse_args()
    from bench.auto_choice import open_zoo, two_degradations
    from colora.api.restoring import FAR
    from colora.core.data.crops import load_pair, to_tensor
    from colora.core.data.images import load_image
    from colora.core.recycle.signature import image_features, nearest, signature

    t0 = time.perf_counter()
    record = json.loads((OUT / "auto_choice" / "results.json").read_text())
    psnr = {(i["set"], i["image"]): i["psnr"] for i in record["images"]}
    store, backbone, zoo, _, _ = open_zoo()
    names = sorted(z.name for z in zoo)
    counts = [int(n) for n in args.signature_pairs.split(",")]
    with torch.no_grad():
        train = {
            t: torch.stack(
                [
                    image_features(to_tensor(load_image(p.input_path)[0]), backbone)
                    for p in store.pairs(store.task(t), "train")[: max(counts)]
                ]
            )
            for t in names
        }
        images = {
            t: [(p.stem, load_pair(p.input_path, p.target_path)[0]) for p in store.pairs(store.task(t), "val")]
            for t in names
        }
        clean = [Path(p.target_path) for t in ("noise", "jpeg") for p in store.pairs(store.task(t), "val")]
        images.update({k: [(s, x) for s, x, _ in v] for k, v in two_degradations(clean).items()})
        embedded = {
            label: [(stem, image_features(x, backbone)) for stem, x in items] for label, items in images.items()
        }

    metrics = {}
    for n in counts:
        sigs = {t: signature(e[:n]) for t, e in train.items()}
        metrics[f"per feature {n}"] = lambda e, sigs=sigs: per_feature_nearest(e, sigs)
        metrics[f"covariance {n}"] = lambda e, sigs=sigs: nearest(e, sigs)[0]
        for share in [float(x) for x in args.own_shares.split(",") if x]:
            metrics[f"own {share:g} {n}"] = lambda e, sigs=sigs, share=share: nearest(e, sigs, own_share=share)[0]
        metrics[f"1-nn {n}"] = nearest_input({t: x[:n] for t, x in train.items()})
    gaps = {m: {} for m in metrics}  # metric -> set -> [dB under the oracle per image]
    right = {m: {} for m in metrics}
    far = {m: 0 for m in metrics}  # images whose nearest signature is beyond restore's FAR
    for label, items in embedded.items():
        for m, pick in metrics.items():
            chosen = [(*pick(e), psnr[(label, stem)]) for stem, e in items]
            gaps[m][label] = [max(scores.values()) - scores[c] for c, _, scores in chosen]
            right[m][label] = sum(c == label for c, _, _ in chosen)
            far[m] += sum(d > FAR for _, d, _ in chosen)

    singles = [s for s in embedded if s in names]
    rows = []
    for label in embedded:
        cells = [
            f"{statistics.mean(gaps[m][label]):.2f}" + (f" ({right[m][label]})" if label in names else "")
            for m in metrics
        ]
        rows.append([label, len(embedded[label]), *cells])

    def mean_over_singles(m, part=slice(None)):
        return statistics.mean(statistics.mean(gaps[m][s][part]) for s in singles)

    rows.append(["**single: mean of sets**", "", *(f"**{mean_over_singles(m):.2f}**" for m in metrics)])
    rows.append(
        [
            "single, even / odd images",
            "",
            *(
                f"{mean_over_singles(m, slice(0, None, 2)):.2f} / {mean_over_singles(m, slice(1, None, 2)):.2f}"
                for m in metrics
            ),
        ]
    )
    rows.append([f"flagged (far): distance > {FAR:g}", sum(map(len, embedded.values())), *(far[m] for m in metrics)])
    print(
        f"\nbench/auto_classify.py — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}, "
        f"{time.perf_counter() - t0:.0f} s; the record of {record['header'].split(' — ')[1].split(',')[0]}; "
        "dB under the per-image oracle (right picks)\n"
    )
    print(markdown_table(["set", "images", *metrics], rows))


if __name__ == "__main__":
    main()
