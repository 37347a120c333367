"""`colora adapter export | import | starters`: adapters are portable safetensors files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from colora.cli import output
from colora.cli.options import Home, choice, command_group
from colora.core.choices import ADAPTER_FORMATS
from colora.core.defaults import ADAPTER_FORMAT

app = command_group("Share adapters: export and import them (colora or PEFT format); add the bundled starters.")


@app.command("export")
def export_adapter(
    task: Annotated[str, typer.Argument(help="Task name.")],
    file: Annotated[Path, typer.Argument(help="Destination: a .safetensors file, or a folder with --format peft.")],
    format: Annotated[
        choice(ADAPTER_FORMATS),
        typer.Option("--format", help="colora (one safetensors file) or peft (a Hugging Face PEFT LoRA folder)."),
    ] = ADAPTER_FORMAT,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    home: Home = None,
) -> None:
    """Copy a task's adapter out of the store (it carries its rank plan and backbone fingerprint).

    Example: colora adapter export rain rain-adapter.safetensors   (or rain-peft/ --format peft)
    """
    from colora.api.adapters import export_adapter as run_export
    from colora.store.store import Store

    adapter = run_export(Store.open(home), task, file, overwrite=overwrite, format=format)
    output.note(f"Exported the adapter of '{task}' to {file} ({format} format, backbone '{adapter.backbone.name}').")


@app.command("import")
def import_adapter(
    file: Annotated[Path, typer.Argument(help="An adapter .safetensors file, or a PEFT LoRA folder.")],
    task: Annotated[
        str, typer.Option("--task", "-t", help="Task to attach it to (created, without pairs, if missing).")
    ],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace the task's trained adapter (its file is removed).")
    ] = False,
    backbone: Annotated[
        str | None,
        typer.Option(
            "--backbone",
            help="For a PEFT adapter made outside colora: the backbone it was trained on (default: the store's).",
        ),
    ] = None,
    home: Home = None,
) -> None:
    """Add an adapter file or PEFT folder to a task, after checking its metadata, backbone, shapes and values.

    Example: colora adapter import rain-adapter.safetensors --task rain   (or a PEFT folder)
    """
    from colora.api.adapters import import_adapter as run_import
    from colora.store.names import validate_slug
    from colora.store.store import Store

    validate_slug(task)
    done = run_import(Store.open(home), file, task, replace=replace, backbone=backbone)
    output.note(
        f"Imported the adapter into task '{task}' (trained for '{done.meta.task}', backbone '{done.backbone.name}')."
    )


@app.command("starters")
def add_starters(home: Home = None) -> None:
    """Add the bundled starter adapters this store lacks (tasks starter-noise, starter-rain, ...).

    For a store made before they shipped, or after one was removed; it also gives a starter back
    the signature `restore --task auto` needs after `colora doctor --reindex`. Tasks already there
    are left as they are.

    Example: colora adapter starters
    """
    from colora.api.starters import add_starters as run_add
    from colora.store.store import Store

    report = run_add(Store.open(home))
    if report.backbone_added and report.backbone_is_default:
        output.note(f"Added backbone '{report.backbone_added}' (the one the starters were trained on) as the default.")
    elif report.backbone_added:
        output.note(
            f"Added backbone '{report.backbone_added}', the one the starters were trained on, beside the default: "
            f"`colora backbone default {report.backbone_added}` lets new tasks and `--task auto` use the starters."
        )
    for why in report.problems:
        output.note(f"Warning: {why}")
    if report.installed:
        output.note(f"Added {', '.join(report.installed)} (`colora restore --task {report.installed[0]} PHOTOS`).")
    if report.signatures:
        output.note(f"Restored the signature of {', '.join(report.signatures)} for `restore --task auto`.")
    if untouched := [t for t in report.present if t not in report.signatures]:
        output.note(f"Already in the store, left as they are: {', '.join(untouched)}.")
    for task in report.taken:
        output.note(
            f"Task '{task}' is not the bundled starter (another adapter, or none): left as it is, the starter "
            f"not added (`colora task rm {task} --yes`, then run this again, to have it)."
        )
    if report.problems and not (report.installed or report.signatures):
        raise typer.Exit(1)
