"""Printing: data on stdout, progress, logs and errors on stderr.

Text that did not come from colora's own code (file and folder names, metadata of imported
files, anything read from disk) is printed literally: never parsed as Rich markup, and with
control characters shown as escapes (`plain.visible`), so a name cannot restyle, clear or
retitle the terminal.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.table import Table
from rich.text import Text

from colora.cli import plain
from colora.core.text import human_bytes, human_count  # noqa: F401  (the commands print through output.*)

_PIPE_WIDTH = plain.pipe_width()

out = Console(soft_wrap=True, width=_PIPE_WIDTH)  # data: tables, JSON
err = Console(stderr=True, soft_wrap=True)  # progress, notes, errors


def note(message: str) -> None:
    err.print(Text(plain.visible(message)), highlight=False)


def recoveries(recovered: list, skipped: int = 0) -> None:
    """One line per divergence training came back from (core.training.guard.Recovery), one for
    the steps it skipped as outliers."""
    if skipped:
        note(f"Skipped the update of {skipped} step(s) whose loss was far above the recent ones.")
    for r in recovered:
        note(
            f"Training diverged at step {r.step}: went back to step {r.back_to} and went on at "
            f"{r.lr_scale:g}x the learning rate (a lower --lr avoids this)."
        )


def error(message: str, hint: str | None = None) -> None:
    err.print(Text.assemble(("Error:", "bold red"), " ", plain.visible(message)), highlight=False)
    if hint:
        err.print(Text.assemble(("Hint:", "dim"), " ", plain.visible(hint)), highlight=False)


def print_json(data) -> None:
    """Highlighted on a terminal; plain (and fast: Rich's highlighter costs ~1 ms a line) elsewhere."""
    if out.is_terminal:
        out.print_json(json.dumps(plain.finite(data), indent=2, allow_nan=False), ensure_ascii=True)  # escapes kept
    else:
        out.file.write(plain.json_text(data))


def table(title: str | None, columns: list[str], rows: list[list], justify_numbers: bool = True) -> None:
    if len(rows) > plain.RICH_MAX_ROWS:
        out.file.write(plain.table(title, columns, plain.cells(rows), justify_numbers))
        return
    t = Table(title=Text(plain.visible(title)) if title else None, title_justify="left", header_style="bold")
    for i, c in enumerate(columns):
        t.add_column(c, justify="right" if justify_numbers and i > 0 else "left", no_wrap=i == 0)
    for r in plain.cells(rows):
        t.add_row(*[Text(c) for c in r])
    out.print(t)


@contextmanager
def progress(description: str, total: int, *, loss: bool = False) -> Iterator:
    """A progress bar on stderr; yields `update(completed, loss=None)`.

    When stderr is not a terminal (logs, CI), a plain line every ~10 % replaces the bar.
    """
    if not err.is_terminal:
        yield _plain_progress(description, total)
        return
    # imported here: rich.progress is the slowest part of Rich to import, and `list` never needs it
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:.2f} it/s" if speed else "-- it/s", style="cyan")

    columns = [TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn()]
    if loss:
        columns.append(TextColumn("loss {task.fields[loss]}"))
    columns += [RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=err, transient=False) as p:
        task = p.add_task(plain.visible(description), total=total, loss="-")

        def update(completed: int, loss_value: float | None = None) -> None:
            fields = {"loss": f"{loss_value:.4f}"} if loss_value is not None else {}
            p.update(task, completed=completed, **fields)

        yield update


def _plain_progress(description: str, total: int):
    import time

    start, last = time.perf_counter(), [0]

    def update(completed: int, loss_value: float | None = None) -> None:
        if completed * 10 // max(total, 1) > last[0] * 10 // max(total, 1) or completed == total:
            elapsed = time.perf_counter() - start
            rate = completed / elapsed if elapsed > 0 else 0.0
            loss_text = f" loss {loss_value:.4f}" if loss_value is not None else ""
            note(f"{description}: {completed}/{total}{loss_text} ({rate:.2f} it/s, {elapsed:.0f} s)")
        last[0] = completed

    return update


class ConsoleReporter:
    """The use-case layer's Reporter (colora.api.progress) on the terminal: notes and progress on stderr."""

    def note(self, message: str) -> None:
        note(message)

    def progress(self, description: str, total: int, *, loss: bool = False):
        return progress(description, total, loss=loss)


REPORTER = ConsoleReporter()
