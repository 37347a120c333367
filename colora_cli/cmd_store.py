"""`colora init` and `colora list` (the latter must stay free of torch)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from colora_cli import output
from colora_cli.options import Home, Json

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.store import Store  # noqa: F401


def init(
    home: Home = None,
    random_init: Annotated[bool, typer.Option("--random-init", help="Install a randomly initialised backbone instead of the bundled pre-trained one.")] = False,
    config: Annotated[str, typer.Option("--config", help="Backbone size for --random-init: tiny, small or base.")] = "small",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random initialisation.")] = 0,
) -> None:
    """Create the store (database and folders) and install the default backbone.

    Example: colora init --home ~/colora-store
    """
    from colora_cli.backbones import install_bundled, install_random
    from core.model.backbone import PRESETS
    from core.model.bundled import bundled_backbone
    from core.errors import InvalidInputError
    from store.store import Store

    if config not in PRESETS:  # before anything is created
        raise InvalidInputError(f"unknown backbone config {config!r}; use one of {', '.join(PRESETS)}")
    store = Store.create(home)
    if store.default_backbone_name() is not None:
        b = store.backbone()
        output.note(f"Store already set up at {store.root} (default backbone '{b.name}': {b.label}).")
        return
    if random_init or bundled_backbone() is None:
        row = install_random(store, config, seed)
    else:
        row = install_bundled(store)
    output.note(f"Created the store at {store.root}")
    output.note(f"Default backbone '{row.name}': {row.label}, {output.human_count(row.params)} parameters.")
    output.note("Next: colora task add NAME FOLDER")


def list_tasks(home: Home = None, as_json: Json = False) -> None:
    """Every task with its pairs, adapter, size and last quality.

    Example: colora list --json
    """
    from store.summary import store_rows

    rows = store_rows(home)
    if as_json:
        output.print_json(rows)
        return
    if not rows:
        output.note("No tasks yet. Add one with `colora task add NAME FOLDER`.")
        return
    output.table(
        None,
        ["task", "pairs (train/val)", "adapter", "plan", "trainable", "% backbone (budget)", "size", "PSNR", "SSIM"],
        [[r["task"], f"{r['train_pairs']}/{r['val_pairs']}", r["adapter"], r["plan_method"],
          output.human_count(r["trainable_params"]), _percent(r), output.human_bytes(r["size_bytes"]), r["psnr"], r["ssim"]] for r in rows],
    )


def _percent(row: dict) -> str | None:
    if row["percent_of_backbone"] is None:
        return None
    budget = f" ({row['budget_percent']:g}%)" if row["budget_percent"] is not None else ""
    return f"{row['percent_of_backbone']:.2f}%{budget}"
