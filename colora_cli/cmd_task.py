"""`colora task add | show | rm`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from colora_cli import output
from colora_cli.options import Home, Json
from core.errors import InvalidInputError
from store.names import validate_slug

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.store import NewPair, Store  # noqa: F401

app = typer.Typer(help="Register, inspect and remove tasks (folders of degraded/clean pairs).", no_args_is_help=True)


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Task name: lowercase letters, digits, '-' and '_'.")],
    folder: Annotated[Path, typer.Argument(help="Folder with a degraded subfolder (input, lq, rain, ...) and a clean one (target, gt, ...).")],
    val_fraction: Annotated[Optional[float], typer.Option("--val-fraction", help="Share of pairs held out for validation [default: 0.2].")] = None,
    val: Annotated[Optional[Path], typer.Option("--val", help="A separate folder of validation pairs (then every pair in FOLDER trains).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/validation split.")] = 0,
    home: Home = None,
) -> None:
    """Register a folder of (degraded, clean) image pairs as a task.

    Example: colora task add rain ./pairs --val-fraction 0.2
    """
    from core.data.pairs import find_pairs, split_pairs
    from store.store import NewPair, Store

    if val is not None and val_fraction is not None:
        raise typer.BadParameter("use either --val or --val-fraction, not both", param_hint="--val")
    validate_slug(name)
    store = Store.open(home)
    store.ensure_task_absent(name)
    records = find_pairs(folder)  # validates every file before anything is written
    if val is not None:
        val_records = find_pairs(val)
        splits = [(r, "train") for r in records] + [(r, "val") for r in val_records]
    else:
        fraction = 0.2 if val_fraction is None else val_fraction
        split = split_pairs([r.stem for r in records], fraction, seed)
        splits = [(r, split[r.stem]) for r in records]
    pairs = [NewPair(stem=r.stem, split=s, input_path=r.input_path, target_path=r.target_path, width=r.width,
                     height=r.height, input_sha256=r.input_sha256, target_sha256=r.target_sha256) for r, s in splits]
    store.add_task(name, str(Path(folder).resolve()), pairs, val_folder=str(val.resolve()) if val else None,
                   val_fraction=None if val else (0.2 if val_fraction is None else val_fraction), seed=seed)
    n_train = sum(1 for _, s in splits if s == "train")
    output.note(f"Added task '{name}': {n_train} training and {len(splits) - n_train} validation pairs.")
    output.note(f"Next: colora train {name}")


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Task name.")],
    home: Home = None,
    as_json: Json = False,
) -> None:
    """Details of one task: pairs, split, files check, rank plan, adapter, last run and eval.

    Example: colora task show rain
    """
    from colora_cli.manifest import manifest_changes
    from store.store import Store

    store = Store.open(home)
    task = store.task(name)
    pairs = store.pairs(task)
    adapter = store.adapter(task)
    run = store.last_run(task)
    changes = manifest_changes(pairs)
    evals = {s: store.last_eval(task, s) for s in ("input", "backbone", "adapter")}
    info = {
        "task": task.name,
        "folder": task.folder,
        "val_folder": task.val_folder,
        "train_pairs": sum(p.split == "train" for p in pairs),
        "val_pairs": sum(p.split == "val" for p in pairs),
        "split": f"seed {task.split_seed}, val fraction {task.val_fraction}" if task.val_folder is None else "separate folder",
        "files": "unchanged since task add" if not changes else f"{len(changes)} changed: " + "; ".join(changes[:5]),
        "rank_plan": f"{task.rank_plan_method}, {len(task.plan())} layers" if task.plan() else None,
        "adapter": None if adapter is None else {
            "file": adapter.path, "size_bytes": adapter.size_bytes, "trainable_params": adapter.trainable_params,
            "percent_of_backbone": round(100 * adapter.trainable_params / adapter.backbone_params, 2),
            "plan_method": adapter.plan_method, "backbone": adapter.backbone.name, "created": adapter.created_at},
        "last_run": None if run is None else {
            "status": run.status, "steps": run.steps_done,
            "wall_time_s": round(run.wall_time_s, 1) if run.wall_time_s is not None else None,
            "final_loss": json.loads(run.loss_curve)[-1][1] if run.loss_curve else None},
        "eval": {s: {"psnr": round(e.psnr, 3), "ssim": round(e.ssim, 4), "pairs": e.n_pairs} for s, e in evals.items() if e},
        "created": task.created_at,
    }
    if as_json:
        info["pairs"] = {split: [p.stem for p in pairs if p.split == split] for split in ("train", "val")}
        output.print_json(info)
        return
    rows = []
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or None
        rows.append([key, value])
    output.table(f"task {task.name}", ["field", "value"], rows, justify_numbers=False)


@app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="Task name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    home: Home = None,
) -> None:
    """Remove a task, its adapter, runs and evaluations (your image files are not touched).

    Example: colora task rm rain --yes
    """
    from store.store import Store
    store = Store.open(home)
    task = store.task(name)
    if not yes and not typer.confirm(f"Remove task '{task.name}' with its adapter and results?", default=False, err=True):
        raise InvalidInputError("not removed", hint=f"pass --yes to remove '{name}' without asking")
    store.remove_task(name)
    output.note(f"Removed task '{name}'.")
