"""The start-up fast path (colora/cli/fastpath.py) prints exactly what the full Typer app prints.

`colora list` is rendered without Rich off a terminal, byte for byte what Typer and Rich print;
`colora --help` is Typer's, drawn from the command table (colora/cli/commands.py) without
importing any command.
"""

from __future__ import annotations

import importlib
import inspect
import io
import os
import subprocess
import sys

import pytest
import typer

from colora.cli import fastpath, plain
from colora.cli.commands import COMMANDS, ROOT_HELP, short_help
from helpers import TINY_INIT, copy_store, invoke, make_pairs, ok


def run(entry: str, *args, columns: str | None = None) -> subprocess.CompletedProcess:
    """A fresh process, stdout piped, as a script would run colora: the fast path (`colora.cli.fastpath`, the
    console script) or the full Typer app (`colora.cli.main`)."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"} | ({"COLUMNS": columns} if columns else {})
    code = f"import sys; sys.argv[0] = 'colora'; from {entry} import run; run()"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_table_summary_is_the_commands_own_help(name):
    entry = COMMANDS[name]
    obj = getattr(importlib.import_module(entry.module), entry.attribute)
    text = obj.info.help if isinstance(obj, typer.Typer) else inspect.getdoc(obj)
    first = text.split("\n\n")[0]
    assert " ".join(entry.summary.split()) == " ".join(first.split())


def test_root_help_text_is_the_apps():
    from colora.cli.main import app

    assert app.info.help == ROOT_HELP


@pytest.mark.parametrize("limit", range(8, 90, 3))
def test_short_help_shortens_like_click(limit):
    from typer._click.utils import make_default_short_help

    texts = [e.summary for e in COMMANDS.values()] + ["One. Two three.", "word " * 30, "A sentence.\n\nMore text."]
    for text in texts:
        assert short_help(text, limit) == make_default_short_help(text, limit)


@pytest.fixture
def listed_home(trained_store, tmp_path):
    """The trained store plus a task without an adapter."""
    home = copy_store(trained_store.home, tmp_path / "home")
    ok(invoke("task", "add", "second", make_pairs(tmp_path / "p2", n=3, seed=3), "--home", home))
    return home


@pytest.mark.parametrize("flags", [[], ["--json"]], ids=["table", "json"])
def test_fast_list_is_the_full_apps(listed_home, flags):
    fast = run("colora.cli.fastpath", "list", *flags, "--home", listed_home)
    full = run("colora.cli.main", "list", *flags, "--home", listed_home)
    assert fast.returncode == full.returncode == 0 and "second" in fast.stdout
    assert (fast.stdout, fast.stderr) == (full.stdout, full.stderr)


def test_fast_list_of_an_empty_store_notes_it(tmp_path):
    home = tmp_path / "home"
    ok(invoke(*TINY_INIT, "--home", home))
    assert fastpath.answer(["list", f"--home={home}"]) == 0
    fast, full = run("colora.cli.fastpath", "list", "--home", home), run("colora.cli.main", "list", "--home", home)
    assert fast.stdout == full.stdout == "" and fast.stderr == full.stderr and "No tasks yet" in fast.stderr


@pytest.mark.parametrize("args", [["list", "--colour"], ["list", "--home"], ["task", "show", "x"], ["--help", "x"], []])
def test_anything_else_goes_to_the_full_app(args):
    assert fastpath.answer(args) is None


def test_fast_list_leaves_errors_to_the_full_app(tmp_path):
    assert fastpath.answer(["list", "--home", str(tmp_path / "nowhere")]) is None


def test_plain_table_is_richs_box():
    from rich.console import Console
    from rich.table import Table

    columns, rows = ["task", "size", "PSNR"], [["a", "1.2 KB", "-"], ["rain-heavy", "500.0 KB", "27.123"]]
    buf = io.StringIO()
    table = Table(title="t", title_justify="left", header_style="bold")
    for i, c in enumerate(columns):
        table.add_column(c, justify="right" if i else "left", no_wrap=i == 0)
    for r in rows:
        table.add_row(*r)
    Console(file=buf, width=160).print(table)
    assert plain.table("t", columns, rows) == buf.getvalue()


def test_console_script_answers_help_and_version():
    for args, expected in ((["--version"], "colora "), (["--help"], "Usage: colora [OPTIONS] COMMAND")):
        p = subprocess.run([sys.executable, "-m", "colora", *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0 and p.stdout.startswith(expected), p.stdout + p.stderr
