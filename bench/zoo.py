"""A zoo of task adapters on different degradations, trained through the real CLI.

Used by bench/recycle.py (leave-one-adapter-out) and bench/speed.py (task switch). Five tasks on
disjoint clean images, so that no zoo adapter has seen another task's held-out targets:

    rain      Rain100L pairs (real synthetic rain), half of its background groups
    blur      Gaussian blur σ 1.6-2.4 on the other half's clean backgrounds (PROD's `gaussian_blur`)
    noise     CBSD68 + Gaussian noise σ 25, on half of the CBSD68 images that Rain100L does not use
    jpeg      JPEG quality 10-20 on the other half (PROD's `jpeg`, Pillow's codec)
    lowlight  LOL eval15 (real low light)

    python -m bench.zoo                  # ~40 min on a 2-core CPU; skips tasks already trained
    python -m bench.zoo --steps 50       # smoke

Plus five *sibling* tasks on PROD-synthetic degradations of `bsds500_pool` images (40 disjoint
images each, never scored by bench/recycle.py), so that every task above has a relative in the
zoo, as a user's store of many tasks would: heavy noise (σ 40-50), defocus blur, synthetic rain,
synthetic low light, milder JPEG (quality 30-40).

The store lives in bench/out/zoo/home; pass `--home` to colora to look at it.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import DATA, OUT

ZOO = OUT / "zoo"
HOME = ZOO / "home"
TASKS = ("rain", "blur", "noise", "jpeg", "lowlight")
SIBLINGS = ("noise-heavy", "defocus", "rain-synth", "dark-synth", "jpeg-mild")
# BSDS ids of the CBSD68 images that are also Rain100L targets (../shared/data/SOURCES.md).
RAIN100L_IN_CBSD68 = set(
    "182053 189080 19021 196073 197017 208001 210088 21077 216081 219090 220075 223061 227092 229036 "
    "236037 24077 241004 241048 253027 253055 260058 271035 285079 291000".split()
)


def _rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _write(folder: Path, name: str, degraded: np.ndarray, clean: np.ndarray) -> None:
    for sub, arr in (("input", degraded), ("target", clean)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(folder / sub / f"{Path(name).stem}.png")


def _synthetic(kind: str, clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import torch

    from colora.core.data.degradations import gaussian_blur, jpeg

    x = torch.from_numpy(clean).permute(2, 0, 1)[None].float() / 255
    if kind == "blur":
        y = gaussian_blur(x, {"sigma": float(rng.uniform(1.6, 2.4))})
    elif kind == "jpeg":
        y = jpeg(x, {"quality": int(rng.integers(10, 21))})
    elif kind == "noise":
        y = x + torch.from_numpy(rng.normal(0, 25 / 255, size=x.shape)).float()
    else:
        raise ValueError(kind)
    return y.clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def _sibling(kind: str, clean: np.ndarray, gen) -> np.ndarray:
    import torch

    from colora.core.data.degradations import DEGRADATIONS

    x = torch.from_numpy(clean.copy()).permute(2, 0, 1)[None].float() / 255
    rand = float(torch.rand((), generator=gen))
    name, params = {
        "noise-heavy": ("gaussian_noise", {"sigma": (40 + 10 * rand) / 255, "gray": False}),
        "defocus": ("defocus_blur", {"radius": 2.0 + rand}),
        "rain-synth": ("rain", None),
        "dark-synth": ("low_light", None),
        "jpeg-mild": ("jpeg", {"quality": 30 + int(10 * rand)}),
    }[kind]
    deg = DEGRADATIONS[name]
    y = deg.apply(x, params if params is not None else deg.sample_params(gen), gen)
    return y.clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()


def build_siblings(seed: int = 0) -> dict[str, Path]:
    """bench/out/zoo/siblings/<task>/{train,val}: 32 + 8 pool images each, disjoint."""
    import torch

    root = ZOO / "siblings"
    folders = {t: root / t for t in SIBLINGS}
    if (root / ".done").exists():
        return folders
    shutil.rmtree(root, ignore_errors=True)
    pool = sorted((DATA / "bsds500_pool" / "clean").iterdir())
    random.Random(seed).shuffle(pool)
    gen = torch.Generator().manual_seed(seed)
    for i, kind in enumerate(SIBLINGS):
        for j, path in enumerate(pool[40 * i : 40 * (i + 1)]):
            clean = _rgb(path)
            _write(root / kind / ("val" if j < 8 else "train"), path.name, _sibling(kind, clean, gen), clean)
    (root / ".done").touch()
    return folders


def _split(items: list, n_val: int, seed: int) -> tuple[list, list]:
    items = sorted(items)
    random.Random(seed).shuffle(items)
    return items[n_val:], items[:n_val]


def build_data(seed: int = 0) -> dict[str, Path]:
    """bench/out/zoo/data/<task>/{train,val}/{input,target}; written once."""
    root = ZOO / "data"
    done = root / ".done"
    folders = {t: root / t for t in TASKS}
    if done.exists():
        return folders
    shutil.rmtree(root, ignore_errors=True)
    rng = np.random.default_rng(seed)

    # Rain100L: group pairs by clean background, half the groups for rain, the other half's
    # clean images for blur.
    groups: dict[str, list[str]] = {}
    for p in sorted((DATA / "rain100l" / "input").iterdir()):
        key = hashlib.sha256((DATA / "rain100l" / "target" / p.name).read_bytes()).hexdigest()
        groups.setdefault(key, []).append(p.name)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    rain_keys, blur_keys = keys[: len(keys) // 2], keys[len(keys) // 2 :]
    rain_train, rain_val = _split(rain_keys, 10, seed)
    for part, ks in (("train", rain_train), ("val", rain_val)):
        for k in ks:
            for name in groups[k]:
                _write(
                    root / "rain" / part,
                    name,
                    _rgb(DATA / "rain100l" / "input" / name),
                    _rgb(DATA / "rain100l" / "target" / name),
                )
    blur_train, blur_val = _split(blur_keys, 10, seed)
    for part, ks in (("train", blur_train), ("val", blur_val)):
        for k in ks:
            name = groups[k][0]
            clean = _rgb(DATA / "rain100l" / "target" / name)
            _write(root / "blur" / part, name, _synthetic("blur", clean, rng), clean)

    # CBSD68 images that Rain100L does not use: half noise, half JPEG.
    cbsd = [p for p in sorted((DATA / "cbsd68" / "clean").iterdir()) if p.stem not in RAIN100L_IN_CBSD68]
    random.Random(seed + 1).shuffle(cbsd)
    half = len(cbsd) // 2
    for kind, paths in (("noise", cbsd[:half]), ("jpeg", cbsd[half:])):
        train, val = _split([p.name for p in paths], 8, seed)
        for part, names in (("train", train), ("val", val)):
            for name in names:
                clean = _rgb(DATA / "cbsd68" / "clean" / name)
                _write(root / kind / part, name, _synthetic(kind, clean, rng), clean)

    lol_train, lol_val = _split([p.name for p in (DATA / "lol_eval15" / "input").iterdir()], 5, seed)
    for part, names in (("train", lol_train), ("val", lol_val)):
        for name in names:
            _write(
                root / "lowlight" / part,
                name,
                _rgb(DATA / "lol_eval15" / "input" / name),
                _rgb(DATA / "lol_eval15" / "target" / name),
            )
    done.touch()
    return folders


def colora(*args: str) -> str:
    env = dict(os.environ, COLORA_HOME=str(HOME))
    out = subprocess.run([sys.executable, "-m", "colora", *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"colora {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def build_zoo(steps: int = 500, tasks: tuple[str, ...] = TASKS + SIBLINGS, seed: int = 0) -> Path:
    """Register and train every task that has no adapter yet; returns the store folder."""
    folders = {**build_data(seed), **build_siblings(seed)}
    if not (HOME / "colora.db").exists():
        colora("init", "--no-starters")  # the zoo is these tasks, on disjoint data
    import json

    listed = {row["task"]: row["adapter"] for row in json.loads(colora("list", "--json"))}
    for task in tasks:
        if task not in listed:
            colora("task", "add", task, str(folders[task] / "train"), "--val", str(folders[task] / "val"))
        if listed.get(task) != "trained":
            print(f"training {task} ({steps} steps) ...", flush=True)
            # each task's own adapter from zero, not warm-started from the tasks trained before it
            colora("train", task, "--steps", str(steps), "--seed", str(seed), "--cold-start")
    return HOME


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--tasks", default=",".join(TASKS + SIBLINGS))
    args = ap.parse_args()
    home = build_zoo(args.steps, tuple(args.tasks.split(",")))
    print(colora("list"))
    print(f"store: {home}")


if __name__ == "__main__":
    main()
