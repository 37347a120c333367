"""Output without Rich: the same table box and JSON text, for output that is not a terminal.

Rich costs tens of milliseconds to import and about 0.7 ms a table row to measure; off a
terminal (pipes, logs, scripts) its output has no colour anyway, so these plain renderers
give the same bytes for a fraction of the time (tests/test_startup.py compares them).
"""
from __future__ import annotations

import json
import os
import sys

PIPE_COLUMNS = 160  # piped or captured output gets room for whole rows (Rich would assume 80)
RICH_MAX_ROWS = 200  # above this many rows even a terminal gets the plain table (Rich measures every cell)


def pipe_width() -> int | None:
    """The width Rich is given for data on stdout: None (its own choice) on a terminal or with $COLUMNS."""
    return None if os.environ.get("COLUMNS") or sys.stdout.isatty() else PIPE_COLUMNS


def json_text(data) -> str:
    return json.dumps(data, indent=2) + "\n"


def table(title: str | None, columns: list[str], rows: list[list[str]], justify_numbers: bool = True) -> str:
    """The same box as Rich's default table, drawn with plain string operations."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells, bar):
        parts = [c.ljust(w) if i == 0 or not justify_numbers else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]
        return bar + bar.join(f" {p} " for p in parts) + bar

    def rule(left, mid, right, fill):
        return left + mid.join(fill * (w + 2) for w in widths) + right

    top = rule("┏", "┳", "┓", "━")
    lines = [title.ljust(len(top))] if title else []  # Rich pads a left-justified title to the table's width
    lines += [top, line(columns, "┃"), rule("┡", "╇", "┩", "━")]
    lines += [line(r, "│") for r in rows] + [rule("└", "┴", "┘", "─")]
    return "\n".join(lines) + "\n"
