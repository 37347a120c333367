"""`colora restore`."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from colora_cli import output
from colora_cli.options import Device, Home, MaxPixels, Tile
from core.errors import InvalidInputError


def restore(
    inputs: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    task: Annotated[str, typer.Option("--task", "-t", help="Task whose adapter restores the images; `auto` picks, per image, the adapter whose training inputs look most alike.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder (created if missing).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files in the output folder.")] = False,
    tile: Tile = 512,
    max_pixels: MaxPixels = None,
    device: Device = "auto",
    home: Home = None,
) -> None:
    """Restore images with a task's adapter; results keep their names and formats.

    Example: colora restore --task rain photos/ extra.jpg -o restored/   (or --task auto)
    """
    from colora_cli.api.restoring import restore_images
    from store.store import Store

    done = restore_images(Store.open(home), task, inputs, out_dir, overwrite=overwrite, tile=tile, device=device,
                          max_pixels=max_pixels, reporter=output.REPORTER)
    if done.choices:
        output.table("Adapters chosen (--task auto)", ["image", "task", "distance", "next best"],
                     [[c.image, c.task + (" (far)" if c.far else ""), f"{c.distance:.2f}", c.runner_up] for c in done.choices])
        if any(c.far for c in done.choices):
            output.note("Images marked (far) resemble no task's training inputs closely; for a new degradation, "
                        "`colora task add NAME FOLDER` with a few pairs and `colora adapt NAME`.")
    output.note(f"Restored {done.restored} image(s) into {out_dir}")
    if done.failed:
        msgs = [f"{src.name} ({msg})" for src, msg in done.failed]
        raise InvalidInputError(f"{len(done.failed)} of {done.jobs} image(s) could not be restored: " + "; ".join(msgs[:3])
                                + (f"; and {len(done.failed) - 3} more" if len(done.failed) > 3 else ""),
                                hint="fix or remove those files and restore them again")
