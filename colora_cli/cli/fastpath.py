"""The `colora` entry point, with a fast path for the commands people run most and script most.

`colora --help`, `colora --version` and `colora list [--json] [--home DIR]` are answered here
without importing Typer, pydantic, SQLAlchemy or torch (and, off a terminal, Rich): Python's own
start-up is most of what they cost. Anything else, any unusual argument, any error, and any
output that needs Rich goes to the full Typer app (colora_cli/main.py), which prints exactly
the same (tests/test_startup.py compares the two).
"""

from __future__ import annotations

import os
import sys
import textwrap

from colora import __version__


def run() -> None:
    code = answer(sys.argv[1:])
    if code is not None:
        sys.exit(code)
    from colora.cli.main import app

    app()


def answer(args: list[str]) -> int | None:
    """Exit code when the fast path handled `args`; None for the full app."""
    if args == ["--help"]:
        sys.stdout.write(root_help() + "\n")
        return 0
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


# ---------------------------------------------------------------- `colora --help`, as click draws it


def root_help() -> str:
    from colora.cli.commands import COMMANDS, DB_HELP, ROOT_HELP, short_help

    width = _help_width()
    lines = ["Usage: colora [OPTIONS] COMMAND [ARGS]...", ""]
    for paragraph in ROOT_HELP.split("\n\n"):
        lines += [_fill(paragraph, width, "  "), ""]
    lines += [
        "Options:",
        *_definitions(
            [
                ("--version", "Show the version and exit."),
                ("--db URL", DB_HELP),
                ("--help", "Show this message and exit."),
            ],
            width,
        ),
        "",
    ]
    limit = width - 6 - max(len(name) for name in COMMANDS)
    lines += ["Commands:", *_definitions([(n, short_help(e.summary, limit)) for n, e in COMMANDS.items()], width)]
    return "\n".join(lines)


def _help_width() -> int:
    import shutil

    return max(min(shutil.get_terminal_size().columns, 80) - 2, 50)


def _fill(text: str, width: int, indent: str) -> str:
    return textwrap.fill(
        " ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent, replace_whitespace=False
    )


def _definitions(rows: list[tuple[str, str]], width: int) -> list[str]:
    """click's definition list: names in a column (at most 30 wide), text wrapped beside them."""
    first = min(max(len(name) for name, _ in rows), 30) + 2
    out = []
    for name, text in rows:
        wrapped = textwrap.wrap(text, max(width - first - 2, 10), replace_whitespace=False) or [""]
        if len(name) <= first - 2:
            out.append(f"  {name}{' ' * (first - len(name))}{wrapped[0]}")
        else:
            out += [f"  {name}", f"{' ' * (first + 2)}{wrapped[0]}"]
        out += [f"{' ' * (first + 2)}{line}" for line in wrapped[1:]]
    return out
