"""The `colora` entry point, with a fast path for the data commands people script most.

`colora --version` and `colora list [--json] [--home DIR]` are answered here without importing
Typer, pydantic, SQLAlchemy or torch (and, off a terminal, Rich): Python's own start-up is most of
what they cost. Anything else, `--help` included (Typer draws it: about 90 ms more, BENCHMARKS.md),
any unusual argument, any error, and any output that needs Rich goes to the full Typer app
(colora.cli.main), which prints exactly the same (tests/test_startup.py compares the two).
"""

from __future__ import annotations

import os
import sys

from colora import __version__


def run() -> None:
    code = answer(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from colora.cli.main import app

    app(prog_name="colora")


def answer(args: list[str]) -> int | None:
    """Exit code when the fast path handled `args`; None for the full app."""
    if args == ["--version"]:
        sys.stdout.write(f"colora {__version__}\n")
        return 0
    if args[:1] == ["list"]:
        return _list(args[1:])
    return None


def _list(args: list[str]) -> int | None:
    as_json, home, rest = False, None, list(args)
    while rest:
        a = rest.pop(0)
        if a == "--json":
            as_json = True
        elif a == "--home" and rest and rest[0] and not rest[0].startswith("-"):
            home = rest.pop(0)
        elif a.startswith("--home=") and len(a) > len("--home="):
            home = a[len("--home=") :]
        else:
            return None
    try:
        from colora.store.summary import store_rows

        rows = store_rows(home or None)
    except Exception:  # noqa: BLE001 - errors are the full app's to explain
        return None
    text = _plain_listing(rows, as_json)
    if text is None:
        return None
    (sys.stdout if rows or as_json else sys.stderr).write(text)
    return 0


def _plain_listing(rows: list[dict], as_json: bool) -> str | None:
    """The listing as Rich would print it off a terminal; None where only Rich can (a terminal,
    wide or non-ASCII cells)."""
    from colora.cli import listing, plain

    stream = sys.stdout if rows or as_json else sys.stderr
    if stream.isatty():
        return None
    if as_json:
        return plain.json_text(rows)
    if not rows:
        return listing.EMPTY_NOTE + "\n"
    cells = plain.cells(listing.cells(rows))
    text = plain.table(None, listing.COLUMNS, cells)
    width = int(os.environ.get("COLUMNS") or 0) or plain.PIPE_COLUMNS
    if any(not c.isascii() for r in cells for c in r):
        return None  # wide characters: Rich measures cells, not characters
    if len(rows) <= plain.RICH_MAX_ROWS and max(len(line) for line in text.splitlines()) > width:
        return None  # Rich would wrap the cells to fit
    return text
