"""`colora adapt` and `colora recycle ...`: a task's adapter from the zoo, with no gradient training."""
from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from colora_cli import output
from colora_cli.options import Home
from core.errors import ColoraError, ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.store import Store  # noqa: F401

app = typer.Typer(help="LoRA Recycle: reuse the zoo of stored adapters for new tasks.", no_args_is_help=True)


def adapt(
    name: Annotated[str, typer.Argument(help="Task to build an adapter for (its training pairs are the K examples).")],
    meta: Annotated[bool, typer.Option("--meta", help="Predict the mixture with the distilled meta-adapter in one forward pass (see `colora recycle distill`).")] = False,
    per_stage: Annotated[bool, typer.Option("--per-stage", help="One coefficient per adapter and network stage instead of per adapter.")] = False,
    pairs: Annotated[int, typer.Option("--pairs", min=1, help="Use at most this many training pairs.")] = 32,
    steps: Annotated[Optional[int], typer.Option("--steps", min=0, help="Gradient steps refining the coefficients after the closed form [default: 0, or 20 with --per-stage].")] = None,
    seconds: Annotated[float, typer.Option("--seconds", min=0.0, help="Stop refining after this many seconds.")] = 10.0,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the crops the coefficients are fitted on.")] = 0,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the task's trained adapter.")] = False,
    home: Home = None,
) -> None:
    """Build a task's adapter from the other tasks' adapters, fitted on its few pairs; no training.

    Example: colora adapt fog   (after `colora task add fog ./four-pairs`)
    """
    import torch

    from colora_cli.loading import load_store_backbone
    from colora_cli.recycling import (
        check_k,
        load_meta_for,
        load_zoo,
        recycled_relpath,
        task_pairs,
    )
    from core.model.lora import lora_parameter_count
    from core.recycle.meta import predict
    from core.recycle.mixture import bake, fit_mixture
    from core.model.weights import AdapterMeta, save_tensors_atomic
    from store.store import Store

    if meta and per_stage:
        raise InvalidInputError("--meta predicts per-adapter coefficients; --per-stage applies to the fitted mixture only",
                                hint="drop one of the two options")
    steps = (20 if per_stage else 0) if steps is None else steps
    started = time.perf_counter()
    store = Store.open(home)
    task = store.task(name)
    current = store.adapter(task)
    if current is not None and not current.recycled and not replace:
        raise ConflictError(f"task '{name}' already has a trained adapter",
                            hint=f"pass --replace to replace it with a recycled one, or `colora eval {name}` to use it")
    backbone_row = store.backbone()
    backbone = load_store_backbone(store, backbone_row).eval()
    examples = task_pairs(store, task, "train", pairs)
    check_k(examples, name)
    zoo_rows, zoo = load_zoo(store, backbone_row, backbone, exclude=name)
    torch.manual_seed(seed)
    if meta:
        net, names, mask = load_meta_for(store, backbone_row, zoo_rows, name)
        by_name = {z.name: z for z in zoo}
        zoo = [by_name[n] for n in names if n in by_name]
        keep = torch.tensor([n in by_name for n in names])
        mixture = predict(net, backbone, names, examples, mask)
        mixture.names, mixture.coef = [n for n in names if n in by_name], mixture.coef[keep]
        method = "recycled-meta"
    else:
        output.note(f"Fitting a mixture of {len(zoo)} adapters on {len(examples)} pair(s) ...")
        with output.progress("refine", steps) if steps else nullcontext(lambda done: None) as update:
            mixture = fit_mixture(backbone, zoo, examples, per_stage=per_stage, steps=steps, seconds=seconds,
                                  seed=seed, on_step=lambda done, total: update(done))
        method = "recycled-mixture"
    if not bool((mixture.coef != 0).any()):
        raise ColoraError(f"no mixture of the {len(zoo)} zoo adapter(s) beats the backbone alone on the "
                          f"{len(examples)} example pair(s) of '{name}'; no adapter was made",
                          hint=f"train one with `colora train {name}`, or add pairs and adapt again")
    tensors, plan = bake(backbone, zoo, mixture)
    shas = {r.task.name: r.file_sha256 for r in zoo_rows}
    meta_row = AdapterMeta(
        task=name, backbone_sha256=backbone_row.sha256, rank_plan=plan, alpha=None, lora_mode="weight",
        plan_method=method, trained="nothing: a baked mixture of zoo adapters", recycled=True,
        extra={"mixture": mixture.as_dict(), "k": len(examples),
               "zoo": [{"task": n, "file_sha256": shas[n]} for n in mixture.names],
               "seconds": round(time.perf_counter() - started, 2)},
    )
    rel = recycled_relpath(task)
    save_tensors_atomic(store.path(rel), tensors, meta_row.to_metadata())
    trainable = lora_parameter_count(backbone, plan)
    store.add_adapter(task, backbone_row, rel, trainable_params=trainable, rank_plan=plan, plan_method=method,
                      budget=None, recycled=True)
    rows = [[n, *[f"{float(c):+.3f}" for c in row]] for n, row in zip(mixture.names, mixture.coef)]
    output.table(f"Mixture for '{name}'", ["adapter", *mixture.groups], rows)
    fit = mixture.info
    if fit.get("support_mse") is not None:
        import math

        before, after = (10 * math.log10(1 / max(fit[k], 1e-12)) for k in ("support_mse_backbone", "support_mse"))
        output.note(f"Fit on {len(examples)} pair(s): support PSNR {before:.2f} -> {after:.2f} dB (crops, backbone -> mixture).")
    output.note(f"Recycled adapter for '{name}' from {len(mixture.names)} adapter(s) in {time.perf_counter() - started:.1f} s "
                f"({method.split('-')[1]}); {output.human_count(trainable)} parameters, "
                f"{output.human_bytes(store.path(rel).stat().st_size)}.")
    output.note(f"Next: colora eval {name}")


@app.command("distill")
def distill(
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training episodes.")] = 400,
    clean: Annotated[Optional[Path], typer.Option("--clean", help="Folder of clean images for the surrogate episodes (default: the clean targets of the store's tasks).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the episodes and the network.")] = 0,
    home: Home = None,
) -> None:
    """Distil the meta-adapter of the current zoo (offline, once per zoo), for `colora adapt NAME --meta`.

    Example: colora recycle distill --steps 400
    """
    from colora_cli.loading import load_store_backbone
    from colora_cli.recycling import load_zoo, save_meta
    from core.recycle.meta import distill as run_distill
    from store.store import Store

    store = Store.open(home)
    backbone_row = store.backbone()
    backbone = load_store_backbone(store, backbone_row).eval()
    zoo_rows, zoo = load_zoo(store, backbone_row, backbone)
    images = _clean_images(store, clean)
    output.note(f"Distilling a meta-adapter for {len(zoo)} adapters ({', '.join(z.name for z in zoo)}) "
                f"on {len(images)} clean image(s), {steps} episodes.")
    started = time.perf_counter()
    with output.progress("distill", steps, loss=True) as update:
        net, curve = run_distill(backbone, zoo, images, steps=steps, seed=seed,
                                 on_step=lambda done, total, loss: update(done, loss))
    save_meta(store, backbone_row, net, zoo_rows, steps, curve)
    output.note(f"Meta-adapter distilled in {time.perf_counter() - started:.0f} s. Next: colora adapt NAME --meta")


MAX_CLEAN = 64


def _clean_images(store: Store, folder: Path | None):
    """Up to MAX_CLEAN clean images as (3, H, W) tensors."""
    from core.data.crops import to_tensor
    from core.data.images import is_image_file, load_image

    if folder is not None:
        if not folder.is_dir():
            raise NotFoundError(f"clean-image folder not found: {folder}", hint="give a folder of clean photos")
        paths = sorted(p for p in folder.iterdir() if is_image_file(p) and p.is_file())
    else:
        paths = []
        for task in store.tasks():
            paths += [Path(p.target_path) for p in store.pairs(task, "train")]
    paths = paths[:MAX_CLEAN]
    if not paths:
        raise InvalidInputError("no clean images for the surrogate episodes",
                                hint="pass --clean FOLDER, or add tasks with pairs first")
    return [to_tensor(load_image(p)[0]) for p in paths]


@app.command("show")
def show(home: Home = None, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The distilled meta-adapter, and whether the zoo still matches it.

    Example: colora recycle show
    """
    from colora_cli.recycling import meta_record
    from store.store import Store

    store = Store.open(home)
    record = meta_record(store)
    if record is None:
        raise NotFoundError("no meta-adapter yet", hint="distill one with `colora recycle distill`")
    backbone_row = store.backbone()
    current = {r.task.name: r.file_sha256 for r in store.zoo(backbone_row)}
    stale = record["backbone_sha256"] != backbone_row.sha256 or current != {z["task"]: z["file_sha256"] for z in record["zoo"]}
    record = {**record, "up_to_date": not stale}
    if as_json:
        output.print_json(record)
        return
    output.table("Meta-adapter", ["zoo", "episodes", "final loss", "created", "up to date"],
                 [[", ".join(z["task"] for z in record["zoo"]), record["steps"], f"{record['final_loss']:.5f}",
                   record["created"], "yes" if not stale else "no: run `colora recycle distill`"]])
