"""`colora compare`: one image restored by several tasks' adapters, side by side in one PNG."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from colora_cli import output
from colora_cli.options import Device, Home, Tile
from core.errors import ConflictError, InvalidInputError, NotFoundError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from store.store import Store  # noqa: F401


def task_list(value: str, option: str) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c']; empty items and repeats are refused."""
    names = [n.strip() for n in value.split(",")]
    if not names or any(not n for n in names):
        raise InvalidInputError(f"{option} takes task names separated by commas, got {value!r}",
                                hint=f"for example {option} rain,noise")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(f"{option} lists {', '.join(repeated)} more than once")
    return names


def require_adapters(store: Store, names: list[str], option: str) -> list:
    """The adapter row of every named task; unknown tasks and tasks without one are refused."""
    adapters = []
    for name in names:
        adapter = store.adapter(store.task(name))
        if adapter is None:
            raise NotFoundError(f"task '{name}' has no adapter yet",
                                hint=f"train it with `colora train {name}`, or leave it out of {option}")
        adapters.append(adapter)
    return adapters


def compare(
    image: Annotated[Path, typer.Argument(help="The image to restore.")],
    tasks: Annotated[str, typer.Option("--tasks", "-t", help="Tasks whose adapters restore it, separated by commas.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The grid to write (a .png file).")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the output file if it exists.")] = False,
    tile: Tile = 512,
    device: Device = "auto",
    home: Home = None,
) -> None:
    """Restore one image with several tasks' adapters: the input and one labelled tile per task in one grid PNG.

    Tiles keep the image's size, scaled down when its longest side is above 1024 px and up
    (nearest neighbour) when below 192 px; at most 4 tiles per row.

    Example: colora compare photo.png --tasks rain,noise,haze -o grid.png
    """
    from colora_cli.loading import load_store_adapter
    from core.device import resolve_device
    from core.data.images import load_image, read_image_size
    from core.report.examples import restore_rgb
    from core.report.grid import write_grid
    from store.store import Store

    names = task_list(tasks, "--tasks")
    if out.suffix.lower() != ".png":
        raise InvalidInputError(f"the grid is written as PNG, but {out} does not end in .png", hint="name it e.g. grid.png")
    if out.exists() and out.is_dir():
        raise ConflictError(f"{out} is a folder", hint="give a file name with -o, e.g. grid.png")
    if out.exists() and out.resolve() == image.resolve():
        raise InvalidInputError(f"refusing to overwrite the input {image}", hint="choose another file with -o")
    if out.exists() and not overwrite:
        raise ConflictError(f"{out} already exists", hint="pass --overwrite to replace it, or choose another -o")
    read_image_size(image)  # a missing or unreadable image is refused before any model is loaded
    store = Store.open(home)
    adapters = require_adapters(store, names, "--tasks")
    dev = resolve_device(device)
    rgb, _, _ = load_image(image)
    tiles = [("input", rgb)]
    with output.progress("compare", len(names)) as update:
        for i, (name, adapter) in enumerate(zip(names, adapters)):
            _, model = load_store_adapter(store, adapter)
            tiles.append((name, restore_rgb(model, rgb, tile=tile, device=dev)))
            del model
            update(i + 1)
    width, height = write_grid(out, tiles, overwrite=overwrite)
    output.note(f"Wrote {out} ({width}x{height} px): input, {', '.join(names)}.")
