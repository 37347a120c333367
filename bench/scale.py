"""Beyond one process: restore throughput on Ray with 1, 2 and 4 workers against the plain command,
and a data-parallel training step under torchrun with 1 and 2 processes.

    python -m bench.scale                       # CBSD68 photos, the bundled backbone, CPU
    python -m bench.scale --images 24 --steps 30

Every arm runs as a fresh command (what a user runs), one after the other, in one run. Restore:
images per second over the whole command (start-up included, as a user waits for it) and over
the restoring alone (Ray's start-up and model loading excluded: the time between the first and
the last output file). Training: seconds per step at the same global batch (8 x 96²: one process
of 8, or two of 4), from the run's wall time recorded in the store.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import DATA, OUT, git_rev, machine, markdown_table


def colora(home: Path, *args, torchrun: int = 0) -> float:
    """Run a colora command in a fresh process; its wall time in seconds."""
    env = {**os.environ, "COLORA_HOME": str(home)}
    prefix = (
        [shutil.which("torchrun"), "--nproc-per-node", str(torchrun), "-m", "colora"]
        if torchrun
        else [sys.executable, "-m", "colora"]
    )
    start = time.perf_counter()
    subprocess.run([*prefix, *map(str, args)], env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def span(folder: Path) -> float:
    """Seconds between the first and the last file written in `folder`."""
    times = sorted(p.stat().st_mtime for p in folder.iterdir())
    return times[-1] - times[0] if len(times) > 1 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=24, help="CBSD68 photos restored per arm")
    parser.add_argument("--steps", type=int, default=30, help="training steps per arm")
    args = parser.parse_args()
    work = OUT / "scale"
    shutil.rmtree(work, ignore_errors=True)
    home = work / "home"
    photos = work / "photos"
    photos.mkdir(parents=True)
    for src in sorted((DATA / "cbsd68" / "clean").iterdir())[: args.images]:
        shutil.copy(src, photos / src.name)
    pairs = DATA / "rain100l"
    colora(home, "init", "--no-starters")
    colora(home, "task", "add", "rain", pairs)
    colora(home, "train", "rain", "--rank", "4", "--steps", "20")

    rows = []
    plain = work / "out-plain"
    wall = colora(home, "restore", "--task", "rain", photos, "-o", plain, "--engine", "torch")
    rows.append(
        ["plain `colora restore` (torch)", f"{args.images / wall:.2f}", f"{(args.images - 1) / span(plain):.2f}"]
    )
    for workers in (1, 2, 4):
        out = work / f"out-ray{workers}"
        wall = colora(home, "restore", "--task", "rain", photos, "-o", out, "--ray", "local", "--workers", workers)
        rows.append(
            [f"--ray local --workers {workers}", f"{args.images / wall:.2f}", f"{(args.images - 1) / span(out):.2f}"]
        )
    print(f"\nRestore, {args.images} CBSD68 photos (481x321), {machine()}, git {git_rev()}\n")
    print(markdown_table(["arm", "images/s (whole command)", "images/s (restoring only)"], rows))

    train_rows = []
    for processes, batch in ((1, 8), (2, 4)):
        task = f"rain-ddp{processes}"
        colora(home, "task", "add", task, pairs)
        extra = ("--rank", "4", "--steps", args.steps, "--batch-size", batch, "--patch-size", "96")
        wall = colora(home, "train", task, *extra, torchrun=processes if processes > 1 else 0)
        trained = _run_seconds(home, task)
        train_rows.append([f"{processes} process(es) x batch {batch}", f"{trained / args.steps:.3f}", f"{wall:.1f}"])
    print(f"\nTraining step at a global batch of 8 x 96², {args.steps} steps, {machine()}\n")
    print(markdown_table(["arm", "s/step (training)", "whole command (s)"], train_rows))


def _run_seconds(home: Path, task: str) -> float:
    from colora.store.store import Store

    store = Store.open(home)
    return store.last_run(store.task(task)).wall_time_s


if __name__ == "__main__":
    main()
