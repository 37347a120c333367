"""`colora task add | show | rm`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from colora.cli import output
from colora.cli.options import Home, Json, command_group
from colora.core.defaults import SEED, VAL_FRACTION
from colora.core.errors import InvalidInputError

app = command_group("Register, inspect and remove tasks (folders of degraded/clean pairs).")


@app.command("add")
def add(
    name: Annotated[str, typer.Argument(help="Task name: lowercase letters, digits, '-' and '_'.")],
    folder: Annotated[
        Path,
        typer.Argument(
            help="Folder with a degraded subfolder (input, lq, rain, ...) and a clean one (target, gt, ...)."
        ),
    ],
    val_fraction: Annotated[
        Optional[float],
        typer.Option("--val-fraction", help=f"Share of pairs held out for validation [default: {VAL_FRACTION}]."),
    ] = None,
    val: Annotated[
        Optional[Path],
        typer.Option("--val", help="A separate folder of validation pairs (then every pair in FOLDER trains)."),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the train/validation split.")] = SEED,
    home: Home = None,
) -> None:
    """Register a folder of (degraded, clean) image pairs as a task.

    Example: colora task add rain ./pairs --val-fraction 0.2
    """
    from colora.api.tasks import add_task
    from colora.store.names import validate_slug
    from colora.store.store import Store

    if val is not None and val_fraction is not None:
        raise typer.BadParameter("use either --val or --val-fraction, not both", param_hint="--val")
    validate_slug(name)
    added = add_task(Store.open(home), name, folder, val_fraction=val_fraction, val=val, seed=seed)
    output.note(f"Added task '{name}': {added.train_pairs} training and {added.val_pairs} validation pairs.")
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
    from colora.api.tasks import task_details
    from colora.store.store import Store

    info = task_details(Store.open(home), name)
    if as_json:
        output.print_json(info)
        return
    info.pop("pairs")
    rows = [
        [key, (", ".join(f"{k}: {v}" for k, v in value.items()) or None) if isinstance(value, dict) else value]
        for key, value in info.items()
    ]
    output.table(f"task {info['task']}", ["field", "value"], rows, justify_numbers=False)


@app.command("rm")
def rm(
    name: Annotated[str, typer.Argument(help="Task name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    home: Home = None,
) -> None:
    """Remove a task, its adapter, runs and evaluations (your image files are not touched).

    Example: colora task rm rain --yes
    """
    from colora.api.tasks import remove_task
    from colora.store.store import Store

    store = Store.open(home)
    task = store.task(name)
    if not yes and not _confirmed(f"Remove task '{task.name}' with its adapter and results?"):
        raise InvalidInputError("not removed", hint=f"pass --yes to remove '{name}' without asking")
    remove_task(store, name)
    output.note(f"Removed task '{name}'.")


def _confirmed(question: str) -> bool:
    """A yes/no answer on stderr; no answer at all (stdin closed, not a terminal) is a no."""
    try:
        return typer.confirm(question, default=False, err=True)
    except typer.Abort:
        typer.echo(err=True)  # end the prompt's line
        return False
