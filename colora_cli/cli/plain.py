"""Output without Rich: the same table box and JSON text, for output that is not a terminal.

Rich costs tens of milliseconds to import and about 0.7 ms a table row to measure; off a
terminal (pipes, logs, scripts) its output has no colour anyway, so these plain renderers
give the same bytes for a fraction of the time (tests/test_startup.py compares them).
"""

from __future__ import annotations

import json
import math
import os
import sys

PIPE_COLUMNS = 160  # piped or captured output gets room for whole rows (Rich would assume 80)
RICH_MAX_ROWS = 200  # above this many rows even a terminal gets the plain table (Rich measures every cell)


def pipe_width() -> int | None:
    """The width Rich is given for data on stdout: None (its own choice) on a terminal or with $COLUMNS."""
    return None if os.environ.get("COLUMNS") or sys.stdout.isatty() else PIPE_COLUMNS


# C0 and C1 controls (ESC starts terminal escape sequences), DEL, and the Unicode controls that
# reorder or hide text (bidi overrides and isolates, zero-width joiners, the BOM)
_UNSAFE = {
    *range(0x00, 0x20),
    *range(0x7F, 0xA0),
    *range(0x202A, 0x202F),
    *range(0x2066, 0x206A),
    0x200B,
    0x200C,
    0x200D,
    0x200E,
    0x200F,
    0x2028,
    0x2029,
    0xFEFF,
}  # newlines too: no fake lines


def visible(text: str) -> str:
    """`text` with control characters shown as escapes (\x1b, \u202e): safe on any terminal."""
    if text.isprintable() or all(ord(c) not in _UNSAFE for c in text):
        return text
    return "".join(
        c if ord(c) not in _UNSAFE else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in text
    )


def cells(rows: list[list]) -> list[list[str]]:
    """Table cells as printable text: None as '-', everything else literal and visible."""
    return [["-" if v is None else visible(str(v)) for v in r] for r in rows]


def json_text(data) -> str:
    """Strict JSON: an infinite or undefined number (the PSNR of two identical images) is null."""
    return json.dumps(finite(data), indent=2, allow_nan=False) + "\n"


def finite(data):
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite(v) for v in data]
    return data


def table(title: str | None, columns: list[str], rows: list[list[str]], justify_numbers: bool = True) -> str:
    """The same box as Rich's default table, drawn with plain string operations."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells, bar):
        parts = [
            c.ljust(w) if i == 0 or not justify_numbers else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ]
        return bar + bar.join(f" {p} " for p in parts) + bar

    def rule(left, mid, right, fill):
        return left + mid.join(fill * (w + 2) for w in widths) + right

    top = rule("┏", "┳", "┓", "━")
    lines = [visible(title).ljust(len(top))] if title else []  # Rich pads a left-justified title to the table's width
    lines += [top, line(columns, "┃"), rule("┡", "╇", "┩", "━")]
    lines += [line(r, "│") for r in rows] + [rule("└", "┴", "┘", "─")]
    return "\n".join(lines) + "\n"
