"""Soak test: N workers run a mix of colora commands on one store for a bounded time.

Each worker owns a task (add, train, eval, restore, show, remove and re-add it) while all of
them also list and run doctor; every command must succeed. Prints a table of runs and failures
per command (target: zero failures) and ends with `colora doctor` on the final store.

    python -m bench.soak --workers 4 --seconds 120
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import crop_pairs, git_rev, machine, markdown_table

COLORA = [sys.executable, "-m", "colora"]


def run(home: Path, *args) -> tuple[int, float, str]:
    env = {**os.environ, "COLORA_HOME": str(home), "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run([*COLORA, *map(str, args)], env=env, capture_output=True, text=True)
    return r.returncode, time.perf_counter() - t0, r.stderr.strip().splitlines()[-1] if r.stderr.strip() else ""


def worker(i: int, home: Path, work: Path, deadline: float, log: list) -> None:
    rng = random.Random(i)
    task, pairs = f"soak-{i}", crop_pairs(work / f"pairs-{i}", n=4, size=32, seed=i)
    out = work / f"out-{i}"

    def do(name, *args):
        code, seconds, last = run(home, *args)
        log.append({"command": name, "ok": code == 0, "seconds": seconds, "message": last})

    do("task add", "task", "add", task, pairs)
    while time.time() < deadline:
        step = rng.choice(["train", "eval", "restore", "list", "show", "doctor", "readd"])
        if step == "train":
            do("train", "train", task, "--rank", 2, "--steps", 10, "--patch-size", 16, "--batch-size", 2)
        elif step == "eval":
            do("eval", "eval", task)
        elif step == "restore":
            if _trained(home, task):
                do("restore", "restore", "--task", task, pairs / "input", "-o", out, "--overwrite")
        elif step == "list":
            do("list", "list", "--json")
        elif step == "show":
            do("task show", "task", "show", task)
        elif step == "doctor":
            do("doctor", "doctor")
        else:
            do("task rm", "task", "rm", task, "--yes")
            do("task add", "task", "add", task, pairs)


def _trained(home: Path, task: str) -> bool:
    env = {**os.environ, "COLORA_HOME": str(home)}
    r = subprocess.run([*COLORA, "list", "--json"], env=env, capture_output=True, text=True)
    return r.returncode == 0 and any(
        row["task"] == task and row["adapter"] == "trained" for row in json.loads(r.stdout)
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=120)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home = work / "home"
        assert run(home, "init", "--random-init", "--config", "tiny")[0] == 0
        log: list[dict] = []
        deadline = time.time() + args.seconds
        with ThreadPoolExecutor(args.workers) as pool:
            list(pool.map(lambda i: worker(i, home, work, deadline, log), range(args.workers)))
        code, _, last = run(home, "doctor")
    rows = []
    for name in sorted({e["command"] for e in log}):
        runs = [e for e in log if e["command"] == name]
        fails = [e for e in runs if not e["ok"]]
        rows.append(
            [
                name,
                len(runs),
                len(fails),
                f"{statistics.median(e['seconds'] for e in runs):.2f}",
                fails[0]["message"][:80] if fails else "",
            ]
        )
    print(f"bench/soak.py — {args.workers} workers x {args.seconds:g} s — {machine()} — git {git_rev()}\n")
    print(markdown_table(["command", "runs", "failures", "median s", "first failure"], rows))
    total = sum(r[2] for r in rows)
    print(
        f"\n{sum(r[1] for r in rows)} commands, {total} failures; final doctor: {'consistent' if code == 0 else last}"
    )
    sys.exit(1 if total or code else 0)


if __name__ == "__main__":
    main()
