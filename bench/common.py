"""Shared pieces of the benchmarks: the paired sets from ../shared/data, splits, tables.

Benchmarks read the real data in ../shared/data (never copied into the repo) and write
what they make under bench/out/ (ignored by git).
"""

from __future__ import annotations

import hashlib
import platform
import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()
OUT = ROOT / "bench" / "out"


@dataclass
class PairedSet:
    name: str
    train: list[tuple[str, str]]  # (degraded, clean) paths, the pool adapters may train on
    val: list[tuple[str, str]]  # held out, scored only
    note: str


def _pairs(folder: Path) -> list[tuple[str, str]]:
    return [(str(p), str(folder / "target" / p.name)) for p in sorted((folder / "input").iterdir())]


def _group_split(pairs, n_val: int, seed: int):
    """Pairs that share a clean image stay on one side (Rain100L repeats 9 backgrounds)."""
    groups: dict[str, list] = {}
    for pair in pairs:
        groups.setdefault(hashlib.sha256(Path(pair[1]).read_bytes()).hexdigest(), []).append(pair)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    val, train = [], []
    for k in keys:
        (val if len(val) < n_val else train).extend(groups[k])
    return train, val


def rain100l(seed: int = 0, n_val: int = 20) -> PairedSet:
    train, val = _group_split(_pairs(DATA / "rain100l"), n_val, seed)
    return PairedSet("rain100l", train, val, "synthetic rain streaks (Rain100L test set)")


def noisy_8bit(clean: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """clean (0-255 floats) + noise, rounded and clipped to 8 bits: how every noisy bench input is saved."""
    return np.clip(np.round(clean + noise), 0, 255).astype(np.uint8)


def cbsd68_noise(sigma: float = 25.0, seed: int = 0, n_val: int = 20) -> PairedSet:
    """CBSD68 + seeded Gaussian noise, written once as 8-bit PNGs under bench/out/data."""
    folder = OUT / "data" / f"cbsd68_sigma{sigma:g}"
    (folder / "input").mkdir(parents=True, exist_ok=True)
    (folder / "target").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for src in sorted((DATA / "cbsd68" / "clean").iterdir()):
        noise = rng.normal(0, sigma, size=Image.open(src).size[::-1] + (3,))
        dst_in, dst_tg = folder / "input" / src.name, folder / "target" / src.name
        if not dst_in.exists():
            clean = np.asarray(Image.open(src).convert("RGB"), dtype=np.float64)
            Image.fromarray(noisy_8bit(clean, noise)).save(dst_in)
            Image.fromarray(clean.astype(np.uint8)).save(dst_tg)
    train, val = _group_split(_pairs(folder), n_val, seed)
    return PairedSet(f"cbsd68-σ{sigma:g}", train, val, f"CBSD68 with Gaussian noise σ={sigma:g}/255")


def lol(seed: int = 0, n_val: int = 5) -> PairedSet:
    train, val = _group_split(_pairs(DATA / "lol_eval15"), n_val, seed)
    return PairedSet("lol", train, val, "real low light (LOL eval15)")


def _cbsd68_derived(folder: Path, draw, degrade) -> None:
    """Every CBSD68 image and `degrade(clean, draw())` of it, written once as target/input PNGs;
    `draw` runs for every image, written or not, so each keeps its seeded value."""
    (folder / "input").mkdir(parents=True, exist_ok=True)
    (folder / "target").mkdir(parents=True, exist_ok=True)
    for src in sorted((DATA / "cbsd68" / "clean").iterdir()):
        value = draw()
        dst_in, dst_tg = folder / "input" / src.name, folder / "target" / src.name
        if not dst_in.exists():
            clean = Image.open(src).convert("RGB")
            degrade(clean, value).save(dst_in)
            clean.save(dst_tg)


def cbsd68_jpeg(q_low: int = 10, q_high: int = 30, seed: int = 0, n_val: int = 20) -> PairedSet:
    """CBSD68 saved as JPEG at a seeded quality in q_low..q_high (4:2:0, Pillow), decoded to PNG."""
    import io

    def jpeg(clean, quality):
        buf = io.BytesIO()
        clean.save(buf, format="JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")

    folder = OUT / "data" / f"cbsd68_jpeg{q_low}-{q_high}"
    rng = random.Random(seed)
    _cbsd68_derived(folder, lambda: rng.randint(q_low, q_high), jpeg)
    train, val = _group_split(_pairs(folder), n_val, seed)
    return PairedSet(f"cbsd68-jpeg{q_low}-{q_high}", train, val, f"CBSD68 as JPEG, quality {q_low}..{q_high}")


def cbsd68_blur(s_low: float = 1.0, s_high: float = 2.0, seed: int = 0, n_val: int = 20) -> PairedSet:
    """CBSD68 blurred by a Gaussian of a seeded radius in s_low..s_high px (Pillow's GaussianBlur, not
    PROD's blur: another implementation than any adapter trained on)."""
    from PIL import ImageFilter

    folder = OUT / "data" / f"cbsd68_blur{s_low:g}-{s_high:g}"
    rng = random.Random(seed)
    blur = lambda clean, radius: clean.filter(ImageFilter.GaussianBlur(radius))  # noqa: E731
    _cbsd68_derived(folder, lambda: rng.uniform(s_low, s_high), blur)
    train, val = _group_split(_pairs(folder), n_val, seed)
    return PairedSet(f"cbsd68-blur{s_low:g}-{s_high:g}", train, val, f"CBSD68 blurred, σ {s_low:g}..{s_high:g} px")


SETS = {"rain100l": rain100l, "cbsd68": cbsd68_noise, "lol": lol, "jpeg": cbsd68_jpeg, "blur": cbsd68_blur}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    import os

    import torch

    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, {'cuda' if torch.cuda.is_available() else 'cpu'}"


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"


def markdown_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


class Timer:
    def __enter__(self):
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0


def crop_pairs(dest: Path, n: int = 4, size: int = 32, seed: int = 0) -> Path:
    """`n` small aligned crops of Rain100L pairs as a task folder (dest/input, dest/target)."""
    rng = random.Random(seed)
    pairs = rng.sample(_pairs(DATA / "rain100l"), n)
    for role in ("input", "target"):
        (dest / role).mkdir(parents=True, exist_ok=True)
    for i, (degraded, clean) in enumerate(pairs):
        a, b = Image.open(degraded).convert("RGB"), Image.open(clean).convert("RGB")
        left, top = rng.randrange(a.width - size), rng.randrange(a.height - size)
        box = (left, top, left + size, top + size)
        a.crop(box).save(dest / "input" / f"{i:03d}.png")
        b.crop(box).save(dest / "target" / f"{i:03d}.png")
    return dest


def task_store(name: str, data: PairedSet, n_train: int, backbone: Path | None = None, *, starters: bool = True):
    """(A fresh store with the bundled backbone and task 't', the held-out pairs): `n_train` pairs to
    train, the validation split's first half as the task's validation pairs (what picks the best
    state during training), its second half held out for scoring. `backbone`: a backbone file to
    use instead of the bundled one. `starters`: the starter adapters `colora init` installs (a
    default `train` warm-starts from them)."""
    from colora.api.backbones import import_backbone, init_store
    from colora.api.tasks import add_task

    home = OUT / name
    shutil.rmtree(home, ignore_errors=True)
    pairs = OUT / f"{name}-pairs"
    shutil.rmtree(pairs, ignore_errors=True)
    half = len(data.val) - len(held_out_pairs(data))
    for split, items in (("train", data.train[:n_train]), ("val", data.val[:half])):
        for role, i in (("input", 0), ("target", 1)):
            (pairs / split / role).mkdir(parents=True, exist_ok=True)
            for k, item in enumerate(items):
                shutil.copyfile(item[i], pairs / split / role / f"{k:03d}{Path(item[i]).suffix}")
    store = init_store(home, starters=starters).store
    if backbone is not None:
        import_backbone(store, backbone, "under-test", make_default=True)
    add_task(store, "t", pairs / "train", val=pairs / "val")
    return store, held_out_pairs(data)


def held_out_pairs(data: PairedSet) -> list:
    """The validation split's second half: what `task_store` keeps out of training and selection."""
    return data.val[len(data.val) // 2 :]
