"""`colora init` and `colora list` (the latter must stay free of torch)."""

from __future__ import annotations

from typing import Annotated

import typer

from colora.cli import output
from colora.cli.options import Home, Json, choice
from colora.core.choices import BACKBONE_SIZES
from colora.core.defaults import INIT_SIZE, SEED


def init(
    home: Home = None,
    random_init: Annotated[
        bool,
        typer.Option(
            "--random-init", help="Install a randomly initialised backbone instead of the bundled pre-trained one."
        ),
    ] = False,
    config: Annotated[
        choice(BACKBONE_SIZES), typer.Option("--config", help="Backbone size for --random-init.")
    ] = INIT_SIZE,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation.")] = SEED,
    starters: Annotated[
        bool,
        typer.Option(
            "--starters/--no-starters",
            help="With the bundled backbone, also install its starter adapters (tasks starter-noise, "
            "starter-rain, ...: restore with them at once; new tasks start from them).",
        ),
    ] = True,
) -> None:
    """Create the store (database and folders) with the default backbone and its starter adapters.

    Example: colora init --home ~/colora-store
    """
    from colora.api.backbones import init_store

    result = init_store(home, random_init=random_init, config=config, seed=seed, starters=starters)
    b = result.backbone
    if not result.created:
        output.note(f"Store already set up at {result.store.root} (default backbone '{b.name}': {b.label}).")
        from colora.api.starters import lacks_starters

        if starters and lacks_starters(result.store):
            output.note("It has no starter adapters: `colora adapter starters` adds them.")
        return
    output.note(f"Created the store at {result.store.root}")
    output.note(f"Default backbone '{b.name}': {b.label}, {output.human_count(b.params)} parameters.")
    for why in result.starters_skipped:
        output.note(f"Warning: {why}")
    if result.starters:
        first = result.starters[0]
        output.note(f"Starter adapters: {', '.join(result.starters)} (`colora restore --task {first} PHOTOS`).")
    output.note("Next: colora task add NAME FOLDER")


def list_tasks(home: Home = None, as_json: Json = False) -> None:
    """Every task with its pairs, adapter, size and last quality.

    Example: colora list --json
    """
    from colora.cli import listing
    from colora.store.summary import store_rows

    rows = store_rows(home)
    if as_json:
        output.print_json(rows)
    elif not rows:
        output.note(listing.EMPTY_NOTE)
    else:
        output.table(None, listing.COLUMNS, listing.cells(rows))
