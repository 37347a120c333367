"""Options shared by several commands."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Home = Annotated[
    Optional[Path],
    typer.Option("--home", envvar="COLORA_HOME", show_envvar=True,
                 help="Store folder. Default: $COLORA_HOME, else the platform's user data dir."),
]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Tile = Annotated[int, typer.Option("--tile", min=0, help="Tile size in pixels for large images (0: whole image at once).")]
MaxPixels = Annotated[Optional[int], typer.Option("--max-pixels", min=1, help="Refuse images with more pixels than this [default: $COLORA_MAX_PIXELS, else 64000000].")]


def task_names(value: str, option: str) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c']; empty items and repeats are refused."""
    from colora.core.errors import InvalidInputError

    names = [n.strip() for n in value.split(",")]
    if not names or any(not n for n in names):
        raise InvalidInputError(f"{option} takes task names separated by commas, got {value!r}",
                                hint=f"for example {option} rain,noise")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(f"{option} lists {', '.join(repeated)} more than once")
    return names


def command_group(help: str) -> typer.Typer:
    """A command group (`colora task ...`) with the root's settings: plain help, no completion commands."""
    return typer.Typer(help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None,
                       pretty_exceptions_enable=False)
