"""`colora compare`: one image restored by several tasks' adapters, side by side in one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from colora.cli import output
from colora.cli.options import Device, Home, MaxPixels, Tile, task_names
from colora.core.defaults import DEVICE, TILE


def compare(
    image: Annotated[Path, typer.Argument(help="The image to restore.")],
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Tasks whose adapters restore it, separated by commas.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The grid to write (a .png file).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the output file if it exists.")] = False,
    tile: Tile = TILE,
    max_pixels: MaxPixels = None,
    device: Device = DEVICE,
    home: Home = None,
) -> None:
    """Restore one image with several tasks' adapters: the input and one labelled tile per task in one grid PNG.

    Tiles keep the image's size, scaled down when its longest side is above 1024 px and up
    (nearest neighbour) when below 192 px; at most 4 tiles per row.

    Example: colora compare photo.png --tasks rain,noise,haze -o grid.png
    """
    from colora.api.compare import check_grid_output, compare_grid
    from colora.store.store import Store

    names = task_names(tasks, "--tasks")
    check_grid_output(image, out, overwrite)  # before the store is opened or any model loaded
    grid = compare_grid(
        Store.open(home),
        image,
        names,
        out,
        overwrite=overwrite,
        tile=tile,
        device=device,
        max_pixels=max_pixels,
        reporter=output.REPORTER,
    )
    output.note(f"Wrote {out} ({grid.width}x{grid.height} px): input, {', '.join(names)}.")
