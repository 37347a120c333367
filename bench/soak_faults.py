"""Soak with fault injection: commands SIGKILLed at random moments, files corrupted between
commands; at the end the store must be consistent and nothing that was complete may be lost.

Two kinds of task share one store:

* protected tasks: trained before the faults start, then only read (eval, restore, show, list,
  export); after the run each must restore a reference image bit for bit as it did before;
* busy tasks: trained, killed mid-training, resumed, retrained, their adapter files flipped,
  their checkpoints truncated, temporary files dropped next to them, their ONNX cache files
  tampered with (the next restore must give the same image or refuse), `task rm` of a copy while
  it trains (refused; after the training is killed, removed with nothing left), restored into an
  output folder that is swapped mid-run for a link into the store (nothing may land in the store);
* at the end, a full disk under the ONNX cache (a tiny tmpfs, where this process may mount one):
  the default restore must still give the protected tasks' images.

Every command must end cleanly (exit 0, or 1 with one `Error:` line; a killed one is not
judged), a restore or eval of a flipped adapter must be refused (never a wrong image), and
after a final `doctor --fix` the store must hold no error. Prints what was held, injected and
lost (the target: 0 lost, 0 unclean).

    python -m bench.soak_faults --seconds 600 --workers 3
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from bench.common import crop_pairs, git_rev, machine, markdown_table

COLORA = [sys.executable, "-m", "colora"]
TRAIN = ("--rank", "2", "--steps", "60", "--patch-size", "16", "--batch-size", "2", "--checkpoint-every", "5")
LONG = (
    "--rank",
    "2",
    "--steps",
    "100000",
    "--patch-size",
    "16",
    "--batch-size",
    "2",
    "--checkpoint-every",
    "5",
)  # killed
OLD = (1_000_000_000, 1_000_000_000)


class Soak:
    def __init__(self, home: Path, work: Path, seed: int):
        self.home, self.work, self.seed, self.rng = home, work, seed, random.Random(seed)
        self.counts: Counter = Counter()
        self.unclean: list[str] = []
        self.lock = threading.Lock()

    def env(self) -> dict:
        return {**os.environ, "COLORA_HOME": str(self.home), "OMP_NUM_THREADS": "1"}

    def run(self, *args, kill_after: float | None = None) -> tuple[int | None, str]:
        """Run a command; with `kill_after`, SIGKILL it after that many seconds if still running.
        Returns (exit code or None if killed, stderr)."""
        p = subprocess.Popen(
            [*COLORA, *map(str, args)], env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            out, err = p.communicate(timeout=kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
            p.communicate()
            with self.lock:
                self.counts["killed"] += 1
            return None, ""
        with self.lock:
            self.counts["commands"] += 1
            errors = [line for line in err.splitlines() if line.startswith("Error: ")]
            if (
                p.returncode not in (0, 1)
                or "Traceback" in err
                or (p.returncode == 1 and len(errors) != 1)
                or any(line.startswith("Error: unexpected ") for line in errors)
            ):
                self.unclean.append(f"{' '.join(map(str, args))[:80]} -> {p.returncode}: {err.strip()[-200:]}")
        return p.returncode, err

    def run_until(self, path: Path, *args, timeout: float = 120) -> None:
        """Start a command and SIGKILL it as soon as `path` exists (or after `timeout`)."""
        p = subprocess.Popen(
            [*COLORA, *map(str, args)], env=self.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + timeout
        while p.poll() is None and not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait()
        self.count("killed")

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


def restored_digest(soak: Soak, task: str, image_dir: Path, out: Path) -> str | None:
    code, _ = soak.run("restore", "--task", task, image_dir, "-o", out, "--overwrite")
    if code != 0:
        return None
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(out.iterdir()))).hexdigest()


def busy_worker(soak: Soak, task: str, pairs: Path, images: Path, deadline: float) -> None:
    rng = random.Random(f"{task}-{soak.seed}")
    adapter_dir = soak.home / "tasks" / task
    actions = ["train", "kill-train", "resume", "flip", "truncate", "temp", "eval", "restore", "import"]
    actions += ["tamper-cache", "rm-during-train", "swap-output"]
    tour = rng.sample(actions, len(actions))  # every fault once, in a random order, then at random
    while time.time() < deadline:
        action = tour.pop() if tour else rng.choice(actions)
        if action == "train":
            soak.run("train", task, *TRAIN)
        elif action == "kill-train":
            soak.run("train", task, *rng.choice([TRAIN, LONG]), kill_after=rng.uniform(0.5, 8.0))
        elif action == "resume":
            soak.run("train", task, *rng.choice([TRAIN, LONG]), "--resume", kill_after=rng.uniform(0.5, 6.0))
        elif action == "flip":
            files = sorted(adapter_dir.glob("adapter-*.safetensors"))
            if files:
                data = bytearray(files[-1].read_bytes())
                data[-rng.randrange(1, 64)] ^= 1 << rng.randrange(8)
                files[-1].write_bytes(bytes(data))
                soak.count("flipped adapters")
                for args in (
                    ("restore", "--task", task, images, "-o", soak.work / f"flip-{task}", "--overwrite"),
                    ("eval", task),
                ):
                    code, err = soak.run(*args)
                    if code == 0:  # a flipped adapter must never be used
                        soak.unclean.append(f"{args[0]} used a flipped adapter of {task}")
                soak.run("train", task, *TRAIN)  # heal: a new adapter replaces it
        elif action == "truncate":
            ckpt = adapter_dir / "checkpoint.safetensors"
            if not ckpt.exists():  # leave a checkpoint behind first: a long training killed after its first
                soak.run_until(ckpt, "train", task, *LONG)
            if ckpt.exists():
                data = ckpt.read_bytes()
                ckpt.write_bytes(data[: rng.randrange(len(data))])
                soak.count("truncated checkpoints")
                code, _ = soak.run("train", task, *LONG, "--resume", kill_after=6.0)  # refused, or killed
                if code is not None and code != 0:
                    soak.run("train", task, *TRAIN)
        elif action == "temp":
            if adapter_dir.is_dir():
                junk = adapter_dir / f".adapter-x.safetensors.{rng.randrange(10**6)}.part"
                junk.write_bytes(os.urandom(100))
                os.utime(junk, OLD)
                soak.count("temp files dropped")
        elif action == "eval":
            soak.run("eval", task, kill_after=rng.choice([None, rng.uniform(0.3, 2.0)]))
        elif action == "restore":
            soak.run(
                "restore",
                "--task",
                task,
                images,
                "-o",
                soak.work / f"out-{task}",
                "--overwrite",
                kill_after=rng.choice([None, rng.uniform(0.3, 2.0)]),
            )
        elif action == "tamper-cache":
            tamper_cache(soak, task, images, rng)
        elif action == "rm-during-train":
            rm_during_train(soak, task, pairs)
        elif action == "swap-output":
            swap_output(soak, task, images, rng)
        else:
            exported = soak.work / f"{task}-export.safetensors"
            if soak.run("adapter", "export", task, exported, "--overwrite")[0] == 0:
                soak.run(
                    "adapter",
                    "import",
                    exported,
                    "--task",
                    f"{task}-copy",
                    "--replace",
                    kill_after=rng.choice([None, rng.uniform(0.2, 1.5)]),
                )


def tamper_cache(soak: Soak, task: str, images: Path, rng: random.Random) -> None:
    """Restore (which caches the ONNX export), change the cached file, restore again: the same
    image, or a refusal, never a different image."""
    before = restored_digest(soak, task, images, soak.work / f"cache-a-{task}")
    cached = sorted((soak.home / "cache" / "onnx").glob(f"{task}-*.onnx"))
    if before is None or not cached:
        soak.count("cache tampers skipped (restore refused)" if before is None else "cache tampers skipped (no cache)")
        return
    data = bytearray(cached[-1].read_bytes())
    data[rng.randrange(len(data) // 2, len(data))] ^= 1 << rng.randrange(8)
    cached[-1].write_bytes(bytes(data))
    soak.count("tampered caches")
    after = restored_digest(soak, task, images, soak.work / f"cache-b-{task}")
    # only this thread touches its task, so the adapter is the same for both restores
    if after is not None and after != before:
        soak.unclean.append(f"restore of {task} used a tampered ONNX cache (a different image)")


def rm_during_train(soak: Soak, task: str, pairs: Path) -> None:
    """`task rm` of a task while its training runs: refused in one line, the training unharmed; once
    the training is stopped (SIGKILL), `task rm` works and nothing of the task stays behind."""
    doomed = f"{task}-doomed"
    if soak.run("task", "add", doomed, pairs)[0] != 0:
        return
    train = subprocess.Popen(
        [*COLORA, "train", doomed, *LONG], env=soak.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    checkpoint = soak.home / "tasks" / doomed / "checkpoint.safetensors"
    deadline = time.time() + 60
    while train.poll() is None and not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.05)
    code, err = soak.run("task", "rm", doomed, "--yes")
    if train.poll() is None and code == 0:
        soak.unclean.append(f"task rm {doomed} went through while its training ran")
    elif train.poll() is None and "is being trained" not in err:
        soak.unclean.append(f"task rm {doomed} during training: {err.strip()[-200:]}")
    train.send_signal(signal.SIGKILL)
    train.wait()
    soak.count("tasks removed during training")
    if soak.run("task", "rm", doomed, "--yes")[0] not in (0, 1):
        return
    left = soak.home / "tasks" / doomed
    if left.exists() and any(p.suffix == ".safetensors" for p in left.iterdir()):
        soak.unclean.append(f"task rm {doomed} left weights behind: {sorted(os.listdir(left))}")


def swap_output(soak: Soak, task: str, images: Path, rng: random.Random) -> None:
    """Restore many images; mid-run the output folder is renamed away and a link into the store
    takes its place: no image may land in the store."""
    many = soak.work / f"many-{task}"
    if not many.is_dir():
        many.mkdir()
        for i in range(12):
            for src in sorted(images.iterdir()):
                (many / f"{i:02d}-{src.name}").write_bytes(src.read_bytes())
    out, moved = soak.work / f"swap-{task}", soak.work / f"swapped-{task}"
    for folder in (out, moved):
        if folder.is_symlink():
            folder.unlink()
        elif folder.is_dir():
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
    out.mkdir()
    restore = subprocess.Popen(
        [*COLORA, "restore", "--task", task, str(many), "-o", str(out)],
        env=soak.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(rng.uniform(0.5, 3.0))
    out.rename(moved)
    out.symlink_to(soak.home / "tasks" / task, target_is_directory=True)
    soak.count("output folders swapped")
    _, err = restore.communicate()
    if "Traceback" in err or restore.returncode not in (0, 1):
        soak.unclean.append(f"restore with a swapped output folder -> {restore.returncode}: {err.strip()[-200:]}")
    landed = [p.name for p in (soak.home / "tasks" / task).iterdir() if p.suffix == ".png"]
    if landed:
        soak.unclean.append(f"restore wrote {len(landed)} image(s) into the store through a swapped folder")
        for name in landed:
            (soak.home / "tasks" / task / name).unlink()


def full_cache_disk(soak: Soak, protected: list[str], images: Path, reference: dict) -> str:
    """A tiny full tmpfs over the ONNX cache: the default restore must still give every protected
    task's image (made for the run only). Returns what happened, for the table."""
    cache = soak.home / "cache" / "onnx"
    cache.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(cache)], capture_output=True)
    if mounted.returncode != 0:
        return "not run (mounting a tmpfs needs root)"
    try:
        with open(cache / "filler", "wb", buffering=0) as f:  # unbuffered: nothing left to fail at close
            try:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
            except OSError:
                pass
        wrong = [t for t in protected if restored_digest(soak, t, images, soak.work / f"full-{t}") != reference[t]]
        return f"{len(protected) - len(wrong)} of {len(protected)} protected tasks restored as before"
    finally:
        subprocess.run(["umount", "-l", str(cache)], check=False)


def reader_worker(soak: Soak, tasks: list[str], images: Path, deadline: float) -> None:
    rng = random.Random(1)
    while time.time() < deadline:
        task = rng.choice(tasks)
        action = rng.choice(["list", "show", "eval", "restore", "doctor"])
        kill = rng.choice([None, None, rng.uniform(0.2, 2.0)])
        if action == "list":
            soak.run("list", "--json")
        elif action == "show":
            soak.run("task", "show", task)
        elif action == "eval":
            soak.run("eval", task, kill_after=kill)
        elif action == "restore":
            soak.run("restore", "--task", task, images, "-o", soak.work / f"r-{task}", "--overwrite", kill_after=kill)
        else:
            soak.run("doctor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--workers", type=int, default=3, help="busy tasks (each with its own thread)")
    ap.add_argument("--protected", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        soak = Soak(work / "home", work, args.seed)
        assert soak.run("init", "--random-init", "--config", "tiny")[0] == 0
        images = crop_pairs(work / "images", n=2, size=48, seed=99) / "input"
        protected = [f"keep-{i}" for i in range(args.protected)]
        busy = [f"busy-{i}" for i in range(args.workers)]
        reference = {}
        for i, task in enumerate(protected + busy):
            assert soak.run("task", "add", task, crop_pairs(work / f"pairs-{task}", n=4, size=32, seed=i))[0] == 0
            assert soak.run("train", task, *TRAIN)[0] == 0
        for task in protected:
            reference[task] = restored_digest(soak, task, images, work / f"ref-{task}")
        start = time.time()
        deadline = start + args.seconds
        threads = [
            threading.Thread(target=busy_worker, args=(soak, t, work / f"pairs-{t}", images, deadline)) for t in busy
        ]
        threads.append(threading.Thread(target=reader_worker, args=(soak, protected, images, deadline)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = time.time() - start
        full_disk = full_cache_disk(soak, protected, images, reference)
        for folder, _, names in os.walk(soak.home):  # let doctor judge leftovers of any age
            for name in names:
                os.utime(Path(folder) / name, OLD)
        soak.run("doctor", "--fix")
        code, err = soak.run("doctor")
        lost = [t for t in protected if restored_digest(soak, t, images, work / f"after-{t}") != reference[t]]
    rows = [
        [
            "held",
            f"{held / 60:.1f} min, {soak.counts['commands']} commands "
            f"({soak.counts['commands'] / held * 60:.0f}/min), {len(busy)} busy + 1 reader thread",
        ],
        [
            "faults injected",
            f"{soak.counts['killed']} SIGKILLs, {soak.counts['flipped adapters']} flipped adapters, "
            f"{soak.counts['truncated checkpoints']} truncated checkpoints, "
            f"{soak.counts['temp files dropped']} stray temp files, {soak.counts['tampered caches']} tampered "
            f"ONNX caches, {soak.counts['tasks removed during training']} task rm during training, "
            f"{soak.counts['output folders swapped']} output folders swapped for a link into the store",
        ],
        ["full disk under the ONNX cache", full_disk],
        ["unclean command endings", str(len(soak.unclean))],
        ["final doctor", "consistent" if code == 0 else err.strip()[-200:]],
        ["protected adapters lost or changed", f"{len(lost)} of {len(protected)}"],
    ]
    print(f"bench/soak_faults.py — {args.seconds:g} s — {machine()} — git {git_rev()}\n")
    print(markdown_table(["what", "result"], rows))
    print("\nevery count:", ", ".join(f"{k} {v}" for k, v in sorted(soak.counts.items())))
    for line in soak.unclean[:10]:
        print("unclean:", line)
    sys.exit(1 if soak.unclean or lost or code else 0)


if __name__ == "__main__":
    main()
