"""The comparison grid (`colora compare`): the input and one labelled tile per task in one PNG.

Tiles are shown at their own size, scaled down when the image's longest side is above
GRID_MAX_SIDE and up (by a whole factor, nearest neighbour) when it is below GRID_MIN_SIDE;
each tile's label sits on a band above it, in Pillow's default font.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from colora.core.errors import ConflictError, InvalidInputError
from colora.core.files import atomic_write
from colora.core.report.images import to_uint8

GRID_MAX_SIDE = 1024
GRID_MIN_SIDE = 192
GRID_COLUMNS = 4
GRID_GAP = 8
GRID_BAND = 24
GRID_BACKGROUND = (255, 255, 255)
GRID_INK = (20, 20, 20)


def grid_layout(width: int, height: int, n_tiles: int) -> dict:
    """Geometry of a grid of n_tiles images of width x height: tile size, columns, rows,
    the grid's size and each tile's image box (x, y) (its label band is the GRID_BAND px above)."""
    if n_tiles < 1:
        raise InvalidInputError("a grid needs at least one tile")
    longest = max(width, height)
    if longest > GRID_MAX_SIDE:
        scale = GRID_MAX_SIDE / longest
        tw, th = max(1, round(width * scale)), max(1, round(height * scale))
    elif longest < GRID_MIN_SIDE:
        k = math.ceil(GRID_MIN_SIDE / longest)
        tw, th = width * k, height * k
    else:
        tw, th = width, height
    cols = min(n_tiles, GRID_COLUMNS)
    rows = math.ceil(n_tiles / cols)
    boxes = [
        (GRID_GAP + (i % cols) * (tw + GRID_GAP), GRID_GAP + (i // cols) * (GRID_BAND + th + GRID_GAP) + GRID_BAND)
        for i in range(n_tiles)
    ]
    size = (cols * tw + (cols + 1) * GRID_GAP, rows * (GRID_BAND + th) + (rows + 1) * GRID_GAP)
    return {"tile": (tw, th), "columns": cols, "rows": rows, "size": size, "boxes": boxes, "band": GRID_BAND}


def write_grid(dest: Path, tiles: Sequence[tuple[str, np.ndarray]], *, overwrite: bool = False) -> tuple[int, int]:
    """One PNG: every (label, H x W x 3 image) as a tile with its label above; returns (width, height)."""
    dest = Path(dest)
    if not tiles:
        raise InvalidInputError("nothing to put in the grid")
    h, w = tiles[0][1].shape[:2]
    if any(img.shape[:2] != (h, w) for _, img in tiles):
        raise InvalidInputError("the grid's images must all have the same size")
    if dest.exists() and not overwrite:
        raise ConflictError(f"{dest} already exists", hint="pass --overwrite to replace it, or choose another -o")
    layout = grid_layout(w, h, len(tiles))
    tw, th = layout["tile"]
    grid = Image.new("RGB", layout["size"], GRID_BACKGROUND)
    draw = ImageDraw.Draw(grid)
    font = _font(14)
    for (label, img), (x, y) in zip(tiles, layout["boxes"]):
        tile = Image.fromarray(to_uint8(img))
        if (tw, th) != (w, h):
            tile = tile.resize((tw, th), Image.Resampling.NEAREST if tw > w else Image.Resampling.LANCZOS)
        grid.paste(tile, (x, y))
        draw.text((x + 2, y - GRID_BAND // 2), _fit(draw, label, font, tw - 4), fill=GRID_INK, font=font, anchor="lm")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(dest) as tmp:
        grid.save(tmp, format="PNG")
    return grid.size


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # scalable with FreeType (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text`, shortened with an ellipsis until it fits in `width` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"
