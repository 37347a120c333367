"""`restore --task auto`, measured: how often it picks the right adapter, and what a wrong pick costs.

A mixed folder: the validation inputs of every task of the zoo (bench/zoo.py: rain, blur, noise,
jpeg, low light and their five synthetic siblings), each labelled with the task it came from, plus
images with two degradations at once (σ 15 noise then JPEG quality 30; darkened to a quarter then
σ 10 noise), made from the clean validation images of the zoo's noise and jpeg tasks, which no
adapter trained on. Per image:

    auto      the adapter `restore --task auto` picks (the nearest degradation signature)
    own       the adapter of the image's own task (single degradations only)
    oracle    the zoo adapter that scores best on this image (knows the target)
    blend     the two nearest adapters mixed with weights from their signature distances
              (w_i proportional to exp(-d_i), in weight space: one restoration)
    look      the nearest 3 adapters each restore the image; the output whose embedding is nearest
              to clean photos (the zoo's training targets: each feature in units of their spread) is
              kept: does the restoration that looks clean win? (`look_plan`, one pass)
    chain M   look, then a second pass of the same kind on its output, kept when it brings the image
              at least M nearer to clean (for two degradations; `--margins`)
    settle    the nearest 3 adapters each restore the image; the output the backbone alone would
              change least (mean squared change of one more backbone pass) is kept: a restoration
              that left degradation behind, or invented some, still draws the backbone's correction
    settle crop   the same on the central crop the signature reads (`core.recycle.settle`, what
              `restore --task auto` runs); the whole image is then restored by the kept adapter
    input     the image unrestored

"right" counts a pick equal to the image's own task. PSNR on RGB, whole image.

    python -m bench.auto_choice        # after bench/zoo.py; ~35 min on one core
    python -m bench.auto_choice --no-look --limit 1     # smoke
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import OUT, git_rev, machine, markdown_table
from bench.zoo import build_zoo


def two_degradations(paths: list[Path], seed: int = 0) -> dict[str, list[tuple[str, torch.Tensor, torch.Tensor]]]:
    """(name, input, target) of clean images with two degradations each."""
    rng = np.random.default_rng(seed)
    sets: dict[str, list] = {"noise+jpeg": [], "dark+noise": []}
    for p in paths:
        clean = np.asarray(Image.open(p).convert("RGB")).astype(np.float64)
        noisy = np.clip(clean + rng.normal(0, 15, clean.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, "JPEG", quality=30)
        jpeg = np.asarray(Image.open(buf).convert("RGB"))
        dark = np.clip(clean * 0.25 + rng.normal(0, 10, clean.shape), 0, 255).astype(np.uint8)
        target = torch.from_numpy(clean / 255).permute(2, 0, 1).float()
        for name, degraded in (("noise+jpeg", jpeg), ("dark+noise", dark)):
            x = torch.from_numpy(degraded.astype(np.float32) / 255).permute(2, 0, 1)
            sets[name].append((p.stem, x, target))
    return sets


def clean_distance(embedding: torch.Tensor, clean: torch.Tensor, sigs: dict[str, dict]) -> float:
    """Distance of an embedding to the clean photos' embeddings (n, F): each feature in units of their
    spread, floored at 10 % of the spread between the tasks' signatures."""
    means = torch.tensor([s["mean"] for s in sigs.values()])
    scale = torch.maximum(clean.std(0), 0.1 * means.std(0, unbiased=False)).clamp_min(1e-3)
    return float(((embedding - clean.mean(0)) / scale).pow(2).mean().sqrt())


@torch.no_grad()
def look_plan(image, backbone, sigs, clean, restore, *, top=3, passes=2, margin=0.0) -> list[str]:
    """The adapters to apply in order: per pass, the nearest `top` signatures each restore the image
    and the output nearest to clean is kept; after the first pass only if it gains `margin`."""
    from colora.core.recycle.signature import image_features, nearest

    def distance(x):
        return clean_distance(image_features(x, backbone), clean, sigs)

    names, current, current_d = [], image, distance(image)
    for step in range(passes):
        ranking = nearest(image_features(current, backbone), sigs)
        outputs = {n: restore(n, current) for n, _ in ranking[:top] if n not in names}
        if not outputs:  # a zoo smaller than the passes
            break
        scores = {n: distance(out) for n, out in outputs.items()}
        best = min(scores, key=scores.get)
        if step and scores[best] > current_d - margin:
            break
        names.append(best)
        current, current_d = outputs[best], scores[best]
    return names


def open_zoo():
    """The bench zoo as the `--task auto` benches read it: (store, backbone, zoo adapters, signatures,
    one model per adapter by name)."""
    from colora.api.recycling import signatures
    from colora.core.model.fast import FastNAFNet
    from colora.core.model.weights import load_backbone, read_adapter
    from colora.core.recycle.mixture import Mixture, apply_mixture, zoo_adapter
    from colora.store.store import Store

    store = Store.open(build_zoo())
    backbone_row = store.backbone()
    backbone, _ = load_backbone(store.path(backbone_row.path), backbone_row.sha256)
    backbone.eval()
    rows = {r.task.name: r for r in store.zoo(backbone_row)}
    zoo = [zoo_adapter(n, *read_adapter(store.path(r.path)), backbone) for n, r in sorted(rows.items())]
    names = [z.name for z in zoo]
    sigs, _ = signatures(store, backbone_row, backbone)
    one_hot = torch.eye(len(zoo))
    nets = {
        n: FastNAFNet(apply_mixture(copy.deepcopy(backbone), zoo, Mixture(names, ["all"], one_hot[i][:, None])))
        for i, n in enumerate(names)
    }
    return store, backbone, zoo, sigs, nets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--margins", default="0,0.05,0.15", help="second-pass margins to score (comma-separated)")
    ap.add_argument("--limit", type=int, default=0, help="at most this many images per set (smoke runs)")
    ap.add_argument("--no-look", action="store_true", help="skip the look and chain arms (the slow ones)")
    args = ap.parse_args()
    margins = [] if args.no_look else [float(m) for m in args.margins.split(",")]

    from colora.core.data.crops import load_pair
    from colora.core.inference.metrics import psnr
    from colora.core.model.fast import FastNAFNet
    from colora.core.recycle.mixture import Mixture, apply_mixture
    from colora.core.recycle.settle import TOP, backbone_change, settle
    from colora.core.recycle.signature import image_features, nearest

    t_start = time.perf_counter()
    store, backbone, zoo, sigs, nets = open_zoo()
    names = [z.name for z in zoo]
    clean_ref = torch.stack(  # what clean photos look like: the zoo's training targets
        [
            image_features(load_pair(p.input_path, p.target_path)[1], backbone)
            for t in names
            for p in store.pairs(store.task(t), "train")[:16]
        ]
    )

    backbone_net = FastNAFNet(backbone)

    def run(net, x) -> torch.Tensor:
        with torch.no_grad():
            return net(x[None])[0].clamp(0, 1)

    images: dict[str, list] = {}
    for task in names:
        images[task] = [(p.stem, *load_pair(p.input_path, p.target_path)) for p in store.pairs(store.task(task), "val")]
    clean = [Path(p.target_path) for t in ("noise", "jpeg") for p in store.pairs(store.task(t), "val")]
    images.update(two_degradations(clean))
    if args.limit:
        images = {label: items[: args.limit] for label, items in images.items()}

    looks = [] if args.no_look else ["look", *(f"chain {m:g}" for m in margins)]
    arms = ["input", "auto", "blend", "settle", "settle crop", *looks, "own", "oracle"]
    per_set, overall, per_image = [], {"right": 0, "n": 0}, []
    for label, items in images.items():
        scores = {k: [] for k in arms}
        right = 0
        for stem, x, y in items:
            ranking = nearest(image_features(x, backbone), sigs)
            pick = ranking[0][0]
            restored = {}  # (adapter, id of its input) -> output: the plans below share their passes

            def restore(name: str, image: torch.Tensor) -> torch.Tensor:
                key = (name, image.data_ptr())
                if key not in restored:
                    restored[key] = run(nets[name], image)
                return restored[key]

            outs = {n: float(psnr(restore(n, x), y)) for n in names}
            change = {n: backbone_change(backbone_net, restore(n, x)) for n, _ in ranking[:TOP]}
            scores["settle"].append(outs[min(change, key=change.get)])
            kept, _ = settle(x, [n for n, _ in ranking[:TOP]], lambda n, crop: run(nets[n], crop), backbone_net)
            scores["settle crop"].append(outs[kept])
            # every adapter's crop change, for rules other than the top 3 (analysed from results.json)
            _, crop_change = settle(x, names, lambda n, crop: run(nets[n], crop), backbone_net)
            per_image.append(
                {"set": label, "image": stem, "ranking": ranking, "psnr": outs, "crop_change": crop_change}
            )
            if not args.no_look:
                scores["look"].append(outs[look_plan(x, backbone, sigs, clean_ref, restore, passes=1)[0]])
            for m in margins:
                out = x
                for name in look_plan(x, backbone, sigs, clean_ref, restore, margin=m):
                    out = restore(name, out)
                scores[f"chain {m:g}"].append(float(psnr(out, y)))
            scores["auto"].append(outs[pick])
            scores["oracle"].append(max(outs.values()))
            scores["input"].append(float(psnr(x, y)))
            if label in names:
                scores["own"].append(outs[label])
                right += pick == label
            (a, da), (b, db) = ranking[:2]
            wa, wb = math.exp(-da), math.exp(-db)
            coef = torch.zeros(len(zoo), 1)
            coef[names.index(a)], coef[names.index(b)] = wa / (wa + wb), wb / (wa + wb)
            blended = FastNAFNet(apply_mixture(copy.deepcopy(backbone), zoo, Mixture(names, ["all"], coef)))
            scores["blend"].append(float(psnr(run(blended, x), y)))
        mean = {k: statistics.mean(v) if v else math.nan for k, v in scores.items()}
        if label in names:
            overall["right"] += right
            overall["n"] += len(items)
        per_set.append(
            [
                label,
                len(items),
                f"{right}/{len(items)}" if label in names else "-",
                *(f"{mean[k]:.2f}" if not math.isnan(mean[k]) else "-" for k in arms),
                f"{mean['oracle'] - mean['auto']:.2f}",
                f"{mean['oracle'] - mean['settle']:.2f}",
            ]
        )
        print(per_set[-1], flush=True)
    header = (
        f"bench/auto_choice.py — {time.strftime('%Y-%m-%d')}, {machine()}, git {git_rev()}, "
        f"{time.perf_counter() - t_start:.0f} s; right picks on single degradations: {overall['right']}/{overall['n']}"
    )
    print("\n" + header + "\n")
    columns = ["set", "images", "right", *arms, "oracle - auto", "oracle - settle"]
    print(markdown_table(columns, per_set))
    out = OUT / "auto_choice"
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"header": header, "rows": per_set, "images": per_image}, indent=1))


if __name__ == "__main__":
    main()
