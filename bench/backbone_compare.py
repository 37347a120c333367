"""Zero-shot: backbones side by side on the held-out halves, plus mild and clean inputs.

    python -m bench.backbone_compare core/weights/prod-medium.safetensors bench/chunks/prod-medium-c3.safetensors

Each backbone restores the validation split's held-out half of every bench set (the images no
adapter of bench/quality.py trains or selects on), and three inputs that need little or nothing:
σ5 Gaussian noise, JPEG at quality 80 and the clean images themselves (CBSD68), where a good
backbone leaves the image almost as it is. PSNR / SSIM on RGB in [0, 1], whole image. No set
here was seen in pre-training (bsds500_pool and sun80 exclude them: ../shared/data/SOURCES.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench.common import SETS, PairedSet, cbsd68_jpeg, cbsd68_noise, git_rev, held_out_pairs, machine, markdown_table


def clean_set() -> PairedSet:
    """The clean CBSD68 held-out images as their own input: what a backbone does to an image that needs nothing."""
    noisy = cbsd68_noise(5.0)
    return PairedSet("cbsd68-clean", [], [(t, t) for _, t in noisy.val], "clean images (identity is ideal)")


def zero_shot_sets() -> list[PairedSet]:
    return [make() for make in SETS.values()] + [cbsd68_noise(5.0), cbsd68_jpeg(80, 80), clean_set()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backbones", nargs="+", type=Path, help="colora backbone .safetensors files")
    args = parser.parse_args()
    from colora.core.inference.evaluate import evaluate
    from colora.core.model.weights import load_backbone

    models = {}
    for path in args.backbones:
        models[path.stem] = load_backbone(path)[0]
    names = list(models)
    rows = []
    t0 = time.perf_counter()
    for data in zero_shot_sets():
        pairs = [(Path(a).stem, a, b) for a, b in held_out_pairs(data)]
        r = evaluate({"input": None, **models}, pairs)
        rows.append([data.name, len(pairs)] + [f"{r[n][0]:.2f} / {r[n][1]:.4f}" for n in ["input", *names]])
        print(rows[-1], file=sys.stderr)
    print(
        f"\nZero-shot PSNR / SSIM on held-out pairs; {machine()}, commit {git_rev()}, "
        f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - t0:.0f} s\n"
    )
    print(markdown_table(["set", "pairs", "input", *names], rows))


if __name__ == "__main__":
    main()
