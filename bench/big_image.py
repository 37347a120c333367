"""Peak memory and time of `colora restore` on one big photo (default 50 megapixels), in a fresh
process, against the size of the image itself. Tiles keep the network's memory bounded; what
grows with the image is its pixels (decoded, restored, encoded).

    python -m bench.big_image --megapixels 50
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import crop_pairs, git_rev, machine, markdown_table

COLORA = [sys.executable, "-m", "colora"]


def photo(path: Path, megapixels: float) -> tuple[int, int]:
    """A smooth 3:2 RGB image with some texture (quick to encode, not trivial to restore)."""
    w = int((megapixels * 1e6 * 1.5) ** 0.5)
    h = int(megapixels * 1e6 / w)
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :]
    rgb = np.stack([np.sin(40 * x + 3 * y), np.cos(25 * y + 2 * x), np.sin(30 * (x + y))], -1) * 0.4 + 0.5
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path, compress_level=1)
    return w, h


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--megapixels", type=float, default=50)
    ap.add_argument("--tile", type=int, default=512)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {"COLORA_HOME": str(work / "home")}

        def run(*a):
            return subprocess.run(
                [*COLORA, *map(str, a)], env={**__import__("os").environ, **env}, check=True, capture_output=True
            )

        run("init", "--no-starters")
        run("task", "add", "t", crop_pairs(work / "pairs", n=4, size=64))
        run("train", "t", "--rank", 2, "--steps", 5, "--patch-size", 32)
        (work / "in").mkdir()
        w, h = photo(work / "in" / "big.png", args.megapixels)
        max_pixels = max(w * h, 64_000_000)
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.perf_counter()
        p = subprocess.run(
            [
                *COLORA,
                "restore",
                "--task",
                "t",
                work / "in",
                "-o",
                work / "out",
                "--tile",
                str(args.tile),
                "--max-pixels",
                str(max_pixels),
            ],
            env={**__import__("os").environ, **env},
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        if p.returncode != 0:
            sys.exit(p.stderr)
        if peak <= before:
            sys.exit("the restore's peak was not above the earlier children's; run it on its own")
    image_mb = w * h * 3 * 4 / 2**20
    rows = [
        [
            f"{w}x{h} ({w * h / 1e6:.1f} MP)",
            f"{args.tile}",
            f"{peak / 1024:.0f} MB",
            f"{image_mb:.0f} MB",
            f"{peak / 1024 / image_mb:.1f}x",
            f"{seconds:.0f} s",
        ]
    ]
    print(f"bench/big_image.py — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}, bundled backbone\n")
    print(markdown_table(["image", "tile", "peak RSS", "image as float32 RGB", "peak / image", "restore"], rows))


if __name__ == "__main__":
    main()
