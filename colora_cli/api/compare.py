"""One image restored by several tasks' adapters, side by side in one labelled grid PNG."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from colora.api.progress import SILENT, Reporter
from colora.core.defaults import DEVICE, TILE
from colora.core.errors import ConflictError, InvalidInputError

if TYPE_CHECKING:  # the store pulls in SQLAlchemy: imported where used, so `colora list` starts fast
    from colora.store.store import Store


@dataclass
class Grid:
    path: Path
    width: int
    height: int


def check_grid_output(image: Path, out: Path, overwrite: bool) -> None:
    """Refuse an output the grid may not take, before any model is loaded."""
    if out.suffix.lower() != ".png":
        raise InvalidInputError(
            f"the grid is written as PNG, but {out} does not end in .png", hint="name it e.g. grid.png"
        )
    if out.exists() and out.is_dir():
        raise ConflictError(f"{out} is a folder", hint="give a file name with -o, e.g. grid.png")
    if out.exists() and out.resolve() == image.resolve():
        raise InvalidInputError(f"refusing to overwrite the input {image}", hint="choose another file with -o")
    if out.exists() and not overwrite:
        raise ConflictError(f"{out} already exists", hint="pass --overwrite to replace it, or choose another -o")


def compare_grid(
    store: Store,
    image: Path,
    tasks: list[str],
    out: Path,
    *,
    overwrite: bool = False,
    tile: int = TILE,
    device: str = DEVICE,
    max_pixels: int | None = None,
    reporter: Reporter = SILENT,
) -> Grid:
    """Restore `image` with each task's adapter; write the input and one tile per task into `out`."""
    from colora.api.models import task_model
    from colora.api.tasks import require_adapters
    from colora.core.data.images import load_image, read_image_size
    from colora.core.device import resolve_device
    from colora.core.inference.tiles import restore_array
    from colora.core.report.grid import write_grid

    check_grid_output(image, out, overwrite)
    store.refuse_inside(out, "the grid")
    read_image_size(image, max_pixels)  # a missing, unreadable or huge image is refused before any model is loaded
    adapters = require_adapters(store, tasks, "--tasks")
    dev = resolve_device(device)
    rgb, _, _ = load_image(image, max_pixels)
    tiles = [("input", rgb)]
    with reporter.progress("compare", len(tasks)) as update:
        for i, (name, adapter) in enumerate(zip(tasks, adapters)):
            model, _ = task_model(store, adapter)
            tiles.append((name, restore_array(model.to(dev), rgb, tile)))
            del model
            update(i + 1)
    width, height = write_grid(out, tiles, overwrite=overwrite)
    return Grid(out, width, height)
