"""Gaussian noise on all 68 CBSD68 images, the usual protocol, beside the published figures.

The adapter is trained by `colora train` (its defaults: on a store made by `colora init`, a warm
start from the starter adapters) on other photographs: `bsds500_pool`, which
holds no CBSD68 image (../shared/data/SOURCES.md), with seeded Gaussian noise of the same sigma;
its selection pairs are 8 more pool images. It is then scored on every one of the 68 CBSD68 images
(the noisy inputs of bench/common.py: seed 0, rounded and clipped to 8 bits). The published
figures are those of FFDNet's paper (Zhang, Zuo and Zhang, IEEE TIP 2018, table of colour
denoising on CBSD68), where the noise is added to the float image and not clipped: read them as the
literature's scale, not as a same-protocol comparison; `--cbm3d` runs CBM3D here on the same inputs.

    python -m bench.cbsd68                         # σ 15, 25, 50; 64 training pairs; ~15 min on one core
    python -m bench.cbsd68 --sigmas 25 --cbm3d     # CBM3D run here too (~15 s an image on one core)
"""

from __future__ import annotations

import argparse
import random
import shutil
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import DATA, OUT, cbsd68_noise, git_rev, machine, markdown_table, noisy_8bit

PUBLISHED = {  # sigma -> method -> PSNR (dB) on CBSD68, FFDNet (TIP 2018)
    15.0: {"CBM3D": 33.52, "CDnCNN-B": 33.89, "FFDNet": 33.87},
    25.0: {"CBM3D": 30.71, "CDnCNN-B": 31.23, "FFDNet": 31.21},
    50.0: {"CBM3D": 27.38, "CDnCNN-B": 27.92, "FFDNet": 27.96},
}
SELECTION = 8


def pool_pairs(sigma: float, n: int, seed: int = 0) -> Path:
    """A task folder (train/, val/, each input/ + target/) of noisy bsds500_pool photos."""
    folder = OUT / "cbsd68" / f"pool-sigma{sigma:g}-{n}"
    shutil.rmtree(folder, ignore_errors=True)
    photos = sorted((DATA / "bsds500_pool" / "clean").iterdir())
    random.Random(seed).shuffle(photos)
    rng = np.random.default_rng(seed)
    for split, chosen in (("train", photos[:n]), ("val", photos[n : n + SELECTION])):
        for role in ("input", "target"):
            (folder / split / role).mkdir(parents=True, exist_ok=True)
        for src in chosen:
            clean = np.asarray(Image.open(src).convert("RGB"), dtype=np.float64)
            noisy = noisy_8bit(clean, rng.normal(0, sigma, clean.shape))
            Image.fromarray(noisy).save(folder / split / "input" / f"{src.stem}.png")
            Image.fromarray(clean.astype(np.uint8)).save(folder / split / "target" / f"{src.stem}.png")
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sigmas", default="15,25,50")
    ap.add_argument("--pairs", type=int, default=64, help="noisy pool photos the adapter trains on")
    ap.add_argument("--cbm3d", action="store_true", help="also run CBM3D on the 68 images (slow)")
    ap.add_argument("--backbone", type=Path, help="a backbone file instead of the bundled one")
    args = ap.parse_args()

    from bench.quality import cbm3d
    from colora.api.backbones import import_backbone, init_store
    from colora.api.models import backbone_model, task_model
    from colora.api.tasks import add_task
    from colora.api.training import TrainOptions, train_task
    from colora.core.inference.evaluate import evaluate

    rows = []
    for sigma in (float(s) for s in args.sigmas.split(",")):
        pairs = pool_pairs(sigma, args.pairs)
        home = OUT / "cbsd68" / f"home-sigma{sigma:g}"
        shutil.rmtree(home, ignore_errors=True)
        store = init_store(home).store
        if args.backbone is not None:
            import_backbone(store, args.backbone, "under-test", make_default=True)
        add_task(store, "t", pairs / "train", val=pairs / "val")
        t0 = time.perf_counter()
        train_task(store, "t", TrainOptions())
        minutes = (time.perf_counter() - t0) / 60
        adapter = store.adapter(store.task("t"))
        backbone = backbone_model(store, adapter.backbone)
        every = cbsd68_noise(sigma)  # bench/common.py's noisy CBSD68, both of its splits: all 68 images
        test = sorted(every.train + every.val)
        scores = evaluate(
            {"input": None, "backbone": backbone, "adapter": task_model(store, adapter, backbone)[0]},
            [(Path(a).stem, a, b) for a, b in test],
        )
        ours = scores["adapter"][0]
        here = cbm3d(test, sigma) if args.cbm3d else None
        published = PUBLISHED.get(sigma, {})
        rows.append(
            [
                f"σ{sigma:g}",
                len(test),
                f"{scores['input'][0]:.2f}",
                f"{scores['backbone'][0]:.2f}",
                f"**{ours:.2f}**",
                f"{minutes:.1f}",
                f"{here:.2f}" if here is not None else "-",
                *(f"{published[m]:.2f}" if m in published else "-" for m in ("CBM3D", "CDnCNN-B", "FFDNet")),
            ]
        )
        print(" | ".join(map(str, rows[-1])), flush=True)
    print(
        f"\nbench/cbsd68.py — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}; PSNR dB, RGB, whole "
        f"image, all 68 CBSD68 images; colora = `colora train` defaults on {args.pairs} noisy bsds500_pool photos\n"
    )
    columns = [
        "σ",
        "images",
        "input",
        "backbone alone",
        "colora",
        "train min",
        "CBM3D (here)",
        "CBM3D (published)",
        "CDnCNN-B (published)",
        "FFDNet (published)",
    ]
    print(markdown_table(columns, rows))


if __name__ == "__main__":
    main()
