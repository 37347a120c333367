"""Start-up of the commands people run most: `colora --help`, `colora list` (empty store and 1,000
tasks), this checkout against an older revision, interleaved in one run, medians.

    python -m bench.startup                     # against the revision before the architecture change
    python -m bench.startup --old 4e53ead --repeats 10 --tasks 1000

The older revision is checked out with `git worktree` under bench/out/startup/ (nothing is
installed); both versions run the way their console script does, as fresh processes with
stdout piped (what scripts and `| less` see). Each version gets its own stores, made by its
own code. Prints a table; the ratio is new / old.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.common import OUT, ROOT, git_rev, machine, markdown_table

BEFORE_ISSUE_12 = "4e53ead"  # the last commit before the architecture change (issue 12)

# what each version's console script runs (the old revisions predate the one import name `colora`)
ENTRY = {"old": "colora_cli.main", "new": "colora.cli.fastpath"}

FILL = """
import sys
from pathlib import Path
try:
    from colora.store.store import NewPair, Store
except ImportError:  # a revision before the one import name
    from store.store import NewPair, Store
store = Store.open(sys.argv[1]); backbone = store.backbone(); n = int(sys.argv[2])
adapter_file = Path(sys.argv[3])
for i in range(n):
    name = f"task-{i:04d}"
    pairs = [NewPair(stem=str(j), split="val" if j % 5 == 0 else "train", input_path=f"/data/{name}/lq/{j}.png",
                     target_path=f"/data/{name}/gt/{j}.png", width=480, height=320,
                     input_sha256="0" * 64, target_sha256="0" * 64) for j in range(20)]
    task = store.add_task(name, f"/data/{name}", pairs, val_folder=None, val_fraction=0.2, seed=0)
    rel = f"tasks/{name}/adapter-1.safetensors"
    store.path(rel).parent.mkdir(parents=True, exist_ok=True)
    store.path(rel).write_bytes(adapter_file.read_bytes()[:64])
    kw = dict(trainable_params=120_000, plan_method="faig", budget=0.07)
    try:
        adapter = store.add_adapter(task, backbone, rel, **kw)
    except TypeError:  # versions whose adapter row copied the rank plan
        adapter = store.add_adapter(task, backbone, rel, rank_plan={}, **kw)
    store.record_eval(task, backbone, adapter, {"adapter": (27.0, 0.8, [["a", 27.0, 0.8]])})
"""


def checkout(rev: str) -> Path:
    dest = OUT / "startup" / f"old-{rev}"
    if not dest.is_dir():
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(dest), rev], check=True, capture_output=True
        )
    return dest


def launcher(root: Path, version: str) -> list[str]:
    code = (
        f"import sys; sys.path.insert(0, {str(root)!r}); sys.argv[0] = 'colora'; from "
        f"{ENTRY[version]} import run; run()"
    )
    return [sys.executable, "-c", code]


def make_stores(roots: dict[str, Path], n_tasks: int) -> dict[tuple[str, str], Path]:
    homes = {}
    for version, root in roots.items():
        for kind, n in (("empty", 0), (f"{n_tasks} tasks", n_tasks)):
            home = OUT / "startup" / f"store-{version}-{n}"
            if not (home / ".ready").exists():
                subprocess.run(
                    [*launcher(root, version), "init", "--random-init", "--config", "tiny", "--home", str(home)],
                    check=True,
                    capture_output=True,
                )
                if n:
                    subprocess.run(
                        [
                            sys.executable,
                            "-c",
                            f"import sys; sys.path.insert(0, {str(root)!r})\n" + FILL,
                            str(home),
                            str(n),
                            str(next((home / "backbones").iterdir())),
                        ],
                        check=True,
                    )
                (home / ".ready").touch()
            homes[(version, kind)] = home
    return homes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", default=BEFORE_ISSUE_12, help="the revision to compare with")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--tasks", type=int, default=1000)
    args = ap.parse_args()
    roots = {"old": checkout(args.old), "new": ROOT}
    homes = make_stores(roots, args.tasks)
    cases = [
        ("colora --help", ["--help"], None),
        ("colora list, empty store", ["list"], "empty"),
        (f"colora list, {args.tasks} tasks", ["list"], f"{args.tasks} tasks"),
        (f"colora list --json, {args.tasks} tasks", ["list", "--json"], f"{args.tasks} tasks"),
    ]
    times = {(c[0], v): [] for c in cases for v in roots}
    outputs = {}
    for i in range(args.repeats + 1):  # the first round warms the file cache and is not counted
        for label, argv, store in cases:
            for version, root in roots.items():
                home = ["--home", str(homes[(version, store)])] if store else []
                t0 = time.perf_counter()
                p = subprocess.run([*launcher(root, version), *argv, *home], capture_output=True, text=True)
                elapsed = time.perf_counter() - t0
                if p.returncode != 0:
                    sys.exit(f"{version} {label} failed: {p.stderr}")
                if i:
                    times[(label, version)].append(elapsed)
                outputs[(label, version)] = (p.stdout, p.stderr)
    bare = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare.append(time.perf_counter() - t0)
    rows = []
    for label, _, _ in cases:
        old, new = (statistics.median(times[(label, v)]) for v in ("old", "new"))
        same = "yes" if outputs[(label, "old")] == outputs[(label, "new")] else "NO"
        rows.append(
            [
                label,
                f"{1000 * old:.0f} ms",
                f"{1000 * new:.0f} ms",
                f"{new / old:.2f}",
                "yes" if new <= old / 2 else "NO",
                same,
            ]
        )
    rows.append(["(bare `python -c pass`, for scale)", "", f"{1000 * statistics.median(bare):.0f} ms", "", "", ""])
    print(
        f"\nbench/startup.py — {time.strftime('%Y-%m-%d')}, {machine()}, old = {args.old}, new = git {git_rev()}, "
        f"medians of {args.repeats}, stdout piped\n"
    )
    print(markdown_table(["command", "old", "new", "new / old", "<= 0.5 (target)", "same output"], rows))


if __name__ == "__main__":
    main()
