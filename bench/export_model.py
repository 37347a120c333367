"""`colora export-model` against spandrel with the bundled backbone: what the padding changes.

    python -m bench.export_model [--steps 60]

Trains a short rain adapter on Rain100L pairs (the quality of the adapter is beside the point),
exports the task model as a BasicSR .pth, loads it with spandrel (chaiNNer's loader) and restores
held-out Rain100L images (480x320, and cut to 475x317 so that both sides need padding to a
multiple of 16) with spandrel
and with `colora restore --tile 0 --engine torch`. Prints the 8-bit differences everywhere and
away from a border band, and the PSNR of one output against the other.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import OUT, git_rev, held_out_pairs, machine, markdown_table, rain100l, task_store


def _compare(store, net, source: Path) -> list:
    from colora.api.restoring import restore_images

    out_dir = OUT / "export-model-files" / "colora"
    restore_images(store, "t", [source], out_dir, overwrite=True, tile=0, engine="torch")
    ours = np.asarray(Image.open(out_dir / source.name).convert("RGB")).astype(np.int16)
    x = torch.from_numpy(np.asarray(Image.open(source).convert("RGB"), dtype=np.float32) / 255)
    with torch.no_grad():
        y = net(x.permute(2, 0, 1)[None])[0].clamp(0, 1).permute(1, 2, 0).numpy()
    diff = np.abs(ours - np.round(y * 255).astype(np.int16))
    mse = float((diff.astype(np.float64) ** 2).mean())
    return [
        int(diff.max()),
        int(diff[:-16, :-16].max()),
        int(diff[:-32, :-32].max()),
        f"{(diff > 1).mean() * 100:.2f} %",
        "inf" if mse == 0 else f"{10 * math.log10(255**2 / mse):.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--images", type=int, default=5)
    args = parser.parse_args()
    import spandrel

    from colora.api.exporting import export_model_task
    from colora.api.training import TrainOptions, train_task

    data = rain100l()
    store, _ = task_store("export-model", data, 16)
    train_task(store, "t", TrainOptions(steps=args.steps, rank=4))
    file = OUT / "export-model-files" / "rain.pth"
    file.parent.mkdir(parents=True, exist_ok=True)
    export_model_task(store, "t", file, overwrite=True)
    net = spandrel.ModelLoader().load_from_file(str(file)).model.eval()
    rows = []
    t0 = time.perf_counter()
    crops = OUT / "export-model-files" / "inputs"
    crops.mkdir(parents=True, exist_ok=True)
    for degraded, _ in held_out_pairs(data)[: args.images]:
        image = Image.open(degraded).convert("RGB")
        # as it is (480x320: no padding) and cut to 475x317 (both sides padded to a multiple of 16)
        for name, variant in (
            (Path(degraded).name, image),
            (f"cut-{Path(degraded).name}", image.crop((0, 0, image.width - 5, image.height - 3))),
        ):
            source = crops / name
            variant.save(source)
            rows.append([name, f"{variant.width}x{variant.height}", *_compare(store, net, source)])
    print(
        f"\ncolora export-model -> spandrel {spandrel.__version__}, bundled backbone + a {args.steps}-step rain "
        f"adapter; {machine()}, commit {git_rev()}, {time.strftime('%Y-%m-%d')}, {time.perf_counter() - t0:.0f} s\n"
    )
    print(
        markdown_table(
            [
                "image",
                "size",
                "max |diff| (8-bit)",
                "beyond 16 px of the bottom/right",
                "beyond 32 px",
                "pixels off by > 1",
                "PSNR colora vs spandrel (dB)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
