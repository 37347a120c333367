"""The `colora` command: one Typer app per command group, errors handled in one place."""
from __future__ import annotations

import os
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from colora_cli import output
from core.errors import ColoraError

__version__ = "0.1.0"


# Typer's own control flow (help, exit codes, usage errors) must pass through untouched. Newer
# Typer vendors its own click, so take the classes from Typer rather than from `click`.
_CLICK_FLOW = tuple({typer.Exit, typer.Abort, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})


class ColoraGroup(TyperGroup):
    """Turns domain errors into `Error: ...` + hint and exit code 1, without a traceback."""

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
        except Exception as e:  # a bug or an environment problem: still one line by default
            if debug:
                raise
            output.error(f"unexpected {type(e).__name__}: {e}", "rerun with COLORA_DEBUG=1 to see the traceback")
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=ColoraGroup,
    name="colora",
    help="One frozen image-restoration backbone, many small LoRA adapters (one per task).\n\n"
    "Example: colora init && colora task add rain ./pairs && colora train rain && colora eval rain",
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
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Show the version and exit.")] = None,
) -> None:
    """One frozen image-restoration backbone, many small LoRA adapters (one per task)."""


def _register() -> None:
    from colora_cli import (
        cmd_adapter,
        cmd_backbone,
        cmd_compare,
        cmd_doctor,
        cmd_eval,
        cmd_ranks,
        cmd_recycle,
        cmd_restore,
        cmd_store,
        cmd_task,
        cmd_train,
    )

    app.command("init")(cmd_store.init)
    app.command("list")(cmd_store.list_tasks)
    app.add_typer(cmd_task.app, name="task")
    app.add_typer(cmd_backbone.app, name="backbone")
    app.add_typer(cmd_adapter.app, name="adapter")
    app.command("ranks")(cmd_ranks.ranks)
    app.command("train")(cmd_train.train)
    app.command("eval")(cmd_eval.eval_task)
    app.command("adapt")(cmd_recycle.adapt)
    app.add_typer(cmd_recycle.app, name="recycle")
    app.command("restore")(cmd_restore.restore)
    app.command("compare")(cmd_compare.compare)
    app.command("doctor")(cmd_doctor.doctor)


_register()


def run() -> None:
    app()
