"""Speed: restore and train against eager PyTorch and PEFT, on this machine, as same-run ratios.

Arms of one comparison are interleaved (A B A B ...), each timing is the median of the repeats.

    forward 512²        eager backbone | colora restore path: backbone alone, merged adapter
                        | eager + unmerged activation-space LoRA (what PEFT does at inference)
    tiled 2000x1500     eager backbone vs. the restore path with a merged adapter (tiles of 512)
    engines             the same two, run by ONNX Runtime and OpenVINO (`restore --engine`) from an
                        ONNX export of the merged task model, each on both graphs (plain NAFNet,
                        FastNAFNet; core/inference/engines.py) at 512², on its own graph tiled;
                        max |engine - restore path| (the engines that are installed)
                        `python -m bench.speed --only engines`
    folder of 50        `colora restore` in-process (check, decode, infer, encode, write) vs. a
                        bare forward loop over the same, already decoded tensors
    train step          colora LoRA (weight space) | colora LoRA (activation space) | full
                        fine-tuning | PEFT LoRA at the same ranks (needs `pip install peft`);
                        batch 4 x 96², AdamW; peak RSS of each in its own process
    store               `colora list` on a store with 1,000 tasks; task switch (load + merge)

    python -m bench.speed                 # ~10 min on a 2-core CPU (needs bench/zoo.py's store)
    python -m bench.speed --repeats 2 --quick
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.common import DATA, OUT, git_rev, machine, markdown_table

ROWS: list[list] = []


def interleaved(arms: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each arm, the arms run in turn (one warm-up call each first)."""
    for fn in arms.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, fn in arms.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def row(
    section: str, arm: str, seconds: float | None, unit: str, ratio: str = "", target: str = "", met: str = ""
) -> None:
    ROWS.append([section, arm, f"{seconds:.4f} {unit}" if seconds is not None else "-", ratio, target, met])


def yes(ok: bool) -> str:
    return "yes" if ok else "**no**"


def models():
    from bench.zoo import HOME
    from colora.api.models import backbone_model
    from colora.core.model.fast import FastNAFNet
    from colora.core.model.lora import merge_all
    from colora.core.model.weights import apply_adapter
    from colora.store.store import Store

    store = Store.open(HOME)
    adapter = store.zoo(store.backbone())[0]
    backbone = backbone_model(store, adapter.backbone).eval()
    merged = copy.deepcopy(backbone)  # the eager PyTorch reference: LoRA layers, merged
    apply_adapter(merged, adapter.backbone.sha256, store.path(adapter.path))
    merge_all(merged)
    return store, backbone, merged.eval(), FastNAFNet(backbone), FastNAFNet(merged), adapter


def forward_section(repeats: int) -> None:
    from colora.core.inference.tiles import restore_tensor
    from colora.core.model.lora import inject_lora

    store, backbone, merged, fast_backbone, fast_merged, adapter = models()
    unmerged = copy.deepcopy(backbone)
    from colora.core.model.weights import read_adapter

    tensors, meta = read_adapter(store.path(adapter.path))
    inject_lora(unmerged, meta.rank_plan, meta.alpha, mode="activation")
    from colora.core.model.lora import load_adapter_state

    load_adapter_state(unmerged, tensors)
    x = torch.rand(3, 512, 512)
    with torch.inference_mode():
        ref = merged(x[None])[0]
        diff = float((restore_tensor(fast_merged, x) - ref.clamp(0, 1)).abs().max())
        t = interleaved(
            {
                "eager": lambda: backbone(x[None]),
                "fast backbone": lambda: restore_tensor(fast_backbone, x),
                "fast merged": lambda: restore_tensor(fast_merged, x),
                "unmerged": lambda: unmerged(x[None]),
            },
            repeats,
        )
    s = "forward 512²"
    row(s, "eager PyTorch, backbone alone", t["eager"], "s")
    row(
        s,
        "eager, unmerged activation-space LoRA (PEFT-style)",
        t["unmerged"],
        "s",
        f"{t['eager'] / t['unmerged']:.2f}x eager",
    )
    row(s, "restore path, backbone alone", t["fast backbone"], "s", f"{t['eager'] / t['fast backbone']:.2f}x eager")
    r1, r2 = t["fast backbone"] / t["fast merged"], t["eager"] / t["fast merged"]
    row(
        s,
        "restore path, merged adapter",
        t["fast merged"],
        "s",
        f"{r1:.2f}x backbone alone",
        ">= 1.0x",
        yes(r1 >= 0.97),
    )
    row(s, "restore path, merged adapter", t["fast merged"], "s", f"{r2:.2f}x eager", ">= 2x", yes(r2 >= 2))
    row(s, "max |restore path - eager merged|", None, "", f"{diff:.1e}", "fp32 tolerance", yes(diff < 1e-4))

    big = torch.rand(3, 1500, 2000)
    with torch.inference_mode():
        t = interleaved(
            {
                "eager": lambda: restore_tensor(backbone, big, 512),
                "fast": lambda: restore_tensor(fast_merged, big, 512),
            },
            max(2, repeats // 2),
        )
    r = t["eager"] / t["fast"]
    row("tiled 2000x1500", "eager backbone, tiles of 512", t["eager"], "s")
    row("tiled 2000x1500", "restore path, merged adapter", t["fast"], "s", f"{r:.2f}x eager", ">= 2x", yes(r >= 2))


def engines_section(repeats: int) -> None:
    """ONNX Runtime and OpenVINO next to the restore path, on the same images (`restore --engine`)."""
    from colora.api.models import task_parts
    from colora.core.inference.engines import GRAPHS, build_graph, export_onnx, installed, load_engine, max_abs_error
    from colora.core.inference.tiles import restore_tensor

    engines = [e for e in GRAPHS if installed(e)]
    for e in set(GRAPHS) - set(engines):
        print(f"{e} is not installed (pip install -e '.[onnx,openvino]'): its rows are skipped", file=sys.stderr)
    if not engines:
        return
    store, backbone, _, _, fast_merged, adapter = models()
    _, deltas, _ = task_parts(store, adapter, backbone)
    x, big = torch.rand(3, 512, 512), torch.rand(3, 1500, 2000)
    work = Path(tempfile.mkdtemp(prefix="colora-engines-"))
    runners = {}
    for kind in ("plain", "fast"):
        export_onnx(build_graph(kind, backbone, deltas), work / f"{kind}.onnx")
        for e in engines:
            runners[e, kind] = load_engine(e, work / f"{kind}.onnx")
    shutil.rmtree(work, ignore_errors=True)
    probe = x[None]
    with torch.inference_mode():
        errors = {k: max_abs_error(r, fast_merged, probe) for k, r in runners.items()}
        arms = {"restore path": lambda: restore_tensor(fast_merged, x)}
        arms |= {k: (lambda r=r: restore_tensor(r, x)) for k, r in runners.items()}
        t = interleaved(arms, repeats)
        tiled = {"restore path": lambda: restore_tensor(fast_merged, big, 512)}
        tiled |= {e: (lambda r=runners[e, GRAPHS[e]]: restore_tensor(r, big, 512)) for e in engines}
        tt = interleaved(tiled, max(2, repeats // 2))
    s = "engines, forward 512²"
    row(s, "restore path (colora's FastNAFNet graph, PyTorch)", t["restore path"], "s")
    for (e, kind), runner in runners.items():
        r = t["restore path"] / t[e, kind]
        used = " (what --engine runs)" if GRAPHS[e] == kind else ""
        row(
            s,
            f"{e}, {kind} graph{used}",
            t[e, kind],
            "s",
            f"{r:.2f}x restore path; max err {errors[e, kind]:.1e}",
            "> 1x, err < 1e-4",
            yes(r > 1 and errors[e, kind] < 1e-4),
        )
    s = "engines, tiled 2000x1500"
    row(s, "restore path (colora's FastNAFNet graph, PyTorch)", tt["restore path"], "s")
    for e in engines:
        r = tt["restore path"] / tt[e]
        row(s, f"{e}, {GRAPHS[e]} graph, tiles of 512", tt[e], "s", f"{r:.2f}x restore path", "> 1x", yes(r > 1))


TORCH = ("--engine", "torch")  # the folder rows measure the pipeline around the same PyTorch compute as `bare`


def folder_section(repeats: int, n_images: int) -> None:
    from typer.testing import CliRunner

    from bench.zoo import HOME
    from colora.cli.main import app
    from colora.core.data.crops import load_pair
    from colora.core.inference.tiles import restore_tensor

    store, _, _, _, fast_merged, adapter = models()
    task = adapter.task.name
    src = sorted((DATA / "bsds500_pool" / "clean").iterdir())[:n_images]
    work = Path(tempfile.mkdtemp(prefix="colora-speed-"))
    folder = work / "in"
    folder.mkdir()
    for p in src:  # PNG, like most restoration inputs; ~481x321
        from PIL import Image

        Image.open(p).convert("RGB").save(folder / (p.stem + ".png"))
    tensors = [load_pair(str(p), str(p))[0] for p in sorted(folder.iterdir())]
    runner = CliRunner()
    pixels = sum(t.shape[1] * t.shape[2] for t in tensors)

    def bare():
        with torch.inference_mode():
            for x in tensors:
                restore_tensor(fast_merged, x)

    def e2e():
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        r = runner.invoke(app, ["restore", "--task", task, str(folder), "-o", str(out), "--home", str(HOME), *TORCH])
        assert r.exit_code == 0, r.stderr

    t = interleaved({"bare": bare, "e2e": e2e}, max(2, repeats // 2))
    r = t["bare"] / t["e2e"]
    s = f"folder of {len(tensors)} ({pixels / len(tensors) / 1e6:.2f} MP each)"
    row(s, "bare forward loop over decoded tensors", t["bare"], "s", f"{len(tensors) / t['bare']:.2f} img/s")
    row(
        s,
        "`colora restore` in-process (check, decode, infer, encode)",
        t["e2e"],
        "s",
        f"{len(tensors) / t['e2e']:.2f} img/s = {r:.2f}x bare",
        ">= 0.9x",
        yes(r >= 0.9),
    )
    env = dict(os.environ)
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "colora",
            "restore",
            "--task",
            task,
            str(folder),
            "-o",
            str(work / "out-cli"),
            "--home",
            str(HOME),
            *TORCH,
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    row(s, "`colora restore` as a command (incl. Python and torch start-up)", time.perf_counter() - t0, "s")
    shutil.rmtree(work, ignore_errors=True)


# ---------------------------------------------------------------- training


def _train_setup(arm: str):
    from bench.zoo import HOME
    from colora.api.models import backbone_model
    from colora.core.model.lora import inject_lora, lora_layers
    from colora.core.model.weights import read_adapter
    from colora.store.store import Store

    store = Store.open(HOME)
    adapter = store.zoo(store.backbone())[0]
    plan = read_adapter(store.path(adapter.path))[1].rank_plan  # a real CoLoRA plan (7 % budget)
    model = backbone_model(store, store.backbone()).train()
    if arm == "full":
        params = list(model.requires_grad_(True).parameters())
    elif arm in ("weight", "activation"):
        inject_lora(model, plan, mode=arm)
        params = [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]
    elif arm == "peft":
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=max(plan.values()),
            lora_alpha=max(plan.values()),
            target_modules=list(plan),
            rank_pattern=dict(plan),
            alpha_pattern=dict(plan),
            lora_dropout=0.0,
            bias="none",
        )
        model = get_peft_model(model, config)
        params = [p for p in model.parameters() if p.requires_grad]
    else:
        raise ValueError(arm)
    opt = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 96, 96, generator=gen), torch.rand(4, 3, 96, 96, generator=gen)
    # every arm in channels_last, as colora's `fit` trains (PEFT's too: the same net, the same format)
    model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)

    def step():
        loss = (model(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _status_kb(field: str) -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field + ":"))


def _memory_arm(arm: str, queue) -> None:
    """Peak resident memory of training steps above the process's state right before them.

    Linux: writing 5 to /proc/self/clear_refs resets the peak (VmHWM) to the current RSS, so the
    set-up's own transient peak (loading, copying) does not hide the steps' allocations.
    """
    import gc

    step = _train_setup(arm)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    for _ in range(5):
        step()
    queue.put((arm, (_status_kb("VmHWM") - before) / 1024))


def train_section(repeats: int) -> None:
    try:
        import peft  # noqa: F401

        arms = ["full", "weight", "activation", "peft"]
    except ImportError:
        arms = ["full", "weight", "activation"]
        print("peft is not installed (pip install -e '.[bench]'): the PEFT arm is skipped", file=sys.stderr)
    steps = {arm: _train_setup(arm) for arm in arms}
    t = interleaved(steps, repeats * 2)
    ctx = mp.get_context("spawn")
    peaks = {}
    for arm in arms:
        q = ctx.Queue()
        p = ctx.Process(target=_memory_arm, args=(arm, q))
        p.start()
        name, mb = q.get()
        p.join()
        peaks[name] = mb
    s = "train step (4 x 96², AdamW)"
    row(s, "full fine-tuning", t["full"], "s", f"peak +{peaks['full']:.0f} MB")
    if "peft" in t:
        row(
            s,
            "PEFT LoRA (same CoLoRA ranks)",
            t["peft"],
            "s",
            f"{t['peft'] / t['full']:.2f}x full; peak +{peaks['peft']:.0f} MB",
        )
    row(
        s,
        "colora LoRA, activation space",
        t["activation"],
        "s",
        f"{t['activation'] / t['full']:.2f}x full; peak +{peaks['activation']:.0f} MB",
    )
    w = t["weight"]
    row(
        s,
        "colora LoRA, weight space (the default)",
        w,
        "s",
        f"{w / t['full']:.2f}x full",
        "<= 0.9x full",
        yes(w / t["full"] <= 0.9),
    )
    if "peft" in t:
        row(
            s,
            "colora LoRA, weight space (the default)",
            w,
            "s",
            f"{w / t['peft']:.2f}x PEFT",
            "<= 0.7x PEFT",
            yes(w / t["peft"] <= 0.7),
        )
    m = peaks["weight"] / max(peaks["full"], 1e-9)
    row(
        s,
        "colora LoRA, weight space: peak memory",
        None,
        "",
        f"+{peaks['weight']:.0f} MB = {m:.2f}x full",
        "<= 0.6x full",
        yes(m <= 0.6),
    )


# ---------------------------------------------------------------- store


def store_section(repeats: int, n_tasks: int) -> None:
    from bench.zoo import HOME
    from colora.api.models import backbone_model, task_model
    from colora.store.store import NewPair, Store

    home = OUT / f"speed-store-{n_tasks}"
    if not (home / ".ready").exists():
        shutil.rmtree(home, ignore_errors=True)
        store = Store.create(home)
        zoo_store = Store.open(HOME)
        b = zoo_store.backbone()
        backbone = store.add_backbone(
            b.name,
            zoo_store.path(b.path),
            sha256=b.sha256,
            config=b.config,
            params=b.params,
            pretrained=True,
            description=b.description,
        )
        adapter_file = zoo_store.path(zoo_store.zoo(b)[0].path)
        for i in range(n_tasks):
            name = f"task-{i:04d}"
            pairs = [
                NewPair(
                    stem=f"{j:03d}",
                    split="train" if j else "val",
                    input_path=f"/data/{name}/in/{j}.png",
                    target_path=f"/data/{name}/gt/{j}.png",
                    width=480,
                    height=320,
                    input_sha256="0" * 64,
                    target_sha256="0" * 64,
                )
                for j in range(20)
            ]
            task = store.add_task(name, f"/data/{name}", pairs, val_folder=None, val_fraction=0.2, seed=0)
            rel = f"tasks/{name}/adapter-1.safetensors"
            store.path(rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(adapter_file, store.path(rel))  # same bytes, no extra disk
            adapter = store.add_adapter(task, backbone, rel, trainable_params=120_000, plan_method="faig", budget=0.07)
            store.record_eval(task, backbone, adapter, {"adapter": (27.0, 0.8, [["a", 27.0, 0.8]])})
        (home / ".ready").touch()
    cmd = [sys.executable, "-m", "colora", "list", "--home", str(home)]
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    t = statistics.median(times[1:])
    row(f"store with {n_tasks} tasks", "`colora list` (a fresh process)", t, "s", "", "< 0.3 s", yes(t < 0.3))
    py = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        py.append(time.perf_counter() - t0)
    row(f"store with {n_tasks} tasks", "(bare `python -c pass`, for scale)", statistics.median(py), "s")

    zoo_store = Store.open(HOME)
    adapters = zoo_store.zoo(zoo_store.backbone())
    backbone = backbone_model(zoo_store, zoo_store.backbone())
    for label, cached in (
        ("with the backbone loaded (a running process, `--task auto`)", backbone),
        ("reading the backbone too", None),
    ):
        task_model(zoo_store, adapters[0], cached)
        switch = []
        for i in range(max(6, repeats * 2)):
            t0 = time.perf_counter()
            task_model(zoo_store, adapters[i % len(adapters)], cached)
            switch.append(time.perf_counter() - t0)
        t = statistics.median(switch)
        row("task switch", f"load adapter + merge + inference graph, {label}", t, "s", "", "< 50 ms", yes(t < 0.05))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--only", default="forward,engines,folder,train,store")
    args = ap.parse_args()
    from bench.zoo import build_zoo

    build_zoo()
    sections = args.only.split(",")
    try:
        if "forward" in sections:
            forward_section(args.repeats)
        if "engines" in sections:
            engines_section(args.repeats)
        if "folder" in sections:
            folder_section(args.repeats, args.images)
        if "train" in sections:
            train_section(args.repeats)
        if "store" in sections:
            store_section(args.repeats, args.tasks)
    finally:
        report(args)


def report(args) -> None:
    print(
        f"\nbench/speed.py — {time.strftime('%Y-%m-%d')}, {machine()}, {torch.get_num_threads()} threads, "
        f"git {git_rev()}, medians of {args.repeats}\n"
    )
    print(markdown_table(["section", "arm", "median", "ratio / note", "target", "met"], ROWS))


if __name__ == "__main__":
    main()
