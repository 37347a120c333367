"""Tasks: registering folders of pairs, describing them, checking their files, removing them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from colora.core.defaults import SEED, VAL_FRACTION
from colora.core.errors import IntegrityError, InvalidInputError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.store.schema import Pair, Task
    from colora.store.store import Store

DEFAULT_VAL_FRACTION = VAL_FRACTION


@dataclass
class AddedTask:
    task: Task
    train_pairs: int
    val_pairs: int


def add_task(
    store: Store,
    name: str,
    folder: str | Path,
    *,
    val_fraction: float | None = None,
    val: str | Path | None = None,
    seed: int = SEED,
) -> AddedTask:
    """Register FOLDER's pairs as task NAME, split into training and validation pairs.

    Every file is checked before anything is written. With `val`, every pair in `folder` trains
    and `val`'s pairs validate; otherwise a seeded share `val_fraction` (default 0.2) validates.
    """
    from colora.core.data.pairs import find_pairs, split_pairs
    from colora.store.names import validate_slug
    from colora.store.store import NewPair

    if val is not None and val_fraction is not None:
        raise InvalidInputError("use either --val or --val-fraction, not both")
    validate_slug(name)
    store.ensure_task_absent(name)
    records = find_pairs(folder)  # validates every file before anything is written
    if val is not None:
        val_records = find_pairs(val)
        _refuse_overlap(records, val_records)
        splits = [(r, "train") for r in records] + [(r, "val") for r in val_records]
    else:
        fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
        split = split_pairs([r.stem for r in records], fraction, seed)
        splits = [(r, split[r.stem]) for r in records]
    pairs = [
        NewPair(
            stem=r.stem,
            split=s,
            input_path=r.input_path,
            target_path=r.target_path,
            width=r.width,
            height=r.height,
            input_sha256=r.input_sha256,
            target_sha256=r.target_sha256,
        )
        for r, s in splits
    ]
    task = store.add_task(
        name,
        str(Path(folder).resolve()),
        pairs,
        val_folder=str(Path(val).resolve()) if val else None,
        val_fraction=None if val else (DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction),
        seed=seed,
    )
    n_train = sum(1 for _, s in splits if s == "train")
    return AddedTask(task, n_train, len(splits) - n_train)


def _refuse_overlap(train: list, val: list) -> None:
    """Validation pairs must not be training pairs (the same files, or the same images under other names)."""
    seen = {Path(p).resolve() for r in train for p in (r.input_path, r.target_path)}
    seen_pairs = {(r.input_sha256, r.target_sha256) for r in train}
    shared = [
        r.stem
        for r in val
        if Path(r.input_path).resolve() in seen
        or Path(r.target_path).resolve() in seen
        or (r.input_sha256, r.target_sha256) in seen_pairs
    ]
    if shared:
        raise InvalidInputError(
            f"{len(shared)} validation pair(s) are also training pairs (e.g. {shared[0]}): "
            "scores on them would not tell how the adapter does on new images",
            hint="give --val a folder of other pairs, or use --val-fraction",
        )


def task_details(store: Store, name: str) -> dict:
    """One task as plain data: pairs, split, files check, rank plan, adapter, last run and eval."""
    task = store.task(name)
    pairs = store.pairs(task)
    adapter = store.adapter(task)
    run = store.last_run(task)
    changes = manifest_changes(pairs)
    evals = {s: store.last_eval(task, s) for s in ("input", "backbone", "adapter")}
    plan = task.plan()
    return {
        "task": task.name,
        "folder": task.folder,
        "val_folder": task.val_folder,
        "train_pairs": sum(p.split == "train" for p in pairs),
        "val_pairs": sum(p.split == "val" for p in pairs),
        "split": f"seed {task.split_seed}, val fraction {task.val_fraction}"
        if task.val_folder is None
        else "separate folder",
        "files": "unchanged since task add" if not changes else f"{len(changes)} changed: " + "; ".join(changes[:5]),
        "rank_plan": f"{task.rank_plan_method}, {len(plan)} layers" if plan else None,
        "adapter": None
        if adapter is None
        else {
            "file": adapter.path,
            "size_bytes": adapter.size_bytes,
            "trainable_params": adapter.trainable_params,
            "percent_of_backbone": round(100 * adapter.trainable_params / adapter.backbone_params, 2),
            "plan_method": adapter.plan_method,
            "backbone": adapter.backbone.name,
            "created": adapter.created_at,
        },
        "last_run": None
        if run is None
        else {
            "status": str(run.status),
            "steps": run.steps_done,
            "wall_time_s": round(run.wall_time_s, 1) if run.wall_time_s is not None else None,
            "final_loss": json.loads(run.loss_curve)[-1][1] if run.loss_curve else None,
        },
        "eval": {
            s: {"psnr": round(e.psnr, 3), "ssim": round(e.ssim, 4), "pairs": e.n_pairs} for s, e in evals.items() if e
        },
        "created": task.created_at,
        "pairs": {split: [p.stem for p in pairs if p.split == split] for split in ("train", "val")},
    }


def remove_task(store: Store, name: str) -> None:
    """The task, its adapter, runs and evaluations; the user's image files are not touched."""
    store.remove_task(name)


def require_adapters(store: Store, names: list[str], option: str) -> list:
    """The adapter row of every named task; unknown tasks and tasks without one are refused."""
    from colora.core.errors import NotFoundError

    adapters = []
    for name in names:
        adapter = store.adapter(store.task(name))
        if adapter is None:
            raise NotFoundError(
                f"task '{name}' has no adapter yet",
                hint=f"train it with `colora train {name}`, or leave it out of {option}",
            )
        adapters.append(adapter)
    return adapters


# ---------------------------------------------------------------- the manifest: files as they were added


def manifest_changes(pairs: list[Pair]) -> list[str]:
    """One line per pair file that is missing or whose content changed since `task add`."""
    from colora.core.files import sha256_file

    changes = []
    for p in pairs:
        for role, path, digest in (("input", p.input_path, p.input_sha256), ("target", p.target_path, p.target_sha256)):
            f = Path(path)
            if not f.is_file():
                changes.append(f"missing {role} {f.name}")
            elif sha256_file(f) != digest:
                changes.append(f"changed {role} {f.name}")
    return changes


def require_unchanged(task_name: str, pairs: list[Pair]) -> None:
    changes = manifest_changes(pairs)
    if changes:
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise IntegrityError(
            f"{len(changes)} file(s) of task '{task_name}' changed since it was added: {shown}",
            hint=f"restore the files, or re-register them: `colora task rm {task_name} --yes` then "
            f"`colora task add {task_name} FOLDER`",
        )


def checked_pairs(store: Store, task: Task, split: str, limit: int | None = None) -> list[Pair]:
    """A task's pairs of one split (the first `limit`), refused if their files changed since `task add`."""
    rows = store.pairs(task, split)
    rows = rows[:limit] if limit else rows
    require_unchanged(task.name, rows)
    return rows


def pair_tensors(store: Store, task: Task, split: str = "train", limit: int | None = None) -> list:
    """(input, target) tensors of a task's pairs, checked unchanged since `task add`."""
    from colora.core.data.crops import load_pair

    return [load_pair(p.input_path, p.target_path) for p in checked_pairs(store, task, split, limit)]
