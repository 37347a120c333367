"""The starter adapters bundled with colora: one per common degradation, trained by `colora train`
on PROD-synthetic pairs of the pre-training pool (never on a set the benchmarks score).

Each kind degrades the clean pool photos (bsds500_pool + sun80, 380 images; 20 BSDS ones held out
as validation pairs) with one of PROD's degradations at the strengths a user meets, trains the
task through the real CLI for `--steps` on the bundled backbone, and exports the adapter to
core/weights/starters/<kind>.safetensors, where `colora init` finds it.

    python -m bench.starters --kinds noise,jpeg,lowlight        # 3000 steps, ~18 one-core minutes each
    python -m bench.starters --kinds noise --steps 4000 --more  # then noise: 4000 more from its first run
    python -m bench.starters --kinds rain,blur --steps 1000     # 8 one-core minutes each (VARIANTS)
    python -m bench.starters --kinds jpeg --steps 50 --out /tmp/s   # smoke
    python -m bench.starters --score                            # each bundled starter alone, zero-shot
    python -m bench.starters --auto                             # `restore --task auto` on a new store

Each run also rewrites --out's manifest.json (every file's sha256: what `colora init` checks). The
bundled ones are noise (3000 + 4000 steps), jpeg and lowlight (3000 each), rain and blur (1000 steps
each on three degraded copies of each photo) (BENCHMARKS.md, "Starter adapters").

The stores live in bench/out/starters/home/<kind> (rebuilt per run); the pairs in
bench/out/starters/data/<kind>[-x<variants>].
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from bench.common import DATA, OUT

ROOT = OUT / "starters"
HOME = ROOT / "home"
WEIGHTS = Path(__file__).resolve().parent.parent / "core" / "weights" / "starters"
N_VAL = 20

# kind -> (PROD degradation, params drawn per image from these ranges, or None for PROD's own ranges)
KINDS = {
    # colour Gaussian noise at σ 5-55 (the blind range of CDnCNN-B)
    "noise": ("gaussian_noise", lambda r: {"sigma": r.uniform(5, 55) / 255, "gray": False}),
    "rain": ("rain", None),
    "jpeg": ("jpeg", lambda r: {"quality": int(r.integers(10, 41))}),
    "lowlight": ("low_light", None),
    "blur": ("gaussian_blur", lambda r: {"sigma": r.uniform(0.8, 3.0)}),
}
# kind -> degraded copies of each training photo (validation photos get one). One fixed rainy copy
# per photo let starter-rain learn those 360 rain patterns and lose Rain100L's (session 26: three
# copies and 1000 steps beat one copy at 1000 or 3000 steps on Rain100L pairs outside the scored ones).
VARIANTS = {"rain": 3, "blur": 3}


def _pool() -> list[Path]:
    bsds = sorted((DATA / "bsds500_pool" / "clean").iterdir())
    sun = sorted((DATA / "sun80" / "clean").iterdir())
    return bsds + sun


def build_pairs(kind: str, seed: int = 0) -> Path:
    """bench/out/starters/data/<kind>[-x<variants>]/{train,val}/{input,target}: written once."""
    import torch

    from colora.core.data.degradations import DEGRADATIONS

    variants = VARIANTS.get(kind, 1)
    root = ROOT / "data" / (kind if variants == 1 else f"{kind}-x{variants}")
    if (root / ".done").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    pool = _pool()
    val = set(random.Random(seed).sample(range(300), N_VAL))  # BSDS images: small, fast to validate
    name, params = KINDS[kind]
    deg = DEGRADATIONS[name]
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    for i, path in enumerate(pool):
        clean = np.asarray(Image.open(path).convert("RGB"))
        x = torch.from_numpy(clean.copy()).permute(2, 0, 1)[None].float() / 255
        split = "val" if i in val else "train"
        for v in range(1 if split == "val" else variants):
            y = deg.apply(x, params(rng) if params else deg.sample_params(gen), gen)
            degraded = y.clamp(0, 1).mul(255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
            stem = path.stem if variants == 1 else f"{path.stem}_{v}"
            for sub, arr in (("input", degraded), ("target", clean)):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(root / split / sub / f"{stem}.png")
    (root / ".done").touch()
    return root


def colora(home: Path, *args: str) -> str:
    env = dict(os.environ, COLORA_HOME=str(home))
    out = subprocess.run([sys.executable, "-m", "colora", *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"colora {' '.join(args)} failed:\n{out.stderr}")
    return out.stdout


def train_starter(kind: str, steps: int, out: Path, *, more: bool = False) -> float:
    """Train the kind's adapter in a fresh store (no other adapter: a cold start) and export it;
    `more`: start instead from the kind's adapter already in `out` (a warm start whose only zoo
    member is that adapter: one more run of `steps`, with its own warm-up and schedule)."""
    data = build_pairs(kind)
    home = HOME / kind
    shutil.rmtree(home, ignore_errors=True)
    colora(home, "init", "--no-starters")
    if more:
        colora(home, "adapter", "import", str(out / f"{kind}.safetensors"), "--task", "previous")
    colora(home, "task", "add", kind, str(data / "train"), "--val", str(data / "val"))
    t0 = time.perf_counter()
    start = "--warm-start" if more else "--cold-start"
    print(colora(home, "train", kind, "--steps", str(steps), start), flush=True)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    colora(home, "adapter", "export", kind, str(out / f"{kind}.safetensors"), "--overwrite")
    write_signature(home, kind, out / f"{kind}.json")
    write_manifest(out)
    print(colora(home, "eval", kind), flush=True)
    return seconds


def write_signature(home: Path, kind: str, file: Path) -> None:
    """The task's degradation signature (what `restore --task auto` compares an image with), from
    its training inputs: the starter ships it because it ships without pairs."""
    import json

    from colora.api.models import backbone_model
    from colora.api.recycling import signatures
    from colora.store.store import Store

    store = Store.open(home)
    row = store.adapter(store.task(kind)).backbone
    found, _ = signatures(store, row, backbone_model(store, row))
    file.write_text(json.dumps(found[kind]) + "\n", encoding="utf-8")


def write_manifest(folder: Path) -> None:
    """folder/manifest.json: every starter's and signature's sha256 and the backbone they were trained
    on: what `colora init` and `colora adapter starters` check before installing one."""
    import json

    from colora.core.files import sha256_file
    from colora.core.model.bundled import STARTERS_MANIFEST
    from colora.core.model.weights import read_adapter

    starters, backbones = {}, set()
    for file in sorted(folder.glob("*.safetensors")):
        _, meta = read_adapter(file)
        backbones.add(meta.backbone_sha256)
        starters[file.stem] = {
            "adapter_sha256": sha256_file(file),
            "signature_sha256": sha256_file(file.with_suffix(".json")),
        }
    if len(backbones) != 1:
        raise SystemExit(f"the starters in {folder} were trained on {len(backbones)} backbones; retrain them on one")
    manifest = {"backbone_sha256": backbones.pop(), "starters": starters}
    (folder / STARTERS_MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")


def starter_models(folder: Path, kinds: list[str]) -> dict:
    """ "input" (None), "backbone" (the bundled one alone) and each kind's starter in `folder` on it."""
    from colora.core.model.bundled import bundled_backbone
    from colora.core.model.weights import apply_adapter, load_backbone

    backbone, meta = load_backbone(bundled_backbone()[0])
    models = {"input": None, "backbone": backbone.eval()}
    for kind in kinds:
        model, _ = load_backbone(bundled_backbone()[0])
        apply_adapter(model, meta["sha256"], folder / f"{kind}.safetensors")
        models[kind] = model.eval()
    return models


def score(folder: Path) -> None:
    """Each starter alone (zero-shot) on the held-out pairs bench/quality.py scores, beside the input
    and the backbone alone: what `colora restore --task starter-KIND` gives a user at once."""
    from bench.common import SETS, git_rev, held_out_pairs, machine, markdown_table
    from colora.core.inference.evaluate import evaluate

    models = starter_models(folder, [f.stem for f in sorted(folder.glob("*.safetensors"))])
    sets = {label: make(SETS) for label, (_, make) in AUTO_SETS.items()}
    rows = []
    for label, data in sets.items():
        held = held_out_pairs(data)
        res = evaluate(models, [(str(i), a, b) for i, (a, b) in enumerate(held)])
        rows.append([label, len(held), *(f"{res[k][0]:.2f}" for k in models)])
        print(" | ".join(map(str, rows[-1])), flush=True)
    print(f"\nbench/starters.py --score — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}\n")
    print(
        markdown_table(["set", "scored", *(k if k in ("input", "backbone") else f"starter-{k}" for k in models)], rows)
    )


# held-out set -> the starter kind made for it (None: no starter is)
AUTO_SETS = {
    "rain (Rain100L)": ("rain", lambda S: S["rain100l"]()),
    "noise σ15 (CBSD68)": ("noise", lambda S: S["cbsd68"](15.0)),
    "noise σ25 (CBSD68)": ("noise", lambda S: S["cbsd68"](25.0)),
    "noise σ50 (CBSD68)": ("noise", lambda S: S["cbsd68"](50.0)),
    "JPEG q10-30 (CBSD68)": ("jpeg", lambda S: S["jpeg"]()),
    "low light (LOL)": ("lowlight", lambda S: S["lol"]()),
    "blur σ1-2 (CBSD68)": ("blur", lambda S: S["blur"]()),  # Pillow's blur, not PROD's
    # kinds no starter is made for: what auto does with an image none of them fits
    "JPEG q80 (CBSD68)": (None, lambda S: S["jpeg"](80, 80)),
    "clean (CBSD68)": (None, lambda S: _clean_set()),
}


def _clean_set():
    from bench.backbone_compare import clean_set

    return clean_set()


def auto(folder: Path) -> None:
    """`restore --task auto` on a store `colora init` made with the starters in `folder` (and
    nothing else: a new user with no pairs), over the held-out images of every set above: how often
    it picks the starter made for the image's kind, and its PSNR beside the input, the backbone
    alone, that starter, and the best starter per image (the oracle, which knows the target)."""
    import json
    import tempfile
    from unittest import mock

    import torch

    from bench.common import SETS, git_rev, held_out_pairs, machine, markdown_table
    from colora.api.backbones import init_store
    from colora.api.models import backbone_model
    from colora.api.recycling import signatures
    from colora.api.restoring import FAR
    from colora.core.data.crops import load_pair
    from colora.core.inference.evaluate import evaluate
    from colora.core.model import bundled
    from colora.core.recycle.signature import image_features, nearest

    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(bundled, "STARTERS_DIR", folder):
        store = init_store(Path(tmp) / "home").store
        row = store.backbone()
        backbone = backbone_model(store, row).eval()
        sigs, _ = signatures(store, row, backbone)
    kinds = [name.removeprefix(bundled.STARTER_PREFIX) for name in sorted(sigs)]
    models = starter_models(folder, kinds)
    rows, record, t0 = [], [], time.perf_counter()
    for label, (own, make) in AUTO_SETS.items():
        held = held_out_pairs(make(SETS))
        res = evaluate(models, [(str(i), a, b) for i, (a, b) in enumerate(held)])
        picks, got, best, far = [], [], [], 0
        for i, (a, b) in enumerate(held):
            x, _ = load_pair(a, b)
            with torch.no_grad():
                ranked = nearest(image_features(x, backbone), sigs)
            name, distance = ranked[0]
            pick = name.removeprefix(bundled.STARTER_PREFIX)
            picks.append(pick)
            got.append(res[pick][2][i][1])
            far += distance > FAR
            ranking = [[n.removeprefix(bundled.STARTER_PREFIX), round(d, 3)] for n, d in ranked]
            record.append({"set": label, "image": i, "ranking": ranking, "psnr": {k: res[k][2][i][1] for k in res}})
            best.append(max(res[k][2][i][1] for k in kinds))
        mean = lambda v: sum(v) / len(v)  # noqa: E731
        right = f"{picks.count(own)}/{len(held)}" if own in kinds else "-"
        taken = ", ".join(f"{k} {picks.count(k)}" for k in kinds if picks.count(k))
        own_psnr = f"{res[own][0]:.2f}" if own in kinds else "-"
        distances = [r["ranking"][0][1] for r in record if r["set"] == label]
        cells = [label, len(held), right, taken, f"{far} ({max(distances):.1f})", f"{res['input'][0]:.2f}"]
        cells += [f"{res['backbone'][0]:.2f}", own_psnr, f"**{mean(got):.2f}**"]
        rows.append([*cells, f"{mean(best):.2f}", f"{mean(best) - mean(got):.2f}"])
        print(" | ".join(map(str, rows[-1])), flush=True)
    print(
        f"\nbench/starters.py --auto {folder} — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}, "
        f"{time.perf_counter() - t0:.0f} s\n"
    )
    (ROOT / f"auto-{folder.name}.json").write_text(json.dumps(record) + "\n", encoding="utf-8")  # for other rules
    head = [
        "set",
        "images",
        "right",
        "picked",
        f"far (> {FAR:g}; largest)",
        "input",
        "backbone",
        "own starter",
        "auto",
        "oracle",
        "oracle − auto",
    ]
    print(markdown_table(head, rows))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kinds", default="noise,rain", help=f"of {','.join(KINDS)}")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--more", action="store_true", help="continue from the adapters already in --out")
    ap.add_argument("--score", action="store_true", help="only score the starters in --out, each alone")
    ap.add_argument("--manifest", action="store_true", help="only rewrite --out's manifest.json from its files")
    ap.add_argument("--auto", action="store_true", help="only measure `restore --task auto` with --out's starters")
    args = ap.parse_args()
    if args.auto:
        return auto(args.out)
    if args.score:
        return score(args.out)
    if args.manifest:
        return write_manifest(args.out)
    for kind in args.kinds.split(","):
        seconds = train_starter(kind, args.steps, args.out, more=args.more)
        print(f"{kind}: {args.steps} steps in {seconds / 60:.1f} min -> {args.out / kind}.safetensors", flush=True)


if __name__ == "__main__":
    main()
