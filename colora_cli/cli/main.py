"""The `colora` command: one Typer app per command group, built when invoked; errors handled in one place."""

from __future__ import annotations

import functools
import importlib
import os
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from colora import __version__
from colora.cli import output
from colora.cli.commands import COMMANDS, DB_HELP, ROOT_HELP, Entry, short_help
from colora.core.errors import ColoraError
from colora.store.paths import ENV_DB_URL

# Typer's own control flow (help, exit codes, usage errors) must pass through untouched. Newer
# Typer vendors its own click, so take the classes from Typer rather than from `click`.
_CLICK_FLOW = tuple(
    {typer.Exit, typer.Abort, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")}
)


class ColoraGroup(TyperGroup):
    """The root group: builds only the command that is invoked (the table in colora_cli/commands.py),
    and turns domain errors into `Error: ...` + hint and exit code 1, without a traceback."""

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, name: str):
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        return _build(name, entry)

    def format_commands(self, ctx, formatter) -> None:
        """The commands' one-line help from the table, as click would shorten it, without building them."""
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        with formatter.section("Commands"):
            formatter.write_dl([(name, short_help(entry.summary, limit)) for name, entry in COMMANDS.items()])

    def invoke(self, ctx):
        debug = os.environ.get("COLORA_DEBUG") == "1"
        try:
            return super().invoke(ctx)
        except ColoraError as e:
            if debug:
                raise
            output.error(e.message, e.hint)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            if debug:
                raise
            output.error("interrupted")
            raise typer.Exit(130) from None
        except _CLICK_FLOW:
            raise
        except OSError as e:  # the file system said no: which file, and why, in one line
            if debug:
                raise
            where = f": {e.filename}" if e.filename else ""
            output.error(f"{e.strerror or e}{where}", "check the path, its permissions and the free disk space")
            raise typer.Exit(1) from None
        except Exception as e:  # a bug or an environment problem: still one line by default
            if debug:
                raise
            output.error(f"unexpected {type(e).__name__}: {e}", "rerun with COLORA_DEBUG=1 to see the traceback")
            raise typer.Exit(1) from None


@functools.cache
def _build(name: str, entry: Entry):
    """The click command of one table entry: a Typer group as it is, a function as a one-command app."""
    obj = getattr(importlib.import_module(entry.module), entry.attribute)
    if not isinstance(obj, typer.Typer):
        single = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
        single.command(name)(obj)
        obj = single
    return typer.main.get_command(obj)


app = typer.Typer(
    cls=ColoraGroup,
    name="colora",
    help=ROOT_HELP,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        output.out.print(f"colora {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = None,
    db: Annotated[Optional[str], typer.Option("--db", metavar="URL", help=DB_HELP)] = None,
) -> None:
    """One frozen image-restoration backbone, many small LoRA adapters (one per task)."""
    if db:  # every store opened by this command reads it from there (store.paths.db_url)
        os.environ[ENV_DB_URL] = db


def run() -> None:
    app()
