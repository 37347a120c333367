"""Options shared by several commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from colora.core.choices import BACKBONE_SIZES, DEVICES, MIN_TILE


def choice(values: tuple[str, ...]):
    """The type of an option with a fixed list of values (colora.core.choices): Typer shows them in
    --help, offers them to shell completion and refuses others; the value stays a plain str."""
    return Literal[values]


Home = Annotated[
    Optional[Path],
    typer.Option(
        "--home",
        envvar="COLORA_HOME",
        show_envvar=True,
        help="Store folder. Default: $COLORA_HOME, else the platform's user data dir.",
    ),
]
Device = Annotated[choice(DEVICES), typer.Option("--device", help="Where to compute (auto: a GPU if there is one).")]
Size = Annotated[choice(BACKBONE_SIZES), typer.Option("--config", help="Backbone size.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Tile = Annotated[
    int,
    typer.Option(
        "--tile",
        min=0,
        help=f"Tile size in pixels for large images: 0 (the whole image at once) or at least {MIN_TILE}.",
    ),
]
MaxPixels = Annotated[
    Optional[int],
    typer.Option(
        "--max-pixels",
        min=1,
        help="Refuse images with more pixels than this [default: $COLORA_MAX_PIXELS, else 64000000].",
    ),
]


def task_names(value: str, option: str) -> list[str]:
    """'a,b, c' -> ['a', 'b', 'c']; empty items and repeats are refused."""
    from colora.core.errors import InvalidInputError

    names = [n.strip() for n in value.split(",")]
    if not names or any(not n for n in names):
        raise InvalidInputError(
            f"{option} takes task names separated by commas, got {value!r}", hint=f"for example {option} rain,noise"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInputError(f"{option} lists {', '.join(repeated)} more than once")
    return names


def command_group(help: str) -> typer.Typer:
    """A command group (`colora task ...`) with the root's settings: plain help, no completion commands."""
    return typer.Typer(
        help=help, no_args_is_help=True, add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False
    )
